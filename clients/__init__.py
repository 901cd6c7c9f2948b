"""Typed async clients for the Geoplex services and the ``geoplex`` CLI."""

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
