"""Write Tollgate tools in Python (built into components with componentize-py).

    from tollgate import Tool, ToolError, checkpoint, effects, log

`effects`, `checkpoint` and `log` call the host, so they load only inside a component; the
rest (Tool, Context, ToolError, Outcome, Checkpoint) is plain Python and unit-testable anywhere.
"""

import importlib

from .context import Context
from .errors import CLASSES, ToolError
from .records import Checkpoint, Outcome
from .tool import Tool

__all__ = ["Tool", "Context", "ToolError", "CLASSES", "Outcome", "Checkpoint",
           "effects", "checkpoint", "log"]

_HOST_MODULES = ("effects", "checkpoint", "log", "bindings")


def __getattr__(name):
    # `tollgate.effects` etc. import the generated bindings; load them on first use only.
    if name in _HOST_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
