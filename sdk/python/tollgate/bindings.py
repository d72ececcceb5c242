"""The only module that touches componentize-py's generated bindings (`wit_world`,
`componentize_py_types`): conversions between them and the SDK's types, and the exported
`WitWorld` class. Everything else in the package is plain Python."""

import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

from . import log
from .context import Context
from .errors import ToolError
from .jsontext import wire_text as text

__all__ = ["call", "text", "to_wit", "from_wit", "world_for"]


def to_wit(error: ToolError) -> "types.ToolError":
    details = None if error.details_json is None else text(error.details_json)
    return types.ToolError(class_=types.ErrorClass[error.cls.upper()], message=text(error.message),
                           details=details)


def from_wit(error: "types.ToolError") -> ToolError:
    return ToolError.from_wire(error.class_.name.lower(), error.message, error.details)


def call(function, *args):
    """Call a host import; its `Err(tool-error)` surfaces as ToolError, unchanged. A string
    argument that is not valid UTF-8 is refused here, as `validation`, instead of trapping."""
    for arg in args:
        if isinstance(arg, str) and text(arg) != arg:
            raise ToolError.validation(
                f"{function.__name__}: {arg[:80]!a} is not valid UTF-8 (a lone surrogate)")
    try:
        return function(*args)
    except Err as err:
        raise from_wit(err.value) from None


def world_for(tool):
    """A `WitWorld` class exporting `tool`'s `describe` and `run`."""

    class WitWorld(wit_world.WitWorld):
        def describe(self):
            return types.Descriptor(
                name=tool.name,
                version=tool.version,
                description=tool.description,
                input_schema=tool.input_schema,
                effects=list(tool.effects),
                capabilities=list(tool.capabilities),
            )

        def run(self, ctx, input):
            context = Context(ctx.run_id, ctx.attempt, ctx.tool, ctx.deadline_ms)
            try:
                return tool.handle(context, input)
            except ToolError as error:
                if error.__cause__ is not None:  # an unhandled exception: keep its traceback
                    _log_traceback(error.__cause__)
                raise Err(to_wit(error)) from None

    return WitWorld


def _log_traceback(error):
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    log.error("unhandled exception", traceback="".join(lines)[-4000:])
