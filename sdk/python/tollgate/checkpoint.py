"""Checkpoints: durable progress markers. A retried or resumed run sees what its earlier
attempts saved, so it can continue instead of starting over. State is UTF-8 JSON bytes, as
the Rust SDK stores it, so tools in either language read each other's checkpoints."""

from wit_world.imports import checkpoints as _wit

from . import jsontext
from .bindings import call
from .errors import ToolError
from .records import Checkpoint

__all__ = ["save", "save_raw", "load", "get", "latest", "Checkpoint"]


def save(name, state):
    """Save JSON-able `state` under `name`; durable when this returns. The host refuses state
    over its size cap with `validation`; unserializable state is `fatal`."""
    try:
        data = jsontext.dumps(state).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as error:
        raise ToolError.fatal(f"checkpoint `{name}`: {error}") from None
    save_raw(name, data)


def save_raw(name, state: bytes):
    """Save raw bytes under `name`."""
    call(_wit.save, name, bytes(state))


def load(name):
    """The latest state saved as `name`, parsed from JSON; None when this run has none."""
    checkpoint = get(name)
    return None if checkpoint is None else checkpoint.json()


def get(name):
    """The latest checkpoint named `name` as a Checkpoint (raw bytes), or None."""
    return _record(_wit.get(name))


def latest():
    """The most recently saved checkpoint of this run, whatever its name, or None."""
    return _record(_wit.latest())


def _record(checkpoint):
    if checkpoint is None:
        return None
    return Checkpoint(checkpoint.name, bytes(checkpoint.state), checkpoint.attempt)
