"""The records host calls return, with their JSON views. A body or state that does not parse
is `fatal`: retrying reads the same recorded bytes."""

from dataclasses import dataclass

from . import jsontext
from .errors import ToolError

__all__ = ["Outcome", "Checkpoint"]


@dataclass(frozen=True)
class Outcome:
    """The recorded result of an effect."""

    body: str
    """The downstream response body (JSON text when the connector returned JSON)."""
    replayed: bool
    """True when the outcome was already recorded and nothing was dispatched this time."""
    dispatches: int
    """How many times the host has dispatched this key downstream, over all runs."""

    def json(self):
        """The body parsed as JSON; `fatal` when it is not JSON."""
        try:
            return jsontext.loads(self.body)
        except ValueError as error:
            raise ToolError.fatal(f"effect outcome: {error}") from None

    def body_value(self):
        """The body parsed as JSON when it is JSON, else the body itself as a string."""
        try:
            return jsontext.loads(self.body)
        except ValueError:
            return self.body


@dataclass(frozen=True)
class Checkpoint:
    """A saved checkpoint as the host returns it."""

    name: str
    state: bytes
    attempt: int
    """The attempt that saved it."""

    def json(self):
        """The state parsed as UTF-8 JSON; `fatal` when it is not."""
        try:
            return jsontext.loads(self.state.decode("utf-8"))
        except ValueError as error:  # UnicodeDecodeError is a ValueError too
            raise ToolError.fatal(f"checkpoint `{self.name}`: {error}") from None
