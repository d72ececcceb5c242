"""`Tool`: what a tool is (its descriptor) and the glue from JSON input to JSON output.
Invariant: whatever the run function does, the host gets JSON text or a classified error,
never a trap. Bad input JSON is `validation`; anything unexpected is `fatal`."""

from . import jsontext
from .errors import ToolError

__all__ = ["Tool"]


class Tool:
    """A Tollgate tool. Register its run function with `@tool.run` and export
    `WitWorld = tool.world()` from the app module (componentize-py looks that name up)."""

    def __init__(self, name, version, description, input_schema, effects=(), capabilities=()):
        self.name = name
        self.version = version
        self.description = description
        # Serialized now so that a bad schema fails at build time, when componentize-py runs
        # the module, rather than at `describe`.
        self.input_schema = (input_schema if isinstance(input_schema, str)
                             else jsontext.dumps(input_schema))
        self.effects = tuple(effects)
        self.capabilities = tuple(capabilities)
        self._run = None

    def run(self, function):
        """Decorator: `function(ctx, input)` gets the parsed input and returns a JSON-able value."""
        self._run = function
        return function

    def handle(self, ctx, input_text):
        """Run on JSON text; returns JSON text or raises ToolError (unexpected exceptions
        become `fatal` with the original as `__cause__`). Callable without the bindings."""
        if self._run is None:
            raise ToolError.fatal(f"tool `{self.name}` has no @run function")
        try:
            value = jsontext.loads(input_text, unique_keys=True)
        except ValueError as error:
            raise ToolError.validation(f"input: {error}") from None
        try:
            output = self._run(ctx, value)
        except ToolError:
            raise
        except BaseException as error:  # noqa: B036 - a tool must answer, not trap
            raise ToolError.fatal(unhandled_message(error)) from error
        try:
            return jsontext.dumps(output)
        except (TypeError, ValueError, RecursionError) as error:
            raise ToolError.fatal(f"output: {error}") from None

    def world(self):
        """The `WitWorld` class implementing the component's exports for this tool."""
        from .bindings import world_for  # deferred: only a component has the bindings

        return world_for(self)


def unhandled_message(error):
    """`unhandled ValueError: <message>`: the one line a fatal error carries."""
    text = str(error)
    return f"unhandled {type(error).__name__}: {text}" if text else f"unhandled {type(error).__name__}"
