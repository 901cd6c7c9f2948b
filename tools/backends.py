"""Which backends the environment names, read as the servers read them.

``GEOPLEX_REDIS_URL``, ``GEOPLEX_MONGO_URI`` and ``GEOPLEX_ETCD_ENDPOINTS`` are checked
by the runtime's own rules (``geoplex.servers._runtime.config``), so ``geoplex up``,
``geoplex infra up`` and the tests refuse what a server would refuse. ``geoplex.infra``
stays free of the server runtime: it is handed the result.
"""

from __future__ import annotations

from collections.abc import Mapping

from geoplex.infra.local import BackendUrls, InfraError
from geoplex.servers._runtime.config import ConfigError, Env, backend_url


def configured_backends(environ: Mapping[str, str] | None = None) -> BackendUrls:
    """The configured backends (None where unset: that one is started locally).

    ``environ`` defaults to ``os.environ``. A malformed value raises
    :class:`~geoplex.infra.local.InfraError` naming its variable (never a password).
    """
    env = Env(environ)
    try:
        return BackendUrls(redis_url=backend_url(env, "GEOPLEX_REDIS_URL"),
                           mongo_uri=backend_url(env, "GEOPLEX_MONGO_URI"),
                           etcd_endpoints=env.endpoints("GEOPLEX_ETCD_ENDPOINTS"))
    except ConfigError as exc:
        raise InfraError(str(exc)) from None
