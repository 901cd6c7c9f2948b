"""The typed Geoplex SDK: one async client per service over a shared channel helper.

Pure gRPC: nothing here imports ``geoplex.servers``, ``geoplex.infra`` or ``geoplex.tools``.
"""

from .errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    GeoplexError,
    GeoplexRpcError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SessionClosedError,
    UnauthenticatedError,
    UnavailableError,
)
from .channel import ChannelOptions, open_channel

__all__ = [
    "AlreadyExistsError", "ChannelOptions", "DeadlineExceededError", "FailedPreconditionError",
    "GeoplexError", "GeoplexRpcError", "InvalidArgumentError", "NotFoundError",
    "PermissionDeniedError", "ResourceExhaustedError", "SessionClosedError",
    "UnauthenticatedError", "UnavailableError", "open_channel",
]
