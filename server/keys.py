"""Typed application state shared by every route module (aiohttp ``web.AppKey``).

Route modules reach the daemon and the run store through :func:`daemon_of` / :func:`store_of`,
which answer 503 (JSON) while the daemon is starting or stopping. Only ``server/app.py`` sets
these keys.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:  # imported for annotations only: keeps `import server.keys` cheap
    from server.ws import Hub


@dataclass
class Services:
    """What the app starts in its cleanup context. Mutable on purpose: aiohttp freezes the app's
    own mapping at startup, so the running daemon is attached here instead."""

    daemon: Any = None  # actors.Daemon, while running
    store: Any = None  # actors.RunStore (read side), while running


#: The running daemon and run store (see :class:`Services`).
SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
#: WebSocket clients, their send queues and the daemon's ``deliver`` callback.
HUB: web.AppKey["Hub"] = web.AppKey("hub")
#: The data directory (market data store, SQLite files, logs).
DATA_DIR: web.AppKey[Path] = web.AppKey("data_dir", Path)
#: Number of backtest worker processes.
WORKERS: web.AppKey[int] = web.AppKey("workers", int)
#: True when started with ``--diagnostics`` (enables the `bench` topic and burst endpoint).
DIAGNOSTICS: web.AppKey[bool] = web.AppKey("diagnostics", bool)
#: ``time.monotonic()`` when the app was built, for the uptime in /api/health.
STARTED: web.AppKey[float] = web.AppKey("started", float)


def _unavailable() -> web.HTTPServiceUnavailable:
    body = json.dumps({"error": "the daemon is starting or stopping; retry in a moment"})
    return web.HTTPServiceUnavailable(text=body, content_type="application/json")


def daemon_of(app: web.Application) -> Any:
    """The running ``actors.Daemon``; raises a JSON 503 while it is not running."""
    daemon = app[SERVICES].daemon
    if daemon is None:
        raise _unavailable()
    return daemon


def store_of(app: web.Application) -> Any:
    """The ``actors.RunStore`` read side (call it via ``run_in_executor``); JSON 503 if absent."""
    store = app[SERVICES].store
    if store is None:
        raise _unavailable()
    return store
