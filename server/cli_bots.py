"""`qmx bots`: list, start, stop, pause, resume and kill paper-trading bots on a running daemon.

Talks to the daemon's REST API with urllib (no event loop needed). A daemon that is not running
is one line naming the URL and exit 1; bad arguments are one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8000"
ACTIONS: tuple[str, ...] = ("list", "show", "start", "stop", "pause", "resume", "kill", "resume-trading")
FEEDS: tuple[str, ...] = ("replay", "synthetic")
TIMEOUT_S = 10.0
COSTS: dict[str, str] = {"spread": "price units, full spread", "commission": "fraction of notional per fill",
                         "slippage": "price units per fill"}


class CliError(Exception):
    """A one-line problem for the user, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `qmx bots`."""
    # no argparse `choices`/`type`: we check values ourselves so each problem is one line
    parser.add_argument("action", metavar="ACTION", help=f"one of {', '.join(ACTIONS)}")
    parser.add_argument("bot_id", nargs="?", help="bot id (show, stop, pause, resume)")
    parser.add_argument("--server", default=os.environ.get("QMX_SERVER", DEFAULT_SERVER),
                        help=f"daemon URL (default $QMX_SERVER or {DEFAULT_SERVER})")
    parser.add_argument("--json", action="store_true", help="print the daemon's JSON reply")
    g = parser.add_argument_group("start options")
    g.add_argument("--symbol", help="symbol to trade (SYNTH for the synthetic feed)")
    g.add_argument("--timeframe", default="H1", help="M1, M5, M15, M30, H1, H4 or D1 (default H1)")
    g.add_argument("--strategy", default="sma_cross", help="built-in name or path/to/file.py:Class")
    g.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="strategy parameter (repeatable); VALUE is JSON or a string")
    g.add_argument("--variant", default="vanilla", help="vanilla or spiced (default vanilla)")
    g.add_argument("--feed", default="replay", help="replay or synthetic (default replay)")
    g.add_argument("--speed", default=None, metavar="SECONDS",
                   help="seconds per bar: replay default 0.1 (0 = as fast as possible), synthetic 1.0")
    g.add_argument("--from", dest="start_date", help="replay start date YYYY-MM-DD")
    g.add_argument("--to", dest="end_date", help="replay end date YYYY-MM-DD")
    g.add_argument("--balance", default=None, help="initial balance (default 10000)")
    g.add_argument("--size", default=None, help="position size (default 10000 units)")
    g.add_argument("--lots", action="store_true", help="--size is in lots (100,000 units)")
    for cost, text in COSTS.items():
        g.add_argument(f"--{cost}", default=None, metavar="X", help=f"{cost} ({text}; default 0)")
    g.add_argument("--spiced", action="append", default=[], metavar="KEY=VALUE",
                   help="option of the spiced layer, e.g. risk sizing (repeatable; with --variant spiced)")
    g.add_argument("--seed", default=None, metavar="N", help="synthetic feed: the market's seed (default 42)")
    g.add_argument("--max-daily-loss", default=None, metavar="AMOUNT",
                   help="stop the bot (flattened) after losing this much in one day")
    g.add_argument("--max-daily-loss-pct", default=None, metavar="PCT",
                   help="the same as a percent of the day's starting equity")
    g.add_argument("--max-open-positions", default=None, metavar="N",
                   help="entries beyond this many open positions are skipped (default 1; 0 = never trade)")
    g.add_argument("--name", default="", help="a label for the bot")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise CliError(f"{option} must be a number, got {text!r}", 2) from None


def start_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /api/bots`` body built from the start options (the daemon validates it)."""
    if not args.symbol:
        raise CliError("--symbol is required for `qmx bots start` (e.g. --symbol EURUSD, or SYNTH "
                       "with --feed synthetic)", 2)
    if args.feed not in FEEDS:
        raise CliError(f"--feed must be one of {list(FEEDS)}, got {args.feed!r}", 2)
    params = _pairs(args.param, "--param")
    body: dict[str, Any] = {"symbol": args.symbol, "timeframe": args.timeframe,
                            "strategy": args.strategy, "params": params, "variant": args.variant,
                            "name": args.name, "feed": {"type": args.feed}}
    speed = _number(args.speed, "--speed")
    if speed is not None:
        body["feed"]["seconds_per_bar" if args.feed == "replay" else "bar_interval"] = speed
    for key, value in (("start_date", args.start_date), ("end_date", args.end_date),
                       ("initial_balance", _number(args.balance, "--balance")),
                       ("size", _number(args.size, "--size"))):
        if value is not None:
            body[key] = value
    if args.lots:
        body["size_unit"] = "lots"
    costs = {k: v for k in COSTS if (v := _number(getattr(args, k), f"--{k}")) is not None}
    if costs:
        body["costs"] = costs
    if args.spiced:
        body["spiced"] = _pairs(args.spiced, "--spiced")
    seed = _number(args.seed, "--seed")
    if seed is not None:  # a non-integer goes to the daemon, which names feed.seed
        body["feed"]["seed"] = int(seed) if seed.is_integer() else seed
    risk = {key: value for key, option in (("max_daily_loss", "--max-daily-loss"),
                                           ("max_daily_loss_pct", "--max-daily-loss-pct"),
                                           ("max_open_positions", "--max-open-positions"))
            if (value := _number(getattr(args, key), option)) is not None}
    if "max_open_positions" in risk and float(risk["max_open_positions"]).is_integer():
        risk["max_open_positions"] = int(risk["max_open_positions"])
    if risk:
        body["risk"] = risk
    return body


def _pairs(items: list[str], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"{option} must be NAME=VALUE, got {item!r}", 2)
        out[name] = _value(value)
    return out


def request(server: str, method: str, path: str, body: Any = None) -> Any:
    """One JSON request; raises :class:`CliError` with the daemon's error text."""
    url = server.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise CliError(_http_error(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the QuantMindX daemon at {server}: {reason} "
                       "(is `qmx serve` running? use --server URL)") from None


def _http_error(exc: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(exc.read())
    except ValueError:
        return f"daemon answered {exc.code}"
    errors = data.get("errors") or {}
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
    return f"daemon answered {exc.code}: {data.get('error', '')}" + (f" ({detail})" if detail else "")


def format_table(bots: list[dict[str, Any]], halted: bool) -> str:
    """The bots as aligned text columns."""
    head = ("BOT", "NAME", "STATUS", "SYMBOL", "TF", "STRATEGY", "PNL", "OPEN", "TRADES", "REASON")
    rows = [head] + [(b["bot_id"], b.get("name") or "-", b["status"], str(b.get("symbol")),
                      str(b.get("timeframe")), str(b.get("strategy")), f"{b.get('pnl') or 0.0:.2f}",
                      str(b.get("open_positions", 0)), str(b.get("trades", 0)), b.get("reason") or "")
                     for b in bots]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    if not bots:
        lines = ["no bots"]
    if halted:
        lines.append("trading is HALTED by the kill switch (qmx bots resume-trading)")
    return "\n".join(line.rstrip() for line in lines)


def _need_id(args: argparse.Namespace) -> str:
    if not args.bot_id:
        raise CliError(f"`qmx bots {args.action}` needs a BOT_ID (see `qmx bots list`)", 2)
    return str(args.bot_id)


def _dispatch(args: argparse.Namespace) -> tuple[Any, str]:
    s, action = args.server, args.action
    if action not in ACTIONS:
        raise CliError(f"ACTION must be one of {list(ACTIONS)}, got {action!r}", 2)
    if action == "list":
        data = request(s, "GET", "/api/bots")
        text = format_table(data["bots"], data.get("halted", False))
        if data.get("trading_process") == "down":
            text += ("\nthe trading process is DOWN (it crashed too often; see GET /api/health): "
                     "no bot is trading; restart `qmx serve`")
        return data, text
    if action == "show":
        data = request(s, "GET", f"/api/bots/{_need_id(args)}")
        return data, json.dumps(data, indent=2)
    if action == "start":
        data = request(s, "POST", "/api/bots", start_body(args))
        return data, f"started bot {data['bot_id']}"
    if action in ("stop", "pause", "resume"):
        bot_id = _need_id(args)
        method, path = ("DELETE", f"/api/bots/{bot_id}") if action == "stop" else \
            ("POST", f"/api/bots/{bot_id}/{action}")
        data = request(s, method, path)
        return data, f"{action} requested for bot {bot_id}"
    if action == "kill":
        data = request(s, "POST", "/api/trading/kill")
        return data, f"kill switch engaged: {len(data.get('bots', []))} bots flattened and stopped"
    data = request(s, "POST", "/api/trading/resume")
    return data, "trading resumed: new bots are accepted"


def run(args: argparse.Namespace) -> int:
    """Run one `qmx bots` action; 0 on success, 1 daemon/HTTP problem, 2 bad arguments."""
    try:
        data, text = _dispatch(args)
    except CliError as exc:
        print(f"qmx bots: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(data, indent=2) if args.json else text)
    return 0
