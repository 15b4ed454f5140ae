"""REST for paper-trading bots and the kill switch (``/api/bots``, ``/api/trading``).

Reads come from ``data_dir/bots.sqlite`` (written by the trading process) through the default
executor; commands go to the trading process with ``Daemon.trading_command`` (a tell), so the
answer to a command is 202: the change itself arrives as ``trading_update`` on the ``trading``
topic and in the next read.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Callable, TypeVar

from aiohttp import web

from server import openapi
from server.keys import DATA_DIR, SERVICES, daemon_of
from server.rest import json_error

T = TypeVar("T")

LIVE: frozenset[str] = frozenset({"starting", "running", "paused"})
#: action -> statuses it applies to
ACTIONS: dict[str, frozenset[str]] = {
    "pause": frozenset({"starting", "running"}),
    "resume": frozenset({"paused"}),
    "stop": LIVE,
}
BOT_STORE: web.AppKey[Any] = web.AppKey("bot_store", object)
#: Bots accepted (202) that the trading process has not stored yet, so reads right after
#: POST show them as ``starting`` instead of 404. Entries leave once stored, or after
#: PENDING_TTL seconds (a create the trading process never carried out).
PENDING: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("pending_bots", dict)
PENDING_TTL = 60.0


async def _blocking(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _store(app: web.Application) -> Any:
    return app[BOT_STORE]


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """One bot as ``GET /api/bots`` lists it."""
    s, cfg = row["summary"], row["config"]
    feed = cfg.get("feed") or {}
    return {"bot_id": row["id"], "name": cfg.get("name", ""), "status": row["status"],
            "reason": s.get("reason"), "pnl": s.get("pnl", 0.0), "equity": s.get("equity"),
            "balance": s.get("balance"), "open_positions": s.get("open_positions", 0),
            "trades": s.get("trades", len(row["state"].get("trades", []))),
            "last_price": s.get("last_price"), "symbol": cfg.get("symbol"),
            "timeframe": cfg.get("timeframe", "H1"), "strategy": cfg.get("strategy", "sma_cross"),
            "feed": feed.get("type", "replay"), "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def detail(row: dict[str, Any]) -> dict[str, Any]:
    """One bot with its config, open positions and closed trades."""
    st = row["state"]
    return {**summary(row), "config": row["config"], "positions": st.get("positions", []),
            "trade_list": st.get("trades", []), "feed_position": st.get("feed_position", 0),
            "blocked_entries": st.get("blocked", [])}


def _pending_rows(app: web.Application, stored: set[str]) -> list[dict[str, Any]]:
    """Rows for accepted bots not stored yet (dropping those stored or too old)."""
    pending, now = app[PENDING], time.monotonic()
    for bot_id in [b for b, p in pending.items() if b in stored or now - p["accepted"] > PENDING_TTL]:
        del pending[bot_id]
    return [p["row"] for p in pending.values()]


def _pending_row(bot_id: str, body: dict[str, Any]) -> dict[str, Any]:
    ms = time.time_ns() // 1_000_000  # the store's format: ISO UTC, milliseconds, Z
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    return {"id": bot_id, "created_at": now, "updated_at": now, "status": "starting",
            "config": body, "state": {}, "summary": {"pnl": 0.0, "open_positions": 0, "trades": 0}}


def _halted(store: Any, data_dir: Any) -> bool:
    from actors.trading import kill_requested  # noqa: PLC0415

    return bool(store.halted()) or kill_requested(data_dir)


def _read_all(store: Any, data_dir: Any) -> dict[str, Any]:
    return {"bots": [summary(r) for r in store.rows()], "halted": _halted(store, data_dir)}


def _trading_alive(daemon: Any) -> bool:
    """False when no trading process can take a command (down after its crash budget ran out)."""
    children = daemon.health().get("children") or []
    return any(c.get("name") == "trading" and c.get("alive") for c in children)


def _live_trading(request: web.Request) -> Any:
    """The daemon, or a 503 while its trading process is down (a command would be lost)."""
    daemon = daemon_of(request.app)
    if not _trading_alive(daemon):
        raise json_error(503, "the trading process is not running (it crashed too often and the "
                              "crash budget stopped its restarts; see GET /api/health); restart "
                              "`qmx serve` and try again")
    return daemon


async def _row_or_404(request: web.Request) -> dict[str, Any]:
    bot_id = request.match_info["id"]
    row = await _blocking(_store(request.app).row, bot_id)
    if row is None:
        row = next((r for r in _pending_rows(request.app, set()) if r["id"] == bot_id), None)
    if row is None:
        raise json_error(404, f"no bot with id {bot_id!r}; GET /api/bots lists them")
    return row


def _validate(body: Any, data_dir: Any) -> tuple[dict[str, str], str | None]:
    """Field errors (400) or a data problem (422), checked like a backtest request."""
    from engine import ConfigError, DataNotFound, DataStore  # noqa: PLC0415
    from engine.paper import parse_bot_config  # noqa: PLC0415

    try:
        cfg = parse_bot_config(body)
    except ConfigError as exc:
        return exc.errors, None
    if cfg.feed.type != "replay":
        return {}, None
    bt = cfg.backtest
    try:
        bars = DataStore(data_dir).load(bt.symbol, bt.timeframe, bt.start_date, bt.end_date)
    except DataNotFound as exc:
        return {}, f"no data for the bot's replay feed: {exc}"
    if len(bars) < 2:
        return {}, (f"the replay feed needs at least 2 {bt.symbol} {bt.timeframe} bars between "
                    f"{bt.start_date or 'the start'} and {bt.end_date or 'the end'}; found {len(bars)}")
    return {}, None


async def post_bot(request: web.Request) -> web.Response:
    """Start a paper-trading bot; 202 ``{bot_id, status: "starting"}``."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise json_error(400, f"request body must be a JSON object: {exc}") from None
    errors, data_problem = await _blocking(_validate, body, request.app[DATA_DIR])
    if errors:
        raise json_error(400, "invalid request", errors=errors)
    if data_problem:
        raise json_error(422, data_problem)
    daemon = _live_trading(request)
    if await _blocking(_halted, _store(request.app), request.app[DATA_DIR]):
        raise json_error(409, "trading is halted by the kill switch; POST /api/trading/resume "
                              "before starting new bots")
    bot_id = f"bot-{uuid.uuid4().hex[:12]}"
    daemon.trading_command({"cmd": "create", "bot_id": bot_id, "config": body})
    _pending_rows(request.app, set())  # prune, so the map stays bounded without reads
    request.app[PENDING][bot_id] = {"accepted": time.monotonic(), "row": _pending_row(bot_id, body)}
    return web.json_response({"bot_id": bot_id, "status": "starting"}, status=202)


async def list_bots(request: web.Request) -> web.Response:
    """Every bot (oldest first) with status and PnL; ``halted`` is the kill-switch state;
    ``trading_process`` is ``"down"`` when no trading process runs the bots (crash budget)."""
    listing = await _blocking(_read_all, _store(request.app), request.app[DATA_DIR])
    stored = {b["bot_id"] for b in listing["bots"]}
    listing["bots"] += [summary(r) for r in _pending_rows(request.app, stored)]
    daemon = request.app[SERVICES].daemon
    listing["trading_process"] = "running" if daemon is not None and _trading_alive(daemon) else "down"
    return web.json_response(listing)


async def get_bot(request: web.Request) -> web.Response:
    """One bot: status, PnL, account, config, open positions and closed trades."""
    return web.json_response(detail(await _row_or_404(request)))


async def _act(request: web.Request, action: str) -> web.Response:
    row = await _row_or_404(request)
    if row["status"] not in ACTIONS[action]:
        raise json_error(409, f"cannot {action} bot {row['id']!r} while it is {row['status']!r}; "
                              f"{action} applies to statuses {sorted(ACTIONS[action])}")
    # "stop" alone is the process-level stop of the trading child; bots get "stop_bot"
    cmd = "stop_bot" if action == "stop" else action
    _live_trading(request).trading_command({"cmd": cmd, "bot_id": row["id"]})
    return web.json_response({"bot_id": row["id"], "action": action, "status": row["status"]},
                             status=202)


async def pause_bot(request: web.Request) -> web.Response:
    """Pause a running bot (positions stay open; its feed is not read while paused)."""
    return await _act(request, "pause")


async def resume_bot(request: web.Request) -> web.Response:
    """Resume a paused bot."""
    return await _act(request, "resume")


async def delete_bot(request: web.Request) -> web.Response:
    """Stop a bot and flatten its positions (status ``stopped``)."""
    return await _act(request, "stop")


async def kill(request: web.Request) -> web.Response:
    """Kill switch: flatten every position, stop every bot (``killed``), refuse new bots.

    The request is written to disk before the command is sent, so it is never lost: a trading
    process that is restarting (or down) applies it when it starts, before any bot resumes.
    """
    from actors.trading import request_kill  # noqa: PLC0415

    daemon = daemon_of(request.app)
    data_dir = request.app[DATA_DIR]
    listing = await _blocking(_read_all, _store(request.app), data_dir)
    stored = {b["bot_id"] for b in listing["bots"]}
    live = [b["bot_id"] for b in listing["bots"] if b["status"] in LIVE]
    live += [r["id"] for r in _pending_rows(request.app, stored)]  # created before the kill lands
    await _blocking(request_kill, data_dir)
    daemon.trading_command({"cmd": "kill"})
    return web.json_response({"halted": True, "bots": live}, status=202)


async def resume_trading(request: web.Request) -> web.Response:
    """Release the kill switch: new bots are accepted again (killed bots stay killed)."""
    _live_trading(request).trading_command({"cmd": "resume_trading"})
    return web.json_response({"halted": False}, status=202)


_BOT_BODY = {"allOf": [openapi._CONFIG, {"type": "object", "properties": {
    "name": {"type": "string"},
    "feed": {"type": "object", "properties": {
        "type": {"enum": ["replay", "synthetic"], "default": "replay"},
        "seconds_per_bar": {"type": "number", "minimum": 0, "default": 0.1},
        "bar_interval": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        "seed": {"type": "integer", "default": 42}}},
    "risk": {"type": "object", "properties": {
        "max_daily_loss": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "max_daily_loss_pct": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 100},
        "max_open_positions": {"type": "integer", "minimum": 0, "default": 1}}}}}]}
_ACCEPTED = openapi._json({"type": "object"}, "accepted; the change arrives as trading_update")
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
DETAILS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/bots"): {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _BOT_BODY}}},
        "responses": {"202": openapi._json({"type": "object", "properties": {
            "bot_id": {"type": "string"}, "status": {"const": "starting"}}}, "starting"),
            **openapi._errors(400, 409, 422, 503)}},
    ("GET", "/api/bots"): {"responses": {"200": openapi._json({"type": "object", "properties": {
        "bots": {"type": "array", "items": {"type": "object"}}, "halted": {"type": "boolean"},
        "trading_process": {"enum": ["running", "down"]}}}, "every bot, oldest first")}},
    ("GET", "/api/bots/{id}"): {"parameters": _ID, "responses": {
        "200": openapi._json({"type": "object"}, "the bot"), **openapi._errors(404)}},
    **{(m, p): {"parameters": _ID, "responses": {"202": _ACCEPTED, **openapi._errors(404, 409, 503)}}
       for m, p in (("POST", "/api/bots/{id}/pause"), ("POST", "/api/bots/{id}/resume"),
                    ("DELETE", "/api/bots/{id}"))},
    ("POST", "/api/trading/kill"): {"responses": {"202": _ACCEPTED, **openapi._errors(503)}},
    ("POST", "/api/trading/resume"): {"responses": {"202": _ACCEPTED, **openapi._errors(503)}},
}


def setup_routes(app: web.Application) -> None:
    """Add the bot and kill-switch routes and their OpenAPI details."""
    from actors.trading import BOTS_DB, BotStore  # noqa: PLC0415

    app[BOT_STORE] = BotStore(app[DATA_DIR] / BOTS_DB, readonly=True)
    app[PENDING] = {}
    openapi.DETAILS.update(DETAILS)
    r = app.router
    r.add_post("/api/bots", post_bot)
    r.add_get("/api/bots", list_bots)
    r.add_get("/api/bots/{id}", get_bot)
    r.add_post("/api/bots/{id}/pause", pause_bot)
    r.add_post("/api/bots/{id}/resume", resume_bot)
    r.add_delete("/api/bots/{id}", delete_bot)
    r.add_post("/api/trading/kill", kill)
    r.add_post("/api/trading/resume", resume_trading)
