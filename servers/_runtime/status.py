"""The one mapping from domain errors to gRPC status with ``google.rpc`` details.

A :class:`GeoplexError` becomes its canonical code, its message, a
``google.rpc.ErrorInfo`` (reason, domain, metadata) and, for a bad request, a
``google.rpc.BadRequest`` naming the field.

What an error echoes is bounded here, whatever the service put in it: a client
refuses trailers over 8 KiB (``RESOURCE_EXHAUSTED: received metadata size exceeds
soft limit``), and an error that echoes a 5,000-character id three times (message,
``ErrorInfo`` metadata, ``BadRequest``) would otherwise reach the client as that
instead of its own code. Each echoed value is clipped to :data:`MAX_ECHO_BYTES` (an
ellipsis and the original length mark the cut), the message to
:data:`MAX_MESSAGE_BYTES`, and the whole serialized ``google.rpc.Status`` to
:data:`MAX_DETAILS_BYTES` (metadata entries are dropped, last first, until it fits).
The trailers then stay under 4 KiB: grpc-message is at most 3x its bytes
percent-encoded, the details 4/3 base64-encoded, the request id at most 128.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .errors import GeoplexError, InvalidArgument

DOMAIN = "geoplex.dev"

MAX_ECHO_BYTES = 128  # one echoed value: a metadata key or value, a field, a reason
MAX_DESCRIPTION_BYTES = 256  # a BadRequest field violation's description
MAX_MESSAGE_BYTES = 320  # the status message (sent twice: grpc-message and in the details)
MAX_DETAILS_BYTES = 1536  # the serialized google.rpc.Status, base64-encoded in the trailers
_MAX_METADATA_ENTRIES = 16
_ELLIPSIS = "\u2026"
# a word long enough that it may be over MAX_ECHO_BYTES (4-byte characters): clip() decides
_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_ECHO_BYTES // 4 + 1))


def clip(text: str, limit: int = MAX_ECHO_BYTES) -> str:
    """``text`` if it fits in ``limit`` UTF-8 bytes, else its start, an ellipsis and its
    original length in characters (``'xxxx… (5000 chars)'``), all within ``limit`` bytes."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    suffix = f"{_ELLIPSIS} ({len(text)} chars)"
    room = max(limit - len(suffix.encode()), 0)
    # "ignore" drops a character cut in half at the end of the slice
    return encoded[:room].decode("utf-8", "ignore") + suffix


def _bounded_text(text: str, echoed: Iterable[str], limit: int) -> str:
    """``text`` with every long echoed value and every long word in it clipped, then
    the whole clipped to ``limit`` bytes."""
    for value in sorted({v for v in echoed if len(v.encode()) > MAX_ECHO_BYTES},
                        key=len, reverse=True):
        text = text.replace(value, clip(value))
    text = _LONG_WORD.sub(lambda word: clip(word.group()), text)
    return clip(text, limit)


def _bounded_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    bounded: dict[str, str] = {}
    for key, value in list(metadata.items())[:_MAX_METADATA_ENTRIES]:
        bounded.setdefault(clip(key), clip(value))
    return bounded


def _status(error: GeoplexError) -> status_pb2.Status:
    echoed = [*error.metadata.values()]
    bad_request = None
    if isinstance(error, InvalidArgument):
        echoed.append(error.field)
        bad_request = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=clip(error.field),
                description=_bounded_text(error.description, echoed, MAX_DESCRIPTION_BYTES))])
    message = _bounded_text(error.message, echoed, MAX_MESSAGE_BYTES)
    metadata = _bounded_metadata(error.metadata)
    status = _pack(error, message, metadata, bad_request)
    while status.ByteSize() > MAX_DETAILS_BYTES and metadata:
        # the last entry first, so "field" (InvalidArgument's first) stays longest; the dict,
        # not the proto map, knows the order
        metadata.popitem()
        status = _pack(error, message, metadata, bad_request)
    return status


def _pack(error: GeoplexError, message: str, metadata: dict[str, str],
          bad_request: error_details_pb2.BadRequest | None) -> status_pb2.Status:
    details = [any_pb2.Any()]
    details[0].Pack(error_details_pb2.ErrorInfo(reason=clip(error.reason), domain=DOMAIN,
                                                metadata=metadata))
    if bad_request is not None:
        details.append(any_pb2.Any())
        details[1].Pack(bad_request)
    return status_pb2.Status(code=getattr(code_pb2, error.code), message=message,
                             details=details)


def to_status(error: GeoplexError) -> grpc.Status:
    return rpc_status.to_status(_status(error))


INTERNAL_STATUS = rpc_status.to_status(status_pb2.Status(
    code=code_pb2.INTERNAL, message="internal error; the server logged the details",
    details=[]))
