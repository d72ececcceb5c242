"""What a tool knows about the attempt it runs in: the host's `run-context`, read-only."""

import time
from dataclasses import dataclass

__all__ = ["Context"]


@dataclass(frozen=True)
class Context:
    """The run and attempt a tool executes in. Build one yourself to unit-test a run function."""

    run_id: str
    """Stable across retries and resumes of the run; it also reaches downstream systems."""
    attempt: int
    """1 for the first attempt; each retry or resume adds one."""
    tool: str
    """The tool's name, as `describe` reported it."""
    deadline_ms: int
    """Wall-clock deadline in ms since the Unix epoch; the host interrupts the tool after it."""

    def remaining(self) -> float:
        """Seconds left before the deadline, 0.0 once it has passed."""
        return max(0.0, self.deadline_ms / 1000 - time.time())
