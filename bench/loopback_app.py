"""The benchmarks' feed servers: an aiohttp app on 127.0.0.1, on a port the OS picks."""

from __future__ import annotations

from aiohttp import web


async def start_on_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1; the runner (to clean up) and the port it got."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
