"""Effects: the only way a tool changes the outside world, exactly once per kind and key.

The host records the intent (kind, key, payload digest) before dispatching and the outcome
before returning; performing the same kind and key again returns the recorded outcome. Choose
the key from the business intent (`post-invoice:INV-42`), never from anything that changes
between attempts, and send the same payload bytes on every attempt.
"""

from wit_world.imports import effects as _wit

from . import jsontext
from .bindings import call
from .errors import ToolError
from .records import Outcome

__all__ = ["perform", "Outcome"]


def perform(kind, key, payload) -> Outcome:
    """Perform effect `kind` under idempotency `key`.

    `payload` is a JSON-able value, serialized like serde_json (compact, dict order kept), or
    a `str` that is already JSON text and is sent as is. The same key with different bytes is
    a `conflict`. Host errors are raised unchanged as ToolError; an unserializable payload is
    `fatal`.
    """
    if not isinstance(payload, str):
        try:
            payload = jsontext.dumps(payload)
        except (TypeError, ValueError, RecursionError) as error:
            raise ToolError.fatal(f"effect `{kind}` payload: {error}") from None
    outcome = call(_wit.perform, kind, key, payload)
    return Outcome(outcome.body, outcome.replayed, outcome.dispatches)
