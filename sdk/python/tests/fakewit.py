"""Stand-ins for componentize-py's generated `wit_world` and `componentize_py_types`, with
the same shapes, so the binding glue runs on the host. Host imports record their calls and
answer from `FakeHost`."""

import sys
import types as pytypes
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Optional, TypeVar

E = TypeVar("E")


@dataclass(frozen=True)
class Err(Generic[E], Exception):
    value: E


class ErrorClass(Enum):
    TRANSIENT = 0
    VALIDATION = 1
    PERMISSION = 2
    TIMEOUT = 3
    CONFLICT = 4
    FATAL = 5


@dataclass
class ToolError:
    class_: ErrorClass
    message: str
    details: Optional[str]


@dataclass
class RunContext:
    run_id: str
    attempt: int
    tool: str
    deadline_ms: int


@dataclass
class Descriptor:
    name: str
    version: str
    description: str
    input_schema: str
    effects: list
    capabilities: list


@dataclass
class Outcome:
    body: str
    replayed: bool
    dispatches: int


@dataclass
class Checkpoint:
    name: str
    state: bytes
    attempt: int


class Level(Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


class FakeHost:
    """What the host imports do: perform returns `outcome` or raises `Err(error)`."""

    def __init__(self):
        self.performed, self.saved, self.events = [], {}, []
        self.outcome = Outcome('{"id":"erp-1"}', False, 1)
        self.error = None

    def perform(self, kind, key, payload):
        self.performed.append((kind, key, payload))
        if self.error is not None:
            raise Err(self.error)
        return self.outcome

    def save(self, name, state):
        self.saved[name] = Checkpoint(name, state, 1)

    def get(self, name):
        return self.saved.get(name)

    def latest(self):
        return list(self.saved.values())[-1] if self.saved else None

    def event(self, level, message, fields):
        self.events.append((level, message, fields))


HOST = FakeHost()


def install():
    """Register the fake modules (idempotent) and return a fresh FakeHost behind them."""
    global HOST
    HOST = FakeHost()
    if "wit_world" not in sys.modules:
        modules = {name: pytypes.ModuleType(name) for name in (
            "componentize_py_types", "wit_world", "wit_world.imports", "wit_world.imports.types",
            "wit_world.imports.effects", "wit_world.imports.checkpoints", "wit_world.imports.log")}
        modules["componentize_py_types"].Err = Err
        modules["wit_world"].WitWorld = type("WitWorld", (), {})
        for name, value in dict(ErrorClass=ErrorClass, ToolError=ToolError, RunContext=RunContext,
                                Descriptor=Descriptor).items():
            setattr(modules["wit_world.imports.types"], name, value)
        modules["wit_world.imports.effects"].perform = lambda *a: HOST.perform(*a)
        checkpoints = modules["wit_world.imports.checkpoints"]
        checkpoints.save = lambda *a: HOST.save(*a)
        checkpoints.get = lambda *a: HOST.get(*a)
        checkpoints.latest = lambda: HOST.latest()
        modules["wit_world.imports.log"].Level = Level
        modules["wit_world.imports.log"].event = lambda *a: HOST.event(*a)
        sys.modules.update(modules)
    return HOST
