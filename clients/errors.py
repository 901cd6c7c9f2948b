"""One exception tree for the SDK, with one root: ``GeoplexError``.

``GeoplexRpcError`` (a call failed, decoded from the server's rich status) carries the
status code, message, ``ErrorInfo.reason`` / ``domain`` / ``metadata``, the offending
field for bad requests, and the request id the server logged the call under.
``SessionClosedError`` is raised by the SDK itself: a live session was used after it
was closed or after its stream ended for good.
"""

from __future__ import annotations

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"
_REQUEST_ID_KEY = "x-request-id"


class GeoplexError(Exception):
    """The root of every exception the SDK raises."""


class SessionClosedError(GeoplexError):
    """A live session was sent to or read from after ``close()``, or after its stream ended
    for good (then ``__cause__`` is the error that ended it)."""


class GeoplexRpcError(GeoplexError):
    """A call failed; ``code`` is the gRPC status code, ``reason`` the machine-readable why."""

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "",
                 domain: str = "", metadata: dict[str, str] | None = None,
                 field: str = "", request_id: str = "") -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}
        self.field = field
        self.request_id = request_id


class InvalidArgumentError(GeoplexRpcError):
    pass


class NotFoundError(GeoplexRpcError):
    pass


class AlreadyExistsError(GeoplexRpcError):
    pass


class UnauthenticatedError(GeoplexRpcError):
    pass


class PermissionDeniedError(GeoplexRpcError):
    pass


class UnavailableError(GeoplexRpcError):
    pass


class FailedPreconditionError(GeoplexRpcError):
    pass


class DeadlineExceededError(GeoplexRpcError):
    pass


class ResourceExhaustedError(GeoplexRpcError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[GeoplexRpcError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> GeoplexRpcError:
    code = error.code()
    reason = domain = field = request_id = ""
    metadata: dict[str, str] = {}
    for key, value in error.trailing_metadata() or ():
        if key == _REQUEST_ID_KEY and isinstance(value, str):
            request_id = value
        elif key == _DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(info):  # False (and nothing read) when it is another type
                    reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
                elif detail.Unpack(bad) and bad.field_violations:
                    field = bad.field_violations[0].field
    cls = _BY_CODE.get(code, GeoplexRpcError)
    return cls(code, error.details() or "", reason=reason, domain=domain, metadata=metadata,
               field=field or metadata.get("field", ""), request_id=request_id)
