"""The typed Geoplex SDK: one async client per service over a shared channel helper.

Pure gRPC: nothing here imports ``geoplex.servers``, ``geoplex.infra`` or ``geoplex.tools``.
"""

from .errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    ResourceExhaustedError,
    GeoplexRpcError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from .channel import ChannelOptions, open_channel

__all__ = [
    "AlreadyExistsError", "ChannelOptions", "DeadlineExceededError", "FailedPreconditionError",
    "ResourceExhaustedError", "GeoplexRpcError", "InvalidArgumentError",
    "NotFoundError", "PermissionDeniedError", "UnauthenticatedError", "UnavailableError",
    "open_channel",
]
