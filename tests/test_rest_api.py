"""REST under /api against a real `qmx serve`: status codes, error bodies, runs, sweeps, cancel."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets

from tests.conftest import eventually
from tests.fixtures_daemon import Daemon, api
from tests.test_e2e_stream import LONG, REQUEST, check_event, submit

pytestmark = pytest.mark.e2e


def test_invalid_body_names_each_bad_field_and_what_is_allowed(daemon: Daemon) -> None:
    status, body = api(daemon, "POST", "/api/backtests",
                       {"symbol": "", "timeframe": "H2", "variant": "sour", "start_date": "2023-13-01",
                        "initial_balance": -5, "colour": "red"})
    assert status == 400 and body["error"] == "invalid request"
    errors = body["errors"]
    assert {"symbol", "timeframe", "variant", "start_date", "initial_balance", "colour"} <= set(errors)
    assert "H1" in errors["timeframe"] and "spiced" in errors["variant"]
    assert "YYYY-MM-DD" in errors["start_date"] and "> 0" in errors["initial_balance"]


def test_malformed_json_and_non_object_bodies_are_400(daemon: Daemon) -> None:
    status, body = api(daemon, "POST", "/api/backtests", b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = api(daemon, "POST", "/api/backtests", [1, 2])
    assert status == 400 and "body" in body["errors"]
    status, body = api(daemon, "POST", "/api/backtests", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested too deeply" in body["error"]  # not a 500
    status, body = api(daemon, "POST", "/api/sweeps", b" " * (1024 * 1024 + 1))
    assert status == 413 and "at most 1048576 bytes" in body["error"]


def test_unknown_symbol_is_404_and_empty_range_is_422(daemon: Daemon) -> None:
    status, body = api(daemon, "POST", "/api/backtests", {**REQUEST, "symbol": "NOPE"})
    assert status == 404 and "NOPE" in body["error"] and "SYNTH" in body["error"]
    status, body = api(daemon, "POST", "/api/backtests",
                       {**REQUEST, "start_date": "1950-01-01", "end_date": "1950-02-01"})
    assert status == 422 and "no" in body["error"].lower() and "SYNTH" in body["error"]


def test_full_variant_too_short_for_its_windows_is_refused_at_once(daemon: Daemon) -> None:
    short = {**REQUEST, "variant": "spiced_full", "timeframe": "H4",
             "start_date": "2020-01-01", "end_date": "2020-02-29"}
    status, body = api(daemon, "POST", "/api/backtests", short)
    assert status == 422, body
    assert "in_sample" in body["errors"]["robustness"] and "100 bars" in body["errors"]["robustness"]
    status, listed = api(daemon, "GET", "/api/backtests")
    assert all(r.get("config", {}).get("end_date") != "2020-02-29" for r in listed.get("backtests", []))


def test_unknown_routes_and_methods_answer_json(daemon: Daemon) -> None:
    status, body = api(daemon, "GET", "/api/nothing-here")
    assert status == 404 and "/api/nothing-here" in body["error"]
    status, body = api(daemon, "PUT", "/api/backtests")
    assert status == 405 and "PUT" in body["error"] and "POST" in body["error"]
    status, body = api(daemon, "GET", "/api/backtests/no-such-id")
    assert status == 404 and "no-such-id" in body["error"]
    for suffix in ("/trades", "/equity"):
        assert api(daemon, "GET", f"/api/backtests/no-such-id{suffix}")[0] == 404
    assert api(daemon, "DELETE", "/api/backtests/no-such-id")[0] == 404
    status, body = api(daemon, "GET", "/api/backtests?status=happy")
    assert status == 400 and "completed" in body["error"]


def test_completed_run_has_results_trades_equity_and_cannot_be_cancelled(daemon: Daemon) -> None:
    bid = submit(daemon)
    run = eventually(lambda: _finished(daemon, bid), timeout=60)
    assert run["status"] == "completed", run
    assert run["results"]["trades"] and run["metrics"]["total_trades"] == len(run["results"]["trades"])
    status, trades = api(daemon, "GET", f"/api/backtests/{bid}/trades")
    assert status == 200 and trades["trades"] == run["results"]["trades"]
    status, equity = api(daemon, "GET", f"/api/backtests/{bid}/equity")
    assert status == 200 and len(equity["equity"]["time"]) == len(equity["equity"]["equity"]) > 0
    status, listed = api(daemon, "GET", "/api/backtests?status=completed")
    assert status == 200 and bid in [r["backtest_id"] for r in listed["backtests"]]
    status, body = api(daemon, "DELETE", f"/api/backtests/{bid}")
    assert status == 409 and "completed" in body["error"]


def _finished(daemon: Daemon, bid: str) -> dict[str, Any] | None:
    status, run = api(daemon, "GET", f"/api/backtests/{bid}")
    assert status == 200
    return run if run["status"] not in ("queued", "running") else None


async def _cancel_and_watch(daemon: Daemon) -> tuple[float, dict[str, Any]]:
    async with websockets.connect(daemon["ws_url"]) as ws:
        await ws.send(json.dumps({"action": "subscribe", "topic": "backtest"}))
        assert json.loads(await ws.recv())["type"] == "subscription_confirmed"
        bid = await asyncio.to_thread(submit, daemon, **LONG)
        while True:  # cancel once it is really running
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if event["type"] == "backtest_progress" and event["data"]["backtest_id"] == bid:
                break
        t0 = time.monotonic()
        status, body = await asyncio.to_thread(api, daemon, "DELETE", f"/api/backtests/{bid}")
        assert status == 202 and body["backtest_id"] == bid, body
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if event["data"].get("backtest_id") == bid and event["type"] in (
                    "backtest_error", "backtest_complete"):
                return time.monotonic() - t0, event


def test_delete_cancels_a_running_backtest_within_a_second(daemon: Daemon) -> None:
    elapsed, event = asyncio.run(_cancel_and_watch(daemon))
    assert event["type"] == "backtest_error" and "cancel" in event["data"]["error"].lower()
    check_event(event)
    assert elapsed < 1.0, elapsed
    bid = event["data"]["backtest_id"]
    assert eventually(lambda: _finished(daemon, bid))["status"] == "cancelled"


def test_sweep_is_queued_ranked_and_listed(daemon: Daemon) -> None:
    status, body = api(daemon, "POST", "/api/sweeps", {**REQUEST, "grid": {"fast": [5, 10], "slow": [20, 40]},
                                                       "objective": "return_pct"})
    assert status == 202 and body["status"] == "queued", body
    sid = body["sweep_id"]
    sweep = eventually(lambda: (lambda s: s if s[1]["status"] not in ("queued", "running") else None)(
        api(daemon, "GET", f"/api/sweeps/{sid}")), timeout=90)[1]
    assert sweep["status"] == "completed" and sweep["objective"] == "return_pct", sweep
    assert sid in [s["sweep_id"] for s in api(daemon, "GET", "/api/sweeps")[1]["sweeps"]]
    status, body = api(daemon, "POST", "/api/sweeps", {**REQUEST, "grid": {}, "objective": "__import__"})
    assert status == 400 and {"grid", "objective"} <= set(body["errors"])


def test_health_strategies_and_openapi(daemon: Daemon) -> None:
    status, health = api(daemon, "GET", "/api/health")
    assert status == 200 and health["uptime_seconds"] > 0 and health["version"]
    assert health["websocket"]["clients"] >= 0
    status, body = api(daemon, "GET", "/api/strategies")
    assert status == 200 and "sma_cross" in [s["name"] for s in body["strategies"]]
    status, doc = api(daemon, "GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    expected = {("/api/backtests", "post"), ("/api/backtests", "get"), ("/api/backtests/{id}", "get"),
                ("/api/backtests/{id}", "delete"), ("/api/backtests/{id}/trades", "get"),
                ("/api/backtests/{id}/equity", "get"), ("/api/backtests/{id}/report", "get"),
                ("/api/sweeps", "post"), ("/api/sweeps", "get"), ("/api/sweeps/{id}", "get"),
                ("/api/data", "get"), ("/api/data", "post"), ("/api/health", "get"),
                ("/api/strategies", "get"), ("/api/openapi.json", "get"), ("/api/bots", "get"),
                ("/api/bots", "post"), ("/api/bots/{id}", "delete"), ("/api/trading/kill", "post"),
                ("/ws", "get")}
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert expected <= listed, sorted(expected - listed)
    assert all(op["summary"] for ops in doc["paths"].values() for op in ops.values())
    assert "400" in doc["paths"]["/api/backtests"]["post"]["responses"]
