"""Domain errors and their one mapping to gRPC status with ``google.rpc`` details.

The domain raises these; the error interceptor turns them into a canonical
status code, a message, a ``google.rpc.ErrorInfo`` (reason, domain, metadata)
and, for bad requests, a ``google.rpc.BadRequest`` naming the field.
Messages must never contain a user's location.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "geoplex.dev"


class GeoplexError(Exception):
    """Root of every error a Geoplex service raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN,
                                              metadata=self.metadata))
        return [info]

    def to_status(self) -> grpc.Status:
        proto = status_pb2.Status(code=getattr(code_pb2, self.code.name), message=self.message,
                                  details=self.details())
        return rpc_status.to_status(proto)


class InvalidArgument(GeoplexError):
    """A request field is malformed; nothing was changed."""

    code = grpc.StatusCode.INVALID_ARGUMENT
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

    def details(self) -> list[any_pb2.Any]:
        bad = any_pb2.Any()
        bad.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=self.field,
                                                        description=self.description)]))
        return [*super().details(), bad]


class NotFound(GeoplexError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(GeoplexError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class Unauthenticated(GeoplexError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(GeoplexError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class FailedPrecondition(GeoplexError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhausted(GeoplexError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(GeoplexError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


INTERNAL_STATUS = rpc_status.to_status(status_pb2.Status(
    code=code_pb2.INTERNAL, message="internal error; the server logged the details",
    details=[]))
