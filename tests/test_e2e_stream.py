"""End to end against a real `qmx serve`: the spec's event stream, field by field, over /ws."""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
import websockets

from tests.fixtures_daemon import Daemon, api, wait_idle

pytestmark = pytest.mark.e2e

ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NUMBER = (int, float)

#: The spec's tables: field -> type (``DATE``/``ISO_MS_Z`` for formatted strings).
SPEC: dict[str, dict[str, Any]] = {
    "backtest_start": {"backtest_id": str, "variant": str, "symbol": str, "timeframe": str,
                       "start_date": DATE, "end_date": DATE, "timestamp": ISO_MS_Z},
    "backtest_progress": {"backtest_id": str, "progress": NUMBER, "status": str,
                          "bars_processed": NUMBER, "total_bars": NUMBER, "current_date": DATE,
                          "trades_count": NUMBER, "current_pnl": NUMBER, "timestamp": ISO_MS_Z},
    "log_entry": {"backtest_id": str, "timestamp": ISO_MS_Z, "level": str, "message": str,
                  "module": str, "function": str, "line": int, "logger_name": str},
    "backtest_complete": {"backtest_id": str, "final_balance": NUMBER, "total_trades": NUMBER,
                          "win_rate": NUMBER, "sharpe_ratio": NUMBER, "drawdown": NUMBER,
                          "return_pct": NUMBER, "duration_seconds": NUMBER,
                          "timestamp": ISO_MS_Z, "results": dict},
    "backtest_error": {"backtest_id": str, "error": str, "error_details": str,
                       "timestamp": ISO_MS_Z},
}

REQUEST = {"symbol": "SYNTH", "timeframe": "H1", "variant": "vanilla", "start_date": "2023-01-01",
           "end_date": "2023-12-31", "strategy": "sma_cross"}

#: A run that takes many seconds (walk-forward over about 740k M1 bars), to act on mid-run.
LONG = {"timeframe": "M1", "start_date": "2024-01-01", "end_date": "2025-12-31",
        "variant": "vanilla_full"}


def check_event(event: dict[str, Any]) -> None:
    """Exactly the spec's fields with the spec's types, plus the top-level ``topic`` and ``seq``."""
    assert set(event) == {"type", "data", "topic", "seq"}, event
    assert isinstance(event["seq"], int) and event["seq"] > 0
    assert event["topic"] == "backtest" or event["topic"].startswith("backtest:"), event["topic"]
    table, data = SPEC[event["type"]], event["data"]
    assert set(data) == set(table), (event["type"], sorted(set(data) ^ set(table)))
    for name, kind in table.items():
        value = data[name]
        if isinstance(kind, re.Pattern):
            assert isinstance(value, str) and kind.match(value), (name, value)
        else:
            assert isinstance(value, kind) and not isinstance(value, bool), (name, value)


def submit(daemon: Daemon, **changes: Any) -> str:
    status, body = api(daemon, "POST", "/api/backtests", {**REQUEST, **changes})
    assert status == 202 and body["status"] == "queued", body
    return str(body["backtest_id"])


async def _post(daemon: Daemon, **changes: Any) -> str:
    return await asyncio.to_thread(submit, daemon, **changes)


async def listen_backtest(daemon: Daemon, variant: str = "spiced") -> tuple[str, list[dict[str, Any]]]:
    """The spec's Python example, collecting what it receives for one REST-started backtest."""
    async with websockets.connect(daemon["ws_url"]) as ws:
        await ws.send(json.dumps({"action": "subscribe", "topic": "backtest"}))
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first == {"type": "subscription_confirmed", "topic": "backtest"}
        backtest_id = await _post(daemon, variant=variant)
        received: list[dict[str, Any]] = []
        while True:
            data = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if data["data"].get("backtest_id") != backtest_id:
                continue  # another test's run on the shared daemon
            received.append(data)
            if data["type"] in ("backtest_complete", "backtest_error"):
                return backtest_id, received


@pytest.mark.parametrize("variant", ["spiced", "vanilla_full", "spiced_full"])
def test_spec_python_client_sees_the_whole_run_with_spec_fields(daemon: Daemon, variant: str) -> None:
    backtest_id, events = asyncio.run(listen_backtest(daemon, variant))
    types = [e["type"] for e in events]
    assert types[0] == "backtest_start" and types[-1] == "backtest_complete", types
    assert "backtest_progress" in types and "log_entry" in types
    for event in events:
        check_event(event)
    start = events[0]["data"]
    assert (start["variant"], start["symbol"], start["timeframe"]) == (variant, "SYNTH", "H1")
    # the first and last bar's dates inside the requested range (no bars on weekends)
    assert "2023-01-01" <= start["start_date"] <= start["end_date"] <= "2023-12-31"
    progress = [e["data"]["progress"] for e in events if e["type"] == "backtest_progress"]
    assert progress[0] == 0 and progress[-1] == 100 and progress == sorted(progress)
    assert all(0 <= p <= 100 for p in progress)
    logs = [e["data"] for e in events if e["type"] == "log_entry"]
    assert all(entry["logger_name"] == f"backtest.{backtest_id}" for entry in logs)
    assert all(entry["level"] in ("INFO", "WARNING", "ERROR", "DEBUG") for entry in logs)
    assert all(entry["module"] and entry["function"] and entry["line"] > 0 for entry in logs)
    assert any(entry["message"].startswith("Trade executed") for entry in logs)
    done = events[-1]["data"]
    assert done["drawdown"] >= 0 and 0 <= done["win_rate"] <= 100 and done["total_trades"] > 0
    json.dumps(done["results"], allow_nan=False)  # plain JSON, no NaN/inf
    extras = {"spiced": {"regime_analytics"}, "vanilla_full": {"walk_forward", "monte_carlo", "pbo"},
              "spiced_full": {"regime_analytics", "walk_forward", "monte_carlo", "pbo"}}[variant]
    assert extras <= set(done["results"]), sorted(done["results"])
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    status, run = api(daemon, "GET", f"/api/backtests/{backtest_id}")
    assert status == 200 and run["status"] == "completed"
    assert run["metrics"]["final_balance"] == done["final_balance"]


async def _run_order(daemon: Daemon, count: int, **changes: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """Submit ``count`` runs while subscribed to `backtest`; (ids, [(event type, id)] in seq order)."""
    order: list[tuple[str, str]] = []
    # max_size=None: a long M5 run's backtest_complete carries every trade (over 1 MiB)
    async with websockets.connect(daemon["ws_url"], max_size=None) as ws:
        await ws.send(json.dumps({"action": "subscribe", "topic": "backtest"}))
        assert json.loads(await ws.recv())["type"] == "subscription_confirmed"
        ids = [await _post(daemon, **changes) for _ in range(count)]
        finished: set[str] = set()
        while finished < set(ids):
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            bid = event.get("data", {}).get("backtest_id")
            if bid in ids and event["type"] in ("backtest_start", "backtest_complete", "backtest_error"):
                assert event["type"] != "backtest_error", event
                order.append((event["type"], bid))
                if event["type"] == "backtest_complete":
                    finished.add(bid)
    return ids, order


def test_two_backtests_run_in_parallel_on_two_workers(daemon: Daemon) -> None:
    # Long enough (M5, two years) that two sequential runs could not overlap by accident.
    wait_idle(daemon)  # both workers free: an earlier test's cancel may have replaced one
    ids, order = asyncio.run(_run_order(daemon, 2, timeframe="M5", start_date="2021-01-01",
                                        end_date="2022-12-31"))
    a, b = ids
    # both started before either completed: the running intervals overlap
    assert order.index(("backtest_start", b)) < order.index(("backtest_complete", a)), order
    assert order.index(("backtest_start", a)) < order.index(("backtest_complete", b)), order


def test_a_trading_subscriber_sees_no_backtest_events(daemon: Daemon) -> None:
    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(daemon["ws_url"]) as trading, \
                websockets.connect(daemon["ws_url"]) as backtest:
            for ws, topic in ((trading, "trading"), (backtest, "backtest")):
                await ws.send(json.dumps({"action": "subscribe", "topic": topic}))
                assert json.loads(await ws.recv())["type"] == "subscription_confirmed"
            bid = await _post(daemon)
            while True:  # wait for the run to finish on the backtest socket
                event = json.loads(await asyncio.wait_for(backtest.recv(), 60))
                if event["type"] == "backtest_complete" and event["data"]["backtest_id"] == bid:
                    break
            await trading.send(json.dumps({"action": "ping"}))
            seen = []
            while True:
                event = json.loads(await asyncio.wait_for(trading.recv(), 10))
                if event["type"] == "pong":
                    return seen
                seen.append(event)
    seen = asyncio.run(main())
    assert all(e["type"] == "trading_update" for e in seen), seen


BAD_INPUTS: list[tuple[Any, str]] = [
    ("this is not json", "invalid JSON"),
    ("[1, 2, 3]", "JSON object"),
    ("42", "JSON object"),
    ("{}", "missing 'action'"),
    ('{"action": "jump"}', "unknown action"),
    ('{"action": "subscribe"}', "missing 'topic'"),
    ('{"action": "subscribe", "topic": "weather"}', "unknown topic"),
    ('{"action": "subscribe", "topic": 7}', "must be a string"),
    ('{"action": "subscribe", "topic": "backtest", "since": "yesterday"}', "'since'"),
    ('{"action": "ping", "pad": "' + "x" * 5000 + '"}', "too long"),
    (b'{"action": "ping"}', "binary"),
]


async def _oversized_frame_closes_1009(daemon: Daemon) -> None:
    """Above the documented 64 KiB hard limit the server refuses the frame and closes (1009)."""
    async with websockets.connect(daemon["ws_url"]) as ws:
        await ws.send("x" * (64 * 1024 + 1))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009


def test_every_bad_input_gets_an_error_and_the_socket_stays_open(daemon: Daemon) -> None:
    qmx_log = daemon["data_dir"] / "logs" / "qmx.log"  # every process's log records
    logs = {path: path.stat().st_size for path in (daemon["log"], qmx_log)}

    async def main() -> None:
        async with websockets.connect(daemon["ws_url"]) as ws:
            with pytest.raises(asyncio.TimeoutError):  # the spec: nothing is sent on connect
                await asyncio.wait_for(ws.recv(), 0.3)
            for bad, words in BAD_INPUTS:
                await ws.send(bad)
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert reply["type"] == "error" and words in reply["error"], (bad, reply)
                await ws.send(json.dumps({"action": "ping"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
            await ws.send(json.dumps({"action": "unsubscribe", "topic": "logs"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert reply["topic"] == "logs" and reply["type"] != "error"
    asyncio.run(main())
    asyncio.run(_oversized_frame_closes_1009(daemon))
    for path, before in logs.items():
        with open(path, "rb") as log:
            log.seek(before)
            text = log.read()
        assert b"Traceback" not in text and b"ERROR" not in text, (path, text[-2000:])


def test_subscribe_since_replays_a_finished_run_in_order(daemon: Daemon) -> None:
    async def main() -> list[dict[str, Any]]:
        async with websockets.connect(daemon["ws_url"], max_size=None) as ws:
            await ws.send(json.dumps({"action": "subscribe", "topic": "backtest"}))
            assert json.loads(await ws.recv())["type"] == "subscription_confirmed"
            # one month: its events fit the run topic's ring buffer
            bid = await _post(daemon, end_date="2023-01-31")
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if event["type"] == "backtest_complete" and event["data"]["backtest_id"] == bid:
                    break
            await ws.send(json.dumps({"action": "unsubscribe", "topic": "backtest"}))
            while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "unsubscription_confirmed":
                pass  # events published before the unsubscribe took effect
            await ws.send(json.dumps({"action": "subscribe", "topic": f"backtest:{bid}", "since": 0}))
            confirmed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert confirmed == {"type": "subscription_confirmed", "topic": f"backtest:{bid}",
                                 "recovered": True}
            replay = []
            while not replay or replay[-1]["type"] != "backtest_complete":
                replay.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            assert all(e["data"]["backtest_id"] == bid for e in replay)
            return replay
    replay = asyncio.run(main())
    assert replay[0]["type"] == "backtest_start"
    assert [e["seq"] for e in replay] == list(range(1, len(replay) + 1))
