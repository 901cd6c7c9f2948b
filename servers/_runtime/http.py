"""An HTTP endpoint beside a service's gRPC server (aiohttp, in the same process)."""

from __future__ import annotations

from aiohttp import web


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0: a free port) without an access log (a query
    string may hold what must never be logged); the runner to clean up and the
    ``host:port`` it bound."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # the only place aiohttp tells the port it bound for port 0
    sockets = getattr(server, "sockets", None) or ()
    return runner, f"{host}:{sockets[0].getsockname()[1] if sockets else port}"
