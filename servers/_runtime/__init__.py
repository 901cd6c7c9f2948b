"""The runtime every Geoplex server shares: config, serve(), interceptors, errors."""

from .config import ConfigError, Env, RuntimeConfig
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    GeoplexError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .server import GeoplexServer, ServiceSpec, StartupError, run, serve

__all__ = [
    "AlreadyExists", "ConfigError", "Env", "FailedPrecondition", "GeoplexError", "GeoplexServer",
    "InvalidArgument", "NotFound", "PermissionDenied", "ResourceExhausted", "RuntimeConfig",
    "ServiceSpec", "StartupError", "Unauthenticated", "Unavailable", "run", "serve",
]
