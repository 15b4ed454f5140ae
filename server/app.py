"""The aiohttp application of `qmx serve`: routes, app state, and the daemon's lifetime.

Start-up (``cleanup_ctx``): the actor daemon starts in an executor thread (it spawns processes),
and its ``deliver`` callback is the WebSocket hub's. Shutdown (``on_shutdown``, then cleanup):
the daemon stops taking work and ends queued and running backtests as ``interrupted`` (their
``backtest_error`` events still reach the clients), every WebSocket is closed with 1001
GOING_AWAY, then the daemon stops its processes.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from server.keys import DATA_DIR, DIAGNOSTICS, HUB, SERVICES, STARTED, WORKERS, Services
from server.ws import Hub

#: Route modules, each with ``setup_routes(app)``: the WebSocket, backtest/sweep/data/health REST,
#: bots and trading REST, and the dashboard (``/``, ``/static/...``, HTML reports).
ROUTE_MODULES: tuple[str, ...] = ("server.ws", "server.rest", "server.rest_bots", "server.web")

log = logging.getLogger("server.app")

#: Seconds the daemon gets to stop its processes (the whole shutdown must fit in 10 s:
#: interrupting jobs, closing sockets, the handlers' grace period, then this).
DAEMON_STOP_TIMEOUT = 5.5
#: Seconds the daemon gets to end running jobs as ``interrupted`` before sockets close.
INTERRUPT_TIMEOUT = 1.5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(data_dir: str | os.PathLike[str], workers: int, *,
             diagnostics: bool = False) -> web.Application:
    """Build the daemon's web application. The actor daemon starts when the app starts.

    ``data_dir`` holds market data and SQLite files; ``workers`` is the number of backtest
    worker processes; ``diagnostics`` adds the `bench` topic and ``POST /api/diagnostics/burst``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be an integer >= 1, got {workers!r}")
    app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024 * 1024)
    app[DATA_DIR] = Path(data_dir)
    app[WORKERS] = workers
    app[DIAGNOSTICS] = bool(diagnostics)
    app[STARTED] = time.monotonic()
    app[SERVICES] = Services()
    app[HUB] = Hub(diagnostics=bool(diagnostics))
    app.cleanup_ctx.append(_daemon_ctx)
    app.on_shutdown.append(_close_sockets)
    for name in ROUTE_MODULES:
        importlib.import_module(name).setup_routes(app)
    return app


async def _daemon_ctx(app: web.Application) -> AsyncIterator[None]:
    from actors.daemon import Daemon  # noqa: PLC0415 - the CLI imports this module cheaply

    loop = asyncio.get_running_loop()
    hub, services = app[HUB], app[SERVICES]
    hub.bind(loop)
    data_dir = app[DATA_DIR]
    data_dir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(data_dir, app[WORKERS], hub.deliver, diagnostics=app[DIAGNOSTICS])
    await loop.run_in_executor(None, daemon.start)
    services.store = daemon.store  # the read side: per-thread SQLite connections (WAL)
    services.daemon = hub.daemon = daemon
    try:
        yield
    finally:
        services.daemon = hub.daemon = services.store = None  # routes answer 503 from here on
        await loop.run_in_executor(None, daemon.stop, DAEMON_STOP_TIMEOUT)


async def _close_sockets(app: web.Application) -> None:
    """Interrupt running backtests first, so their clients get the final ``backtest_error``
    ("interrupted") before the 1001 GOING_AWAY close; then close every socket."""
    daemon = app[SERVICES].daemon
    if daemon is not None:
        await asyncio.get_running_loop().run_in_executor(None, daemon.begin_shutdown,
                                                          INTERRUPT_TIMEOUT)
        await asyncio.sleep(0)  # let the hub's pending hop write those frames
    await app[HUB].close_all(1001, b"server shutdown")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Under ``/api``, answer errors as ``{"error": ...}`` JSON: aiohttp's plain-text 404/405/413,
    and a 500 for a bug (logged with its traceback; the client gets the exception's type)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api") or exc.content_type == "application/json":
            raise
        if exc.status < 400:
            raise
        return web.json_response({"error": _error_text(exc, request)}, status=exc.status,
                                 headers=_allow_header(exc))
    except Exception as exc:
        if not request.path.startswith("/api"):
            raise
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": f"internal error ({type(exc).__name__}); "
                                           "see the daemon log"}, status=500)


def _error_text(exc: web.HTTPException, request: web.Request) -> str:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return (f"method {request.method} is not allowed on {request.path}; "
                f"allowed: {sorted(exc.allowed_methods)}")
    if isinstance(exc, web.HTTPNotFound):
        return f"no such endpoint: {request.method} {request.path}; see GET /api/openapi.json"
    return exc.text or exc.reason


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
