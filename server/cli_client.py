"""`qmx watch`: print a daemon's live event stream, one readable line per event.

Also the terminal side of ``qmx backtest --server URL --follow``: a progress bar on stderr from
the run's own topic, then the result table (or JSON) on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

import aiohttp

from server.client import TERMINAL, TOPIC_RE, QmxClient, QmxError

DEFAULT_SERVER = "http://127.0.0.1:8000"
TOPICS_HELP = "backtest, trading, logs, backtest:<id> or sweep:<id>"
#: Headline rows of the result table: (field, label).
RESULT_ROWS: tuple[tuple[str, str], ...] = (
    ("final_balance", "Final balance"), ("return_pct", "Return [%]"), ("total_trades", "Trades"),
    ("win_rate", "Win rate [%]"), ("sharpe_ratio", "Sharpe ratio"), ("drawdown", "Max drawdown [%]"),
    ("duration_seconds", "Run time [s]"),
)
MORE_METRICS: tuple[str, ...] = ("profit_factor", "expectancy", "sortino_ratio", "calmar_ratio",
                                 "exposure_pct", "avg_trade_pct", "best_trade_pct", "worst_trade_pct")


def default_server() -> str:
    """``$QMX_SERVER`` or ``http://127.0.0.1:8000``."""
    return os.environ.get("QMX_SERVER", DEFAULT_SERVER)


def _topic(text: str) -> str:
    if not TOPIC_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be one of {TOPICS_HELP}, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `qmx watch`."""
    parser.add_argument("topics", nargs="*", type=_topic, metavar="TOPIC",
                        help=f"topics to follow: {TOPICS_HELP} (default: backtest trading logs)")
    parser.add_argument("--server", default=default_server(),
                        help=f"daemon URL (default $QMX_SERVER or {DEFAULT_SERVER})")
    parser.add_argument("--json", action="store_true", help="print each event as one JSON line")


def run(args: argparse.Namespace) -> int:
    """Follow the stream until Ctrl-C or the daemon goes away for good."""
    topics = args.topics or ["backtest", "trading", "logs"]
    try:
        return asyncio.run(watch(args.server, topics, json_output=args.json))
    except ValueError as exc:
        print(f"qmx watch: {exc}", file=sys.stderr)
        return 2


async def watch(server: str, topics: list[str], *, json_output: bool, out: TextIO | None = None) -> int:
    """Print every event of ``topics`` to ``out`` (stdout); returns 1 if the daemon cannot be reached."""
    out = out or sys.stdout
    async with QmxClient(server) as client:
        try:
            for topic in topics:
                await client.subscribe(topic, since=None)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            print(f"qmx watch: cannot connect to {client.ws_url}: {exc}", file=sys.stderr)
            return 1
        print(f"watching {', '.join(topics)} on {client.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        async for event in client:
            line = json.dumps(event) if json_output else format_event(event)
            if line:
                print(line, file=out, flush=True)
    print("qmx watch: connection closed", file=sys.stderr)
    return 1


def _short(bid: Any) -> str:
    return str(bid or "-")[:8]


def _num(value: Any, spec: str = ",.2f") -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else format(value, spec)


def format_event(event: dict[str, Any]) -> str:
    """One human line for an event (empty for frames not worth a line)."""
    kind, d = event.get("type"), event.get("data") or {}
    ts = str(d.get("timestamp", ""))[11:19]
    bid = _short(d.get("backtest_id"))
    if kind == "backtest_start":
        return (f"{ts} start    {bid} {d.get('symbol')} {d.get('timeframe')} {d.get('variant')} "
                f"{d.get('start_date')}..{d.get('end_date')}")
    if kind == "backtest_progress":
        return (f"{ts} progress {bid} {_num(d.get('progress'), '5.1f')}% bar {d.get('bars_processed')}/"
                f"{d.get('total_bars')} {d.get('current_date')} trades {d.get('trades_count')} "
                f"pnl {_num(d.get('current_pnl'), '+,.2f')}")
    if kind == "backtest_complete":
        return (f"{ts} complete {bid} balance {_num(d.get('final_balance'))} return "
                f"{_num(d.get('return_pct'), '+.2f')}% trades {d.get('total_trades')} win "
                f"{_num(d.get('win_rate'), '.1f')}% sharpe {_num(d.get('sharpe_ratio'), '.2f')} dd "
                f"{_num(d.get('drawdown'), '.2f')}% in {_num(d.get('duration_seconds'), '.2f')}s")
    if kind == "backtest_error":
        return f"{ts} error    {bid} {d.get('error')}: {d.get('error_details', '')}".rstrip(": ")
    if kind == "log_entry":
        where = bid if d.get("backtest_id") else str(d.get("logger_name", "-"))[:20]
        return f"{ts} log      {where} {str(d.get('level', '')):7} {d.get('message')}"
    if kind == "trading_update":
        extra = {k: v for k, v in d.items() if k not in ("bot_id", "status", "pnl")}
        tail = " " + json.dumps(extra, default=str) if extra else ""
        return f"{ts or '--:--:--'} trading  {d.get('bot_id')} {d.get('status')} pnl {_num(d.get('pnl'), '+,.2f')}{tail}"
    if kind and str(kind).startswith("sweep_"):
        return _sweep_line(str(kind), d, ts)
    if kind in ("subscription_confirmed", "pong"):
        return ""
    if kind == "reconnected":
        return f"-- reconnected; resubscribed {', '.join(event.get('topics', []))}"
    if kind == "error":
        return f"server error: {event.get('error')}"
    return json.dumps(event, default=str)


def _sweep_line(kind: str, d: dict[str, Any], ts: str) -> str:
    """One line per sweep event (``sweep_complete`` carries 50 ranked rows: only the best is shown)."""
    sid = _short(d.get("sweep_id"))
    if kind == "sweep_start":
        return (f"{ts} sweep    {sid} {d.get('symbol')} {d.get('timeframe')} {d.get('variant')} "
                f"{d.get('strategy')} {d.get('combinations')} combinations by {d.get('objective')}")
    if kind == "sweep_progress":
        return f"{ts} sweep    {sid} {_num(d.get('progress'), '5.1f')}% {d.get('completed')}/{d.get('total')}"
    if kind == "sweep_complete":
        best = d.get("best") or {}
        return (f"{ts} sweep    {sid} done {d.get('evaluated')} evaluated, {d.get('skipped')} skipped; best "
                f"{json.dumps(best.get('params'), default=str)} {d.get('objective')} "
                f"{_num(best.get('objective_value'), '.4g')} in {_num(d.get('duration_seconds'), '.2f')}s")
    if kind == "sweep_error":
        return f"{ts} sweep    {sid} error {d.get('error')}"
    return json.dumps({"type": kind, "data": d}, default=str)


class ProgressBar:
    """A one-line progress bar on a terminal; plain lines every 10 percent elsewhere."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._last_decile = -1

    def update(self, d: dict[str, Any]) -> None:
        pct = float(d.get("progress") or 0.0)
        info = (f"{pct:5.1f}% {d.get('current_date', '')} trades {d.get('trades_count', 0)} "
                f"pnl {_num(d.get('current_pnl'), '+,.2f')}")
        if self.tty:
            filled = int(self.width * pct / 100)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {info}")
        elif int(pct // 10) > self._last_decile:
            self._last_decile = int(pct // 10)
            self.stream.write(info + "\n")
        self.stream.flush()

    def note(self, line: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def result_table(run: dict[str, Any]) -> str:
    """The plain-text result table of a finished run (``GET /api/backtests/{id}``)."""
    results = run.get("results") or {}
    head = {**(run.get("metrics") or {}), **{k: run[k] for k, _ in RESULT_ROWS if k in run}}
    metrics = results.get("metrics") or {}
    data = results.get("data") or {}
    rows = [(label, head.get(key)) for key, label in RESULT_ROWS]
    rows += [(key, metrics[key]) for key in MORE_METRICS if key in metrics]
    title = f"Backtest {run.get('backtest_id', '')} {run.get('status', '')}".rstrip()
    if data:
        title += (f"\n{data.get('symbol')} {data.get('timeframe')} {str(data.get('start'))[:10]}.."
                  f"{str(data.get('end'))[:10]}")
        if data.get("synthetic"):
            title += "  [SYNTHETIC DATA]"
    width = max(len(label) for label, _ in rows)
    body = "\n".join(f"  {label:<{width}}  {_value(v):>14}" for label, v in rows)
    return f"{title}\n{body}"


def _value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


async def follow_backtest(server_url: str, body: dict[str, Any], *, json_output: bool,
                          out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Implementation of :func:`server.client.submit_and_follow` (``out``/``err``: stdout/stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    async with QmxClient(server_url) as client:
        try:
            bid = await client.submit_backtest(**body)
            # since=0: the daemon replays anything of this run that happened before we subscribed.
            await client.subscribe(f"backtest:{bid}", since=0)
        except QmxError as exc:
            print(f"qmx backtest: the daemon refused the backtest: {exc.message}", file=err)
            return 2 if exc.status == 400 else 1
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            print(f"qmx backtest: cannot reach {client.url}: {exc}", file=err)
            return 1
        bar = ProgressBar(err)
        bar.note(f"backtest {bid} submitted to {client.url}")
        try:
            run = await _follow(client, bid, bar)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            bar.note(f"qmx backtest: lost the daemon at {client.url}: {exc}")
            return 1
        bar.done()
    completed = run.get("status") == "completed"
    if json_output:
        # The same shape a local `qmx backtest --json` prints, so scripts parse one thing.
        print(json.dumps(complete_data(run) if completed else error_data(run), allow_nan=False), file=out)
    elif completed:  # for a failed run a table of dashes says nothing: the error line does
        print(result_table(run), file=out)
        if (run.get("results") or {}).get("walk_forward"):  # a _full run: as a local one reports it
            from server.report_text import format_robustness  # noqa: PLC0415

            print("\n" + format_robustness(run["results"]), file=out)
    if not completed:
        print(f"qmx backtest: backtest {bid} {run.get('status')}: {run.get('error')}", file=err)
    return 0 if completed else 1


#: The spec's fields of ``backtest_complete`` between ``backtest_id`` and ``timestamp``.
COMPLETE_FIELDS: tuple[str, ...] = ("final_balance", "total_trades", "win_rate", "sharpe_ratio", "drawdown",
                                    "return_pct", "duration_seconds")


def complete_data(run: dict[str, Any]) -> dict[str, Any]:
    """The ``backtest_complete`` data object of a completed stored run (``GET /api/backtests/{id}``):
    ``backtest_id``, the spec's fields, ``timestamp`` (when it finished) and the full ``results``
    (every trade, unlike the WebSocket frame, which carries the last 500)."""
    metrics = run.get("metrics") or {}
    return {"backtest_id": run.get("backtest_id"), **{k: metrics.get(k) for k in COMPLETE_FIELDS},
            "timestamp": run.get("finished_at"), "results": run.get("results") or {}}


def error_data(run: dict[str, Any]) -> dict[str, Any]:
    """The ``backtest_error`` data object of a run that did not complete, plus its ``status``
    (``failed``, ``cancelled`` or ``interrupted``)."""
    return {"backtest_id": run.get("backtest_id"), "error": run.get("error") or run.get("status"),
            "error_details": run.get("error_details") or "", "timestamp": run.get("finished_at"),
            "status": run.get("status")}


async def _follow(client: QmxClient, bid: str, bar: ProgressBar) -> dict[str, Any]:
    """Show events until the run ends; the REST status is checked when the stream is quiet."""
    while True:
        event = await client.next_event(timeout=2.0)
        kind = (event or {}).get("type")
        data = (event or {}).get("data") or {}
        if kind == "backtest_progress":
            bar.update(data)
        elif kind == "log_entry" and data.get("level") in ("WARNING", "ERROR"):
            bar.note(f"[{data.get('level')}] {data.get('message')}")
        if kind in ("backtest_complete", "backtest_error") or event is None:
            run = await client.backtest(bid)
            if run.get("status") in TERMINAL:
                return run
