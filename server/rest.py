"""REST endpoints under ``/api`` (JSON in, JSON out), described at ``GET /api/openapi.json``.

Backtests, sweeps, market data, health and strategies. Every error body is JSON:
``{"error": "..."}``, plus ``"errors": {field: message}`` for a 400 on a request body.
Database and data-file work runs in the default executor so the event loop never blocks.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable, Mapping, TypeVar

from aiohttp import BodyPartReader, web

from actors.runstore import FINAL_STATUSES, STATUSES as RUN_STATUSES
from server import openapi
from server.keys import DATA_DIR, DIAGNOSTICS, HUB, STARTED, daemon_of, store_of

T = TypeVar("T")

#: Most rows a list endpoint returns (newest first).
LIST_LIMIT = 200
#: Largest JSON request body, in bytes (a backtest or sweep request is a few hundred).
JSON_BODY_LIMIT = 1024 * 1024
#: Run statuses, and the ones after which a run cannot be cancelled.
STATUSES: tuple[str, ...] = RUN_STATUSES
FINISHED: frozenset[str] = FINAL_STATUSES
_SWEEP_ONLY_FIELDS = ("grid", "objective")


_JSON_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 404: web.HTTPNotFound, 409: web.HTTPConflict,
    422: web.HTTPUnprocessableEntity, 503: web.HTTPServiceUnavailable,
}


def json_error(status: int, message: str, **extra: Any) -> web.HTTPException:
    """An HTTP error whose body is ``{"error": message, **extra}``."""
    body = json.dumps({"error": message, **extra})
    if status == 413:
        return web.HTTPRequestEntityTooLarge(JSON_BODY_LIMIT, extra.get("size", 0), text=body,
                                             content_type="application/json")
    exc_type = _JSON_ERRORS.get(status)
    if exc_type is None:
        raise ValueError(f"json_error: `status` must be one of {sorted(_JSON_ERRORS)} or 413, got {status}")
    return exc_type(text=body, content_type="application/json")


async def _blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _submit(fn: Callable[..., T], *args: Any) -> T:
    """Run a daemon submission in the executor; a full queue or a stopping daemon is a JSON 503."""
    from actors.daemon import DaemonNotRunning, QueueFull  # noqa: PLC0415

    try:
        return await _blocking(fn, *args)
    except (QueueFull, DaemonNotRunning) as exc:
        raise web.HTTPServiceUnavailable(text=json.dumps({"error": str(exc)}),
                                         content_type="application/json") from None


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if len(raw) > JSON_BODY_LIMIT:  # parsed on the loop: keep it small (CSV uploads go elsewhere)
        raise json_error(413, f"request body too large: {len(raw)} bytes; a JSON body may have "
                              f"at most {JSON_BODY_LIMIT} bytes", size=len(raw))
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise json_error(400, f"request body must be a JSON object: {exc}") from None
    except RecursionError:
        raise json_error(400, "request body must be a JSON object: nested too deeply") from None


def _status_query(request: web.Request) -> str | None:
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise json_error(400, f"`status` must be one of {list(STATUSES)}, got {status!r}",
                         errors={"status": f"must be one of {list(STATUSES)}"})
    return status


# ------------------------------------------------------------------------------ backtests
def _parse(body: Any) -> tuple[Any, dict[str, str]]:
    """(BacktestConfig, {}) or (None, {field: message})."""
    from engine import ConfigError, parse_config  # noqa: PLC0415 - engine imports lazily

    try:
        return parse_config(body), {}
    except ConfigError as exc:
        return None, exc.errors


async def _validated_config(request: web.Request, body: Any) -> dict[str, Any]:
    """Parse a backtest config (400 naming each field), then check the data exists (404/422)."""
    # In the executor: a strategy given as 'path/to/file.py:Class' is imported to check it.
    config, errors = await _blocking(_parse, body)
    if errors:
        raise json_error(400, "invalid request", errors=errors)
    await _check_data(request, config.symbol, config.timeframe, config.start_date, config.end_date)
    if config.variant.endswith("_full"):
        problem = await _blocking(_window_problem, request.app[DATA_DIR], config)
        if problem is not None:
            raise json_error(422, f"{config.variant} needs more bars: {problem}",
                             errors={"robustness": problem})
    return dict(config.to_dict())


def _window_problem(data_dir: Any, config: Any) -> str | None:
    """Walk-forward windows of a _full run checked against the real bar count (memory-mapped)."""
    from engine import DataStore  # noqa: PLC0415
    from engine.robustness import window_problem  # noqa: PLC0415

    bars = DataStore(data_dir).load(config.symbol, config.timeframe, config.start_date, config.end_date)
    return window_problem(config, len(bars))


async def _check_data(request: web.Request, symbol: str, timeframe: str,
                      start: str | None, end: str | None) -> None:
    from engine import DataStore  # noqa: PLC0415

    store = DataStore(request.app[DATA_DIR])
    problem = await _blocking(_data_problem, store, symbol, timeframe, start, end)
    if problem is not None:
        raise json_error(*problem)


def _data_problem(store: Any, symbol: str, timeframe: str, start: str | None,
                  end: str | None) -> tuple[int, str] | None:
    """(404, why) for an unknown symbol, (422, why) for no bars in range, else None.

    Uses the store's summary rows (cheap); only a timeframe that would be resampled is loaded.
    """
    from engine import DataNotFound  # noqa: PLC0415

    rows = store.list()
    mine = {r["timeframe"]: r for r in rows if r["symbol"] == symbol}
    if not mine:
        return 404, (f"unknown symbol {symbol!r}; available: {sorted({r['symbol'] for r in rows})} "
                     "(import data with POST /api/data or `qmx data import`)")
    row = mine.get(timeframe)
    if row is None:
        try:
            store.load(symbol, timeframe, start, end)
        except DataNotFound as exc:
            return (404 if exc.kind == "symbol" else 422), str(exc)
        return None
    if (end and end < row["start"]) or (start and start > row["end"]):
        return 422, (f"no {symbol} {timeframe} bars between {start or 'the start'} and "
                     f"{end or 'the end'}; available {row['start']} .. {row['end']}")
    return None


async def post_backtest(request: web.Request) -> web.Response:
    """Queue a backtest; 202 ``{backtest_id, status: "queued"}``."""
    config = await _validated_config(request, await _json_body(request))
    daemon = daemon_of(request.app)
    backtest_id = await _submit(daemon.submit_backtest, config)
    return web.json_response({"backtest_id": backtest_id, "status": "queued"}, status=202)


async def list_backtests(request: web.Request) -> web.Response:
    """List backtests, newest first (at most 200); ``?status=`` filters."""
    status = _status_query(request)
    runs = await _blocking(store_of(request.app).list_runs, status, LIST_LIMIT)
    return web.json_response({"backtests": runs})


async def _run_or_404(request: web.Request) -> dict[str, Any]:
    run_id = request.match_info["id"]
    run = await _blocking(store_of(request.app).get_run, run_id)
    if run is None or run.get("kind", "backtest") != "backtest":
        raise json_error(404, f"no backtest with id {run_id!r}")
    return run


async def get_backtest(request: web.Request) -> web.Response:
    """Status, progress, metrics, results, errors and status history of one backtest."""
    return web.json_response(await _run_or_404(request))


async def get_trades(request: web.Request) -> web.Response:
    """The backtest's closed trades (``[]`` until it completes)."""
    run = await _run_or_404(request)
    trades = await _blocking(store_of(request.app).get_trades, run["backtest_id"])
    return web.json_response({"backtest_id": run["backtest_id"], "status": run["status"],
                              "trades": trades or []})


async def get_equity(request: web.Request) -> web.Response:
    """The backtest's equity curve ``{time, equity, drawdown_pct}`` (null until it completes)."""
    run = await _run_or_404(request)
    equity = await _blocking(store_of(request.app).get_equity, run["backtest_id"])
    return web.json_response({"backtest_id": run["backtest_id"], "status": run["status"],
                              "equity": equity})


async def delete_backtest(request: web.Request) -> web.Response:
    """Cancel a queued or running backtest: 202; 404 unknown; 409 already finished."""
    run = await _run_or_404(request)
    if run["status"] in FINISHED:
        raise json_error(409, f"backtest {run['backtest_id']} already finished "
                              f"({run['status']}); only queued or running backtests can be cancelled")
    accepted = daemon_of(request.app).cancel_backtest(run["backtest_id"])
    if not accepted:
        raise json_error(409, f"backtest {run['backtest_id']} finished before it could be cancelled")
    return web.json_response({"backtest_id": run["backtest_id"], "status": "cancelling"}, status=202)


# -------------------------------------------------------------------------------- sweeps
async def post_sweep(request: web.Request) -> web.Response:
    """Queue a sweep over ``grid`` ranked by ``objective``; 202 ``{sweep_id, status}``."""
    from engine.sweep import compile_objective, normalize_grid, sweep_errors  # noqa: PLC0415

    body = await _json_body(request)
    if not isinstance(body, Mapping):
        raise json_error(400, "invalid request", errors={"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    grid: Any = None
    try:
        grid = normalize_grid(body.get("grid"))  # type: ignore[arg-type] # it checks the type
    except ValueError as exc:
        errors["grid"] = str(exc)
    objective = body.get("objective", "sharpe_ratio")
    try:
        compile_objective(objective)
    except ValueError as exc:
        errors["objective"] = str(exc)
    config, config_errors = await _blocking(
        _parse, {k: v for k, v in body.items() if k not in _SWEEP_ONLY_FIELDS})
    errors.update(config_errors)
    if not errors:  # a _full variant, or a grid the strategy accepts no combination of: 400, not a failed sweep
        errors.update(await _blocking(sweep_errors, config, grid))
    if errors:
        raise json_error(400, "invalid request", errors=errors)
    await _check_data(request, config.symbol, config.timeframe, config.start_date, config.end_date)
    sweep_id = await _submit(daemon_of(request.app).submit_sweep, dict(config.to_dict()), grid,
                               objective)
    return web.json_response({"sweep_id": sweep_id, "status": "queued"}, status=202)


async def delete_sweep(request: web.Request) -> web.Response:
    """Cancel a running sweep: 202; 404 unknown; 409 already finished."""
    sweep_id = request.match_info["id"]
    sweep = await _blocking(store_of(request.app).get_sweep, sweep_id)
    if sweep is None:
        raise json_error(404, f"no sweep with id {sweep_id!r}")
    if sweep["status"] in FINISHED or not daemon_of(request.app).cancel_sweep(sweep_id):
        raise json_error(409, f"sweep {sweep_id} already finished ({sweep['status']}); only queued or "
                              "running sweeps can be cancelled")
    return web.json_response({"sweep_id": sweep_id, "status": "cancelling"}, status=202)


async def list_sweeps(request: web.Request) -> web.Response:
    """List sweeps, newest first (at most 200); ``?status=`` filters."""
    status = _status_query(request)
    sweeps = await _blocking(store_of(request.app).list_sweeps, status, LIST_LIMIT)
    return web.json_response({"sweeps": sweeps})


async def get_sweep(request: web.Request) -> web.Response:
    """One sweep with its grid, objective, progress and ranked results."""
    sweep_id = request.match_info["id"]
    sweep = await _blocking(store_of(request.app).get_sweep, sweep_id)
    if sweep is None:
        raise json_error(404, f"no sweep with id {sweep_id!r}")
    return web.json_response(sweep)


# ---------------------------------------------------------------------------------- data
_UPLOAD_FIELDS = ("symbol", "timeframe", "format", "utc_shift")


async def get_data(request: web.Request) -> web.Response:
    """Stored symbols and timeframes with their date ranges (SYNTH always present)."""
    from engine import DataStore  # noqa: PLC0415

    rows = await _blocking(DataStore(request.app[DATA_DIR]).list)
    return web.json_response({"data": rows})


async def post_data(request: web.Request) -> web.Response:
    """Import a CSV of bars (multipart field ``file``, or the raw body); 201 with the stored row.

    ``symbol``, ``timeframe``, ``format`` (auto) and ``utc_shift`` (hours, 0) come from the query
    string or multipart fields. Nothing is stored when the file has a problem (400 names the line).
    """
    from engine import DataFormatError, DataStore  # noqa: PLC0415

    fields, content, filename = await _upload(request)
    errors = {}
    for name in ("symbol", "timeframe"):
        if not fields.get(name):
            errors[name] = "required (query parameter or multipart field)"
    try:
        shift = float(fields.get("utc_shift") or 0)
    except ValueError:
        errors["utc_shift"] = f"must be a number of hours, got {fields['utc_shift']!r}"
        shift = 0.0
    if not content:
        errors["file"] = "the upload is empty; send the CSV as the body or a multipart field 'file'"
    if errors:
        raise json_error(400, "invalid request", errors=errors)
    store = DataStore(request.app[DATA_DIR])
    try:
        row = await _blocking(store.import_csv, content, fields["symbol"], fields["timeframe"],
                              fields.get("format") or "auto", shift, filename)
    except DataFormatError as exc:
        raise json_error(400, str(exc), line=exc.line, problem=exc.problem) from None
    except ValueError as exc:
        raise json_error(400, str(exc)) from None
    return web.json_response(row, status=201)


async def _upload(request: web.Request) -> tuple[dict[str, str], bytes, str]:
    fields = {k: request.query[k] for k in _UPLOAD_FIELDS if k in request.query}
    if not request.content_type.startswith("multipart/"):
        return fields, await request.read(), fields.get("symbol", "upload") + ".csv"
    content, filename = b"", "upload.csv"
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: not something an upload form sends
        if part.name == "file":
            content, filename = await part.read(decode=False), part.filename or filename
        elif part.name in _UPLOAD_FIELDS:
            fields[part.name] = (await part.text()).strip()
    return fields, bytes(content), filename


# ---------------------------------------------------------------------- health, strategies
async def get_health(request: web.Request) -> web.Response:
    """Daemon health (workers, queue, processes) plus version, uptime and WebSocket clients."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        ver = version("quantmindx")
    except PackageNotFoundError:
        ver = "unknown"
    hub = request.app[HUB]
    health = dict(daemon_of(request.app).health())
    health.update(version=ver, uptime_seconds=round(time.monotonic() - request.app[STARTED], 3),
                  websocket={"clients": len(hub.clients),
                             "backed_up": sum(1 for c in list(hub.clients.values()) if c.queued),
                             "overflow_disconnects": hub.overflow_disconnects})
    health.setdefault("status", "ok")
    return web.json_response(health)


async def get_strategies(request: web.Request) -> web.Response:
    """Built-in strategies with their parameters and defaults."""
    from engine import describe_strategies  # noqa: PLC0415

    return web.json_response({"strategies": await _blocking(describe_strategies)})


async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 description of every endpoint the app serves."""
    return web.json_response(openapi.build(request.app))


async def post_burst(request: web.Request) -> web.Response:
    """Diagnostics only: a worker emits ``count`` bench events, ``rate``/s (null: flat out)."""
    body = await _json_body(request)
    if not isinstance(body, Mapping):
        raise json_error(400, "invalid request", errors={"body": "must be a JSON object"})
    errors = {}
    count, rate, size = body.get("count", 1000), body.get("rate"), body.get("size", 100)
    for name, value, low in (("count", count, 1), ("size", size, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            errors[name] = f"must be an integer >= {low}, got {value!r}"
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0):
        errors["rate"] = f"must be a number of events per second > 0, or null for flat out; got {rate!r}"
    if errors:
        raise json_error(400, "invalid request", errors=errors)
    job_id = daemon_of(request.app).submit_burst(count, rate, size)
    return web.json_response({"job_id": job_id, "count": count, "rate": rate, "size": size},
                             status=202)


def setup_routes(app: web.Application) -> None:
    """Add every ``/api`` route of this module."""
    r = app.router
    r.add_post("/api/backtests", post_backtest)
    r.add_get("/api/backtests", list_backtests)
    r.add_get("/api/backtests/{id}", get_backtest)
    r.add_delete("/api/backtests/{id}", delete_backtest)
    r.add_get("/api/backtests/{id}/trades", get_trades)
    r.add_get("/api/backtests/{id}/equity", get_equity)
    r.add_post("/api/sweeps", post_sweep)
    r.add_get("/api/sweeps", list_sweeps)
    r.add_get("/api/sweeps/{id}", get_sweep)
    r.add_delete("/api/sweeps/{id}", delete_sweep)
    r.add_get("/api/data", get_data)
    r.add_post("/api/data", post_data)
    r.add_get("/api/health", get_health)
    r.add_get("/api/strategies", get_strategies)
    r.add_get("/api/openapi.json", get_openapi)
    if app[DIAGNOSTICS]:
        r.add_post("/api/diagnostics/burst", post_burst)
