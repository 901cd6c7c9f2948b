"""The one mapping from domain errors to gRPC status with ``google.rpc`` details.

A :class:`GeoplexError` becomes its canonical code, its message, a
``google.rpc.ErrorInfo`` (reason, domain, metadata) and, for a bad request, a
``google.rpc.BadRequest`` naming the field.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .errors import GeoplexError, InvalidArgument

DOMAIN = "geoplex.dev"


def _details(error: GeoplexError) -> list[any_pb2.Any]:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN,
                                          metadata=error.metadata))
    details = [info]
    if isinstance(error, InvalidArgument):
        bad = any_pb2.Any()
        bad.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=error.field,
                                                        description=error.description)]))
        details.append(bad)
    return details


def to_status(error: GeoplexError) -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(
        code=getattr(code_pb2, error.code), message=error.message, details=_details(error)))


INTERNAL_STATUS = rpc_status.to_status(status_pb2.Status(
    code=code_pb2.INTERNAL, message="internal error; the server logged the details",
    details=[]))
