"""The browser side of the daemon: the dashboard at `/`, its static files, and HTML reports.

Everything is served from ``server/static`` (plain ES modules, no build step, no CDN), so the
dashboard works on a machine with no internet access.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from server import openapi
from server.keys import store_of
from server.report import render_report

STATIC_DIR = Path(__file__).resolve().parent / "static"


async def dashboard(request: web.Request) -> web.FileResponse:
    """``GET /``: the dashboard page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def ws_client(request: web.Request) -> web.FileResponse:
    """``GET /static/ws-client``: the client module again, so the spec's extensionless
    ``import ... from './ws-client'`` resolves from a page under ``/static/`` too."""
    return web.FileResponse(STATIC_DIR / "ws-client.js", headers={"Content-Type": "text/javascript"})


async def ws_client_types(request: web.Request) -> web.FileResponse:
    """``GET /static/ws-client.d.ts`` as text (mimetypes would call ``.ts`` an MPEG stream)."""
    return web.FileResponse(STATIC_DIR / "ws-client.d.ts",
                            headers={"Content-Type": "text/plain; charset=utf-8"})


async def report(request: web.Request) -> web.Response:
    """``GET /api/backtests/{id}/report``: self-contained HTML (404 unknown id, 409 not finished)."""
    run_id = request.match_info["id"]
    store = store_of(request.app)
    loop = asyncio.get_running_loop()
    run = await loop.run_in_executor(None, store.get_run, run_id)
    if run is None:
        return web.json_response({"error": f"no backtest with id {run_id!r}"}, status=404)
    if run.get("status") != "completed":
        return web.json_response(
            {"error": f"backtest {run_id} is {run.get('status')}; a report needs a completed run",
             "status": run.get("status")}, status=409)
    html = await loop.run_in_executor(None, render_report, run)
    return web.Response(text=html, content_type="text/html", charset="utf-8")


#: OpenAPI description of the report endpoint (merged into ``GET /api/openapi.json``).
REPORT_DETAILS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/backtests/{id}/report"): {
        "summary": "Self-contained HTML report of a completed backtest (inline CSS/SVG, no external URLs)",
        "responses": {
            "200": {"description": "the report", "content": {"text/html": {"schema": {"type": "string"}}}},
            **openapi._errors(404, 409, 503),
        },
    },
}


def setup_routes(app: web.Application) -> None:
    """Add ``GET /``, ``/static/...`` and ``GET /api/backtests/{id}/report``."""
    openapi.DETAILS.update(REPORT_DETAILS)
    app.router.add_get("/", dashboard)
    app.router.add_get("/api/backtests/{id}/report", report)
    app.router.add_get("/static/ws-client", ws_client)  # before the static prefix, which would 404
    app.router.add_get("/static/ws-client.d.ts", ws_client_types)
    # show_index off so the directory is not listed.
    app.router.add_static("/static", STATIC_DIR, show_index=False, append_version=False)
