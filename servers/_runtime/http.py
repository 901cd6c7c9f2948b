"""An HTTP endpoint beside a service's gRPC server (aiohttp, in the same process)."""

from __future__ import annotations

from aiohttp import web

from .server import StartupError


async def start_http(app: web.Application, host: str, port: int, setting: str = ""
                     ) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0: a free port) without an access log (a query
    string may hold what must never be logged); the runner to clean up and the
    ``host:port`` it bound. A port that cannot be bound is a StartupError naming
    ``setting``, the variable that chooses it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        fix = f"; stop the other process or set {setting} (0: a free port)" if setting else ""
        raise StartupError(f"cannot listen for HTTP on {host}:{port}: "
                           f"{exc.strerror or exc}{fix}") from None
    server = site._server  # the only place aiohttp tells the port it bound for port 0
    sockets = getattr(server, "sockets", None) or ()
    return runner, f"{host}:{sockets[0].getsockname()[1] if sockets else port}"
