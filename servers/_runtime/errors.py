"""Domain errors: what went wrong, in terms the domain knows.

Pure Python, so domain modules can raise them without importing gRPC. Each
carries the canonical status *name* it maps to, a machine-readable reason and
metadata; :mod:`.status` turns them into a gRPC status with ``google.rpc``
details, once, in the interceptor. Messages must never contain a user's location.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class GeoplexError(Exception):
    """Root of every error a Geoplex service raises on purpose."""

    code = "UNKNOWN"  # a google.rpc.Code name
    default_reason = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(GeoplexError):
    """A request field is malformed; nothing was changed."""

    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *, reason: str | None = None,
                 allowed: Sequence[object] | None = None) -> None:
        message = f"{field}: {description}"
        metadata = {"field": field}
        if allowed is not None:
            message += f" (allowed: {', '.join(str(a) for a in allowed)})"
            metadata["allowed"] = ",".join(str(a) for a in allowed)
        super().__init__(message, reason=reason, metadata=metadata)
        self.field = field
        self.description = description


class NotFound(GeoplexError):
    code = default_reason = "NOT_FOUND"


class AlreadyExists(GeoplexError):
    code = default_reason = "ALREADY_EXISTS"


class Unauthenticated(GeoplexError):
    code = default_reason = "UNAUTHENTICATED"


class PermissionDenied(GeoplexError):
    code = default_reason = "PERMISSION_DENIED"


class FailedPrecondition(GeoplexError):
    code = default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(GeoplexError):
    code = default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(GeoplexError):
    code = default_reason = "UNAVAILABLE"


class OutOfRange(GeoplexError):
    """A position (an offset, a page) outside what exists; the metadata says the range."""

    code = default_reason = "OUT_OF_RANGE"


class DataLoss(GeoplexError):
    """Stored data failed its integrity check; it is reported, never served."""

    code = default_reason = "DATA_LOSS"


class Aborted(GeoplexError):
    """A concurrent change won; retrying the whole operation may succeed."""

    code = default_reason = "ABORTED"
