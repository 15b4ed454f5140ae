"""``GET /api/openapi.json``: an OpenAPI 3.1 description built from the app's own router.

Every route under ``/api`` (and ``/ws``) appears, including routes other modules add; a handler's
docstring is its summary. Endpoints of ``server/rest.py`` also get request/response schemas.
"""
from __future__ import annotations

import inspect
from typing import Any

from aiohttp import web

from server.keys import DIAGNOSTICS

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"},
                         "errors": {"type": "object", "additionalProperties": {"type": "string"}}}}
_CONFIG = {
    "type": "object", "required": ["symbol"],
    "properties": {
        "symbol": {"type": "string", "example": "EURUSD"},
        "timeframe": {"enum": ["M1", "M5", "M15", "M30", "H1", "H4", "D1"], "default": "H1"},
        "variant": {"enum": ["vanilla", "spiced", "vanilla_full", "spiced_full"], "default": "vanilla"},
        "start_date": {"type": "string", "format": "date"},
        "end_date": {"type": "string", "format": "date"},
        "strategy": {"type": "string", "default": "sma_cross",
                     "description": "built-in name (GET /api/strategies) or 'path/to/file.py:Class'"},
        "params": {"type": "object"},
        "initial_balance": {"type": "number", "default": 10000},
        "size": {"type": "number", "default": 10000},
        "size_unit": {"enum": ["units", "lots"], "default": "units"},
        "costs": {"type": "object", "properties": {k: {"type": "number", "minimum": 0}
                                                  for k in ("spread", "commission", "slippage")}},
        "spiced": {"type": "object"}, "robustness": {"type": "object"},
        "seed": {"type": "integer", "default": 42},
    },
}
_SWEEP = {"allOf": [_CONFIG, {"type": "object", "required": ["grid"], "properties": {
    "grid": {"type": "object", "description": "param -> list of values or 'start:stop:step'"},
    "objective": {"type": "string", "default": "sharpe_ratio"}}}]}
_STATUS_Q = {"name": "status", "in": "query", "required": False,
             "schema": {"enum": ["queued", "running", "completed", "failed", "cancelled", "interrupted"]}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid request (names each bad field)", 404: "not found", 409: "conflict",
            413: "JSON body over 1 MiB", 422: "no data for the request",
            503: "daemon starting or stopping, or the job queue is full"}
    return {str(c): _json(_ERROR, text[c]) for c in codes}


_OBJ = {"type": "object"}
#: Details for our own endpoints: (method, path) -> extra operation fields.
DETAILS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/backtests"): {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _CONFIG}}},
        "responses": {"202": _json({"type": "object", "properties": {
            "backtest_id": {"type": "string"}, "status": {"const": "queued"}}}, "queued"),
            **_errors(400, 404, 413, 422, 503)}},
    ("GET", "/api/backtests"): {"parameters": [_STATUS_Q], "responses": {
        "200": _json({"type": "object", "properties": {"backtests": {"type": "array"}}}, "runs"),
        **_errors(400)}},
    ("GET", "/api/backtests/{id}"): {"parameters": [_ID], "responses": {
        "200": _json(_OBJ, "the run"), **_errors(404)}},
    ("DELETE", "/api/backtests/{id}"): {"parameters": [_ID], "responses": {
        "202": _json(_OBJ, "cancelling"), **_errors(404, 409)}},
    ("GET", "/api/backtests/{id}/trades"): {"parameters": [_ID], "responses": {
        "200": _json(_OBJ, "trades"), **_errors(404)}},
    ("GET", "/api/backtests/{id}/equity"): {"parameters": [_ID], "responses": {
        "200": _json(_OBJ, "equity curve"), **_errors(404)}},
    ("POST", "/api/sweeps"): {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _SWEEP}}},
        "responses": {"202": _json(_OBJ, "queued"), **_errors(400, 404, 413, 422, 503)}},
    ("GET", "/api/sweeps"): {"parameters": [_STATUS_Q], "responses": {
        "200": _json(_OBJ, "sweeps"), **_errors(400)}},
    ("GET", "/api/sweeps/{id}"): {"parameters": [_ID], "responses": {
        "200": _json(_OBJ, "the sweep"), **_errors(404)}},
    ("DELETE", "/api/sweeps/{id}"): {"parameters": [_ID], "responses": {
        "202": _json(_OBJ, "cancelling"), **_errors(404, 409)}},
    ("POST", "/api/data"): {
        "parameters": [{"name": n, "in": "query", "required": n != "format" and n != "utc_shift",
                        "schema": {"type": "string"}}
                       for n in ("symbol", "timeframe", "format", "utc_shift")],
        "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}},
                                                       "multipart/form-data": {"schema": _OBJ}}},
        "responses": {"201": _json(_OBJ, "imported"), **_errors(400)}},
}


def build(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document for ``app``: every ``/api`` route and ``/ws``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method in ("HEAD", "*") or not (path.startswith("/api") or path == "/ws"):
            continue
        op: dict[str, Any] = {"summary": _summary(route.handler),
                              "responses": {"200": {"description": "OK"}}}
        op.update(DETAILS.get((route.method, path), {}))
        if "{" in path and "parameters" not in op:
            op["parameters"] = [{"name": p.strip("{}"), "in": "path", "required": True,
                                 "schema": {"type": "string"}} for p in path.split("/") if p.startswith("{")]
        if path == "/ws":
            op["description"] = ("WebSocket (upgrade): actions subscribe {topic, since?}, unsubscribe "
                                 "{topic}, ping; topics backtest, trading, logs, backtest:<id>, "
                                 "sweep:<id>" + (", bench" if app[DIAGNOSTICS] else ""))
            op["responses"] = {"101": {"description": "switching protocols"}}
        paths.setdefault(path, {})[route.method.lower()] = op
    return {"openapi": "3.1.0",
            "info": {"title": "QuantMindX daemon", "version": _version(),
                     "description": "Backtests, sweeps, market data, bots and live events."},
            "paths": dict(sorted(paths.items())),
            "components": {"schemas": {"Error": _ERROR, "BacktestConfig": _CONFIG}}}


def _summary(handler: Any) -> str:
    doc = inspect.getdoc(handler) or ""
    return doc.strip().splitlines()[0] if doc.strip() else getattr(handler, "__name__", "")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("quantmindx")
    except PackageNotFoundError:
        return "unknown"
