"""Structured events into the run's journal; the host tags each with the run ID and attempt
and bounds the bytes a run may log. `log.info("validated", invoice_id=id, total_cents=n)`:
field values are stringified (strings as is, other values as JSON)."""

from wit_world.imports import log as _wit

from .jsontext import field_text
from .jsontext import wire_text as text

__all__ = ["LEVELS", "event", "trace", "debug", "info", "warn", "error"]

LEVELS = ("trace", "debug", "info", "warn", "error")


def event(level, message, fields=()):
    """Record `message` at `level` (one of LEVELS) with `(key, value)` fields, in order."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    pairs = [(text(str(key)), text(field_text(value))) for key, value in fields]
    _wit.event(_wit.Level[level.upper()], text(str(message)), pairs)


def trace(message, /, **fields):
    event("trace", message, fields.items())


def debug(message, /, **fields):
    event("debug", message, fields.items())


def info(message, /, **fields):
    event("info", message, fields.items())


def warn(message, /, **fields):
    event("warn", message, fields.items())


def error(message, /, **fields):
    event("error", message, fields.items())
