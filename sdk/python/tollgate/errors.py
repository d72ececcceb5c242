"""The classified failure a tool returns and host calls raise. The class, not the message,
decides what the host does next (retry, fail, escalate), so every constructor names one."""

from . import jsontext

__all__ = ["CLASSES", "ToolError"]

#: The WIT `error-class` cases, in declaration order.
CLASSES = ("transient", "validation", "permission", "timeout", "conflict", "fatal")


class ToolError(Exception):
    """A classified failure: `raise ToolError.validation("...", details={...})`.

    `details` is any JSON-able value; it travels to the host as JSON text, serialized here so
    that a bad value fails where it is raised.
    """

    def __init__(self, cls, message, details=None):
        if cls not in CLASSES:
            raise ValueError(f"unknown error class {cls!r}; expected one of {', '.join(CLASSES)}")
        super().__init__(f"{cls}: {message}")
        self.cls = cls
        self.message = str(message)
        self.details = details
        self.details_json = None if details is None else jsontext.dumps(details)

    def __repr__(self):
        return f"ToolError({self.cls!r}, {self.message!r}, details={self.details!r})"

    @classmethod
    def from_wire(cls, error_class, message, details_json):
        """Rebuild an error the host sent. Details that are not JSON (a host should never send
        them) are kept as a string rather than dropped."""
        if details_json is None:
            details = None
        else:
            try:
                details = jsontext.loads(details_json)
            except ValueError:
                details = details_json
        return cls(error_class, message, details)

    @classmethod
    def transient(cls, message, details=None):
        """Worth retrying: a dependency was briefly unavailable or overloaded."""
        return cls("transient", message, details)

    @classmethod
    def validation(cls, message, details=None):
        """The input or payload is wrong; retrying the same request fails the same way."""
        return cls("validation", message, details)

    @classmethod
    def permission(cls, message, details=None):
        """A policy denied the request; an operator must grant it."""
        return cls("permission", message, details)

    @classmethod
    def timeout(cls, message, details=None):
        """A deadline passed before the work finished."""
        return cls("timeout", message, details)

    @classmethod
    def conflict(cls, message, details=None):
        """The request collides with other work (an idempotency key reused or held elsewhere)."""
        return cls("conflict", message, details)

    @classmethod
    def fatal(cls, message, details=None):
        """Anything else that must not be retried automatically."""
        return cls("fatal", message, details)
