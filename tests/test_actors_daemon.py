"""The actor daemon with real processes: spec events, parallelism, queueing, cancel, faults, stop.

One daemon (2 workers, no trading process) is shared by the tests that leave it healthy; tests
that kill workers or stop the daemon start their own.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from actors import Daemon
from tests.conftest import REPO, eventually

START = {"backtest_id", "variant", "symbol", "timeframe", "start_date", "end_date", "timestamp"}
PROGRESS = {"backtest_id", "progress", "status", "bars_processed", "total_bars", "current_date",
            "trades_count", "current_pnl", "timestamp"}
LOG = {"backtest_id", "timestamp", "level", "message", "module", "function", "line", "logger_name"}
COMPLETE = {"backtest_id", "final_balance", "total_trades", "win_rate", "sharpe_ratio", "drawdown",
            "return_pct", "duration_seconds", "timestamp", "results"}
ERROR = {"backtest_id", "error", "error_details", "timestamp"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FINAL = ("backtest_complete", "backtest_error")

STRATEGIES = '''
import time
from engine.strategy import Param, Strategy

class Slow(Strategy):
    name = "slow"
    params = (Param("delay", 0.002, float, "seconds per bar", min=0.0),)

    def init(self, bars):
        self.warmup = 1

    def next(self, i, position):
        time.sleep(self.delay)
        return 1 if i % 40 < 20 else -1

class Boom(Strategy):
    name = "boom"

    def init(self, bars):
        self.warmup = 1

    def next(self, i, position):
        if i > 50:
            return 1 / 0
        return 0

class Quit(Boom):
    name = "quit"

    def next(self, i, position):
        raise SystemExit("strategy gave up")
'''


class Collector:
    """The ``deliver`` callback: keeps every frame with its client ids, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: list[tuple[str, tuple[int, ...], float]] = []
        self.bench_last: int | None = None  # set: only count bench frames, and those with n == it
        self.bench_frames = self.bench_ends = 0

    def __call__(self, batch: list[tuple[str, tuple[int, ...]]]) -> None:
        now = time.monotonic()
        with self.lock:
            for f, ids in batch:
                if f.startswith('{"type":"bench_event"') and self.bench_last is not None:
                    self.bench_frames += 1  # a flood: count, do not keep
                    self.bench_ends += f'"n":{self.bench_last},' in f
                else:
                    self.frames.append((f, ids, now))

    def messages(self, client: int = 1) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(f) for f, ids, _ in self.frames if client in ids]

    def of(self, bid: str, client: int = 1) -> list[dict[str, Any]]:
        return [m for m in self.messages(client) if (m.get("data") or {}).get("backtest_id") == bid]

    def final(self, bid: str) -> dict[str, Any] | None:
        return next((m for m in self.of(bid) if m["type"] in FINAL), None)

    def wait_final(self, bid: str, timeout: float = 30) -> dict[str, Any]:
        return eventually(lambda: self.final(bid), timeout=timeout)

    def arrival(self, bid: str, etype: str) -> float:
        with self.lock:
            for f, _, t in self.frames:
                m = json.loads(f)
                if m.get("type") == etype and m["data"].get("backtest_id") == bid:
                    return t
        raise AssertionError(f"no {etype} for {bid}")


@pytest.fixture(scope="module")
def strategies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("strats") / "test_strats.py"
    path.write_text(STRATEGIES)
    return path


def _start(data_dir: Path, workers: int = 2, **kw: Any) -> tuple[Daemon, Collector]:
    col = Collector()
    d = Daemon(data_dir, workers, col, children=[], **kw)
    d.start()
    d.subscribe(1, "backtest")
    d.subscribe(1, "logs")
    eventually(lambda: len(col.messages()) >= 2)
    return d, col


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Collector]]:
    d, col = _start(tmp_path_factory.mktemp("daemon"), diagnostics=True)
    try:
        yield d, col
    finally:
        d.stop()


@pytest.fixture
def own(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()


def slow(strategies: Path, delay: float = 0.005, end: str = "2020-03-31") -> dict[str, Any]:
    return {"symbol": "SYNTH", "timeframe": "H1", "start_date": "2020-01-01", "end_date": end,
            "strategy": f"{strategies}:Slow", "params": {"delay": delay}}


FAST = {"symbol": "SYNTH", "timeframe": "H1", "start_date": "2020-01-01", "end_date": "2020-06-30"}


def test_backtest_streams_exactly_the_spec_events_then_the_store_has_it(shared: tuple[Daemon, Collector]) -> None:
    d, col = shared
    bid = d.submit_backtest(dict(FAST, variant="vanilla"))
    assert d.store is not None and d.store.get_run(bid)["status"] in ("queued", "running", "completed")
    final = col.wait_final(bid)
    assert final["type"] == "backtest_complete", final
    events = col.of(bid)
    kinds = [m["type"] for m in events]
    assert kinds[0] == "backtest_start" and kinds[-1] == "backtest_complete"
    assert "log_entry" in kinds  # trade logs reach the run's topic before its final event
    by_type: dict[str, list[dict[str, Any]]] = {}
    for m in events:
        assert set(m) == {"type", "data", "topic", "seq"}
        by_type.setdefault(m["type"], []).append(m["data"])
    expected = {"backtest_start": START, "backtest_progress": PROGRESS, "log_entry": LOG,
                "backtest_complete": COMPLETE}
    for etype, datas in by_type.items():
        for data in datas:
            assert set(data) == expected[etype], etype
            assert ISO.match(data["timestamp"]), data["timestamp"]
    start = by_type["backtest_start"][0]
    assert (start["symbol"], start["timeframe"], start["variant"]) == ("SYNTH", "H1", "vanilla")
    assert (start["start_date"], start["end_date"]) == ("2020-01-01", "2020-06-30")
    progress = [p["progress"] for p in by_type["backtest_progress"]]
    assert progress[0] == 0.0 and progress[-1] == 100.0 and progress == sorted(progress)
    last = by_type["backtest_progress"][-1]
    assert last["status"] == f"Processing bar {last['total_bars']}/{last['total_bars']}"
    log = next(e for e in by_type["log_entry"] if e["message"].startswith("Trade executed"))
    assert log["logger_name"] == f"backtest.{bid}" and log["level"] == "INFO"
    source = REPO / "engine" / f"{log['module']}.py"  # true origin: the engine's logging call
    lines = source.read_text().splitlines()
    assert "log" in lines[log["line"] - 1] and f"def {log['function']}(" in "\n".join(lines[:log["line"]])
    done = by_type["backtest_complete"][0]
    assert done["total_trades"] > 0 and isinstance(done["results"], dict)
    # the "backtest" topic numbers every frame: strictly increasing seq
    seqs = [m["seq"] for m in col.messages() if "seq" in m and m["type"] != "log_entry"
            or (m["type"] == "log_entry" and "backtest_id" in m["data"])]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    run = d.store.get_run(bid)
    assert run["status"] == "completed" and run["progress"] == 100.0
    assert run["metrics"]["total_trades"] == done["total_trades"]
    assert [h["status"] for h in run["status_history"]] == ["queued", "running", "completed"]
    assert len(d.store.get_trades(bid)) == done["total_trades"]
    assert len(d.store.get_equity(bid)["equity"]) == len(run["results"]["equity"]["equity"]) > 0
    # the per-run topic replays the whole run from seq 0
    d.subscribe(2, f"backtest:{bid}", since=0)
    replay = eventually(lambda: len(col.messages(2)) == len(events) + 1 and col.messages(2))
    assert replay[0] == {"type": "subscription_confirmed", "topic": f"backtest:{bid}", "recovered": True}
    assert [m["type"] for m in replay[1:]] == kinds
    assert [m["seq"] for m in replay[1:]] == list(range(1, len(kinds) + 1))


def test_start_event_reports_the_real_data_range_when_dates_are_left_empty(
        shared: tuple[Daemon, Collector]) -> None:
    from engine import DataStore

    d, col = shared
    bid = d.submit_backtest({"symbol": "SYNTH", "timeframe": "D1"})
    assert col.wait_final(bid)["type"] == "backtest_complete"
    row = next(r for r in DataStore(d.data_dir).list() if (r["symbol"], r["timeframe"]) == ("SYNTH", "D1"))
    start = next(m["data"] for m in col.of(bid) if m["type"] == "backtest_start")
    assert (start["start_date"], start["end_date"]) == (row["start"], row["end"])


def test_two_backtests_run_in_parallel_on_two_workers(shared: tuple[Daemon, Collector], strategies: Path) -> None:
    d, col = shared
    ids = [d.submit_backtest(slow(strategies, 0.002, "2020-01-20")) for _ in range(2)]
    for bid in ids:
        assert col.wait_final(bid)["type"] == "backtest_complete"
    assert d.store is not None
    a, b = (d.store.get_run(i) for i in ids)
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"], (a, b)


def test_queue_waits_for_a_free_worker_and_cancel_works_queued_and_running(
        shared: tuple[Daemon, Collector], strategies: Path) -> None:
    d, col = shared
    assert d.store is not None
    busy = [d.submit_backtest(slow(strategies)) for _ in range(2)]
    waiting = d.submit_backtest(FAST)
    doomed = d.submit_backtest(FAST)
    eventually(lambda: all(d.store.get_run(b)["status"] == "running" for b in busy))
    # in the engine (a progress event), not still loading bars after backtest_start
    eventually(lambda: all(any(m["type"] == "backtest_progress" for m in col.of(b)) for b in busy))
    assert d.store.get_run(waiting)["status"] == "queued"
    assert d.health()["queue_length"] == 2 and d.health()["running"] == 2
    instant = d.submit_backtest(FAST)
    assert d.cancel_backtest(instant) is True  # at once: the supervisor may not have it yet
    assert col.wait_final(instant)["data"]["error"] == "Backtest cancelled"
    assert d.cancel_backtest(doomed) is True
    err = col.wait_final(doomed)
    assert (err["type"], err["data"]["error"]) == ("backtest_error", "Backtest cancelled")
    assert set(err["data"]) == ERROR
    run = d.store.get_run(doomed)
    assert run["status"] == "cancelled" and run["started_at"] is None
    t0 = time.monotonic()
    assert d.cancel_backtest(busy[0]) is True
    err = col.wait_final(busy[0], timeout=5)
    assert col.arrival(busy[0], "backtest_error") - t0 < 1.0
    assert err["data"]["error"] == "Backtest cancelled" and "cancelled by request" in err["data"]["error_details"]
    # Slow sleeps 5 ms per bar, so the engine's next check between chunks of bars is far away:
    # this is the hard-kill path, and a fresh worker takes the slot (no crash budget spent).
    assert "was killed" in err["data"]["error_details"]
    assert col.wait_final(waiting)["type"] == "backtest_complete"  # it got the freed worker
    assert d.cancel_backtest(busy[1]) is True
    col.wait_final(busy[1], timeout=5)
    assert d.store.get_run(busy[0])["status"] == d.store.get_run(busy[1])["status"] == "cancelled"
    assert d.cancel_backtest(busy[1]) is False  # already finished
    assert d.cancel_backtest("no-such-id") is False
    eventually(lambda: d.health()["workers_ready"] == 2)
    assert d.health()["crash_budget"]["deaths_in_window"] == 0


def test_strategy_exception_ends_the_run_and_the_worker_takes_the_next_job(
        shared: tuple[Daemon, Collector], strategies: Path) -> None:
    d, col = shared
    deaths = d.health()["crash_budget"]["deaths_in_window"]
    bad = [d.submit_backtest(dict(FAST, strategy=f"{strategies}:Boom")) for _ in range(2)]
    # sys.exit() in a strategy is a failed run too, not a worker stuck with a dead actor
    quit_ = [d.submit_backtest(dict(FAST, strategy=f"{strategies}:Quit")) for _ in range(2)]
    good = [d.submit_backtest(FAST) for _ in range(2)]
    for bid in quit_:
        err = col.wait_final(bid)
        assert err["data"]["error"] == "Strategy execution failed: SystemExit: strategy gave up"
    for bid in bad:
        err = col.wait_final(bid)
        assert err["type"] == "backtest_error" and set(err["data"]) == ERROR
        assert err["data"]["error"] == "Strategy execution failed: ZeroDivisionError: division by zero"
        assert "Traceback" in err["data"]["error_details"] and "1 / 0" in err["data"]["error_details"]
        assert d.store is not None and d.store.get_run(bid)["status"] == "failed"
    for bid in good:
        assert col.wait_final(bid)["type"] == "backtest_complete"
    assert d.health()["crash_budget"]["deaths_in_window"] == deaths  # no process died


def test_sweep_is_split_over_the_workers_and_stored_ranked(shared: tuple[Daemon, Collector]) -> None:
    d, col = shared
    sid = d.submit_sweep(dict(FAST), {"fast": [5, 10, 30], "slow": [20, 50]}, "sharpe_ratio")

    def sweep() -> list[dict[str, Any]]:
        return [m for m in col.messages() if (m.get("data") or {}).get("sweep_id") == sid]

    done = eventually(lambda: next((m for m in sweep() if m["type"] in ("sweep_complete", "sweep_error")),
                                   None), timeout=30)
    assert done["type"] == "sweep_complete", done
    start = next(m for m in sweep() if m["type"] == "sweep_start")["data"]
    assert start["combinations"] == 6 and start["parts"] == 2 and start["strategy"] == "sma_cross"
    assert (done["data"]["evaluated"], done["data"]["skipped"]) == (5, 1)  # fast 30 >= slow 20
    values = [r["objective_value"] for r in done["data"]["results"]]
    assert values == sorted(values, reverse=True) and done["data"]["best"] == done["data"]["results"][0]
    assert d.store is not None
    stored = d.store.get_sweep(sid)
    assert stored["status"] == "completed" and stored["results"]["results"] == done["data"]["results"]
    assert stored["grid"] == {"fast": [5, 10, 30], "slow": [20, 50]}
    bad = d.submit_sweep(dict(FAST), {"fast": [50], "slow": [10]}, "sharpe_ratio")  # none valid
    err = eventually(lambda: next((m for m in col.messages() if m["type"] == "sweep_error"
                                   and m["data"]["sweep_id"] == bad), None))
    assert set(err["data"]) == {"sweep_id", "error", "error_details", "timestamp"}
    assert err["data"]["error"].startswith("Invalid grid") and "no valid combination" in err["data"]["error"]
    assert d.store.get_sweep(bad)["status"] == "failed"


def test_bad_arguments_are_refused_naming_the_argument(shared: tuple[Daemon, Collector], tmp_path: Path) -> None:
    from engine import ConfigError

    d, col = shared
    with pytest.raises(ConfigError, match="symbol"):
        d.submit_backtest({"symbol": "", "timeframe": "H2"})
    with pytest.raises(ValueError, match="`workers` must be an integer >= 1"):
        Daemon(tmp_path, 0, col)
    with pytest.raises(ValueError, match="`since`"):
        d.subscribe(1, "backtest", since=-1)
    with pytest.raises(ValueError, match="`grid`"):
        d.submit_sweep(dict(FAST), {}, "sharpe_ratio")
    with pytest.raises(ValueError, match="`count`"):
        d.submit_burst(0)
    d.subscribe(9, "bogus")
    err = eventually(lambda: col.messages(9))[0]
    assert err["type"] == "error" and "'backtest'" in err["error"]


def test_burst_events_reach_the_bench_topic_in_order(shared: tuple[Daemon, Collector]) -> None:
    d, col = shared
    d.subscribe(4, "bench")
    eventually(lambda: col.messages(4))
    d.submit_burst(3000, None, 16)
    got = eventually(lambda: len(col.messages(4)) == 3001 and col.messages(4), timeout=20)
    assert [m["data"]["n"] for m in got[1:]] == list(range(3000))
    assert set(got[1]["data"]) == {"n", "emit_ns", "pad"} and len(got[1]["data"]["pad"]) == 16


def _worker_running(d: Daemon, bid: str) -> dict[str, Any] | None:
    return next((c for c in d.health()["children"] if c["job_id"] == bid), None)


def test_sigkill_of_a_worker_fails_its_run_within_a_second_and_others_continue(
        tmp_path: Path, own: list[Daemon], strategies: Path) -> None:
    d, col = _start(tmp_path / "data")
    own.append(d)
    victim = d.submit_backtest(slow(strategies))
    other = d.submit_backtest(slow(strategies, 0.002, "2020-01-25"))
    child = eventually(lambda: _worker_running(d, victim) if col.of(victim) else None)
    t0 = time.monotonic()
    os.kill(child["pid"], signal.SIGKILL)
    err = col.wait_final(victim, timeout=5)
    assert col.arrival(victim, "backtest_error") - t0 < 1.0
    assert err["data"]["error"] == "worker process died: killed by signal SIGKILL (exit code -9)"
    assert d.store is not None and d.store.get_run(victim)["status"] == "failed"
    assert col.wait_final(other)["type"] == "backtest_complete"
    eventually(lambda: d.health()["workers_ready"] == 2)
    pids = {c["pid"] for c in d.health()["children"] if c["name"] == "worker"}
    assert child["pid"] not in pids and len(pids) == 2
    assert col.wait_final(d.submit_backtest(FAST))["type"] == "backtest_complete"
    assert d.health()["crash_budget"]["deaths_in_window"] == 1 and not d.health()["degraded"]


def test_sigkill_during_an_event_flood_leaves_other_processes_streaming(tmp_path: Path, own: list[Daemon]) -> None:
    # Every queue has one writer: a worker killed mid-write cannot wedge a queue others use.
    d, col = _start(tmp_path / "data", diagnostics=True)
    own.append(d)
    n = 40_000
    col.bench_last = n - 1
    d.subscribe(5, "bench")
    victim, survivor = d.submit_burst(n, None, 64), d.submit_burst(n, None, 64)
    child = eventually(lambda: col.bench_frames > 1000 and _worker_running(d, victim))
    os.kill(child["pid"], signal.SIGKILL)
    eventually(lambda: col.bench_ends >= 1, timeout=30)  # the survivor's burst got through whole
    eventually(lambda: d.health()["workers_ready"] == 2)
    bid = d.submit_backtest(FAST)
    assert col.wait_final(bid)["type"] == "backtest_complete"
    assert any(m["type"] == "log_entry" for m in col.of(bid))
    assert survivor != victim


def test_crash_budget_stops_respawning_and_reports_degraded(tmp_path: Path, own: list[Daemon]) -> None:
    d, col = _start(tmp_path / "data", workers=1, crash_limit=1)
    own.append(d)

    def worker_pid() -> int | None:
        c = next(c for c in d.health()["children"] if c["name"] == "worker")
        return c["pid"] if c["ready"] else None

    first = eventually(worker_pid)
    os.kill(first, signal.SIGKILL)
    second = eventually(lambda: worker_pid() not in (None, first) and worker_pid())
    os.kill(second, signal.SIGKILL)
    eventually(lambda: d.health()["degraded"])
    h = d.health()
    assert h["workers_alive"] == 0 and h["crash_budget"]["exhausted"] and h["status"] == "degraded"
    logs = eventually(lambda: [m for m in col.messages() if m["type"] == "log_entry"
                               and "crash budget exhausted" in m["data"]["message"]])
    assert logs[0]["data"]["level"] == "ERROR" and "backtest_id" not in logs[0]["data"]
    err = col.wait_final(d.submit_backtest(FAST), timeout=5)
    assert err["data"]["error"] == "No backtest workers available"


def test_stop_interrupts_running_runs_and_a_restart_keeps_every_finished_run(
        tmp_path: Path, own: list[Daemon], strategies: Path) -> None:
    data = tmp_path / "data"
    d, col = _start(data)
    done = d.submit_backtest(FAST)
    assert col.wait_final(done)["type"] == "backtest_complete"
    running = d.submit_backtest(slow(strategies))
    queued = [d.submit_backtest(slow(strategies)) for _ in range(2)]
    eventually(lambda: col.of(running))
    t0 = time.monotonic()
    d.stop()
    assert time.monotonic() - t0 < 8.0
    err = col.final(running)
    assert err is not None and err["type"] == "backtest_error"
    assert "shutting down" in err["data"]["error"]
    d2, _ = _start(data)
    own.append(d2)
    assert d2.store is not None
    assert d2.store.get_run(done)["status"] == "completed"
    assert d2.store.get_run(done)["results"]["trades"] == d2.store.get_trades(done)
    for bid in [running, *queued]:
        assert d2.store.get_run(bid)["status"] == "interrupted"
    assert {r["backtest_id"] for r in d2.store.list_runs()} == {done, running, *queued}
    assert [r["backtest_id"] for r in d2.store.list_runs("completed")] == [done]


KILLED = """
import sys, time
sys.path.insert(0, sys.argv[3])
from actors import Daemon

if __name__ == "__main__":
    d = Daemon(sys.argv[1], 2, lambda batch: None, children=[])
    d.start()
    done = d.submit_backtest({"symbol": "SYNTH", "timeframe": "H1", "start_date": "2020-01-01",
                              "end_date": "2020-03-31"})
    while d.store.get_run(done)["status"] != "completed":
        time.sleep(0.02)
    running = d.submit_backtest({"symbol": "SYNTH", "timeframe": "H1", "start_date": "2020-01-01",
                                 "end_date": "2020-03-31", "strategy": sys.argv[2] + ":Slow",
                                 "params": {"delay": 0.01}})
    while d.store.get_run(running)["status"] != "running":
        time.sleep(0.02)
    print(done, running, flush=True)
    time.sleep(120)
"""


def test_kill_9_of_the_daemon_process_ends_its_children_and_a_restart_keeps_the_runs(
        tmp_path: Path, own: list[Daemon], strategies: Path) -> None:
    import subprocess
    import sys

    import psutil

    script = tmp_path / "killed_daemon.py"
    script.write_text(KILLED)
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, str(script), str(data), str(strategies), str(REPO)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    children: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        done, running = proc.stdout.readline().split()
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait(10)

        def gone() -> bool:
            return all(not c.is_running() or c.status() == psutil.STATUS_ZOMBIE for c in children)

        eventually(gone, timeout=5)  # orphaned children notice and exit by themselves
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for c in children:
            if c.is_running():
                c.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    d, _ = _start(data)
    own.append(d)
    assert d.store is not None and d.interrupted_at_start == [running]
    run = d.store.get_run(done)
    assert run["status"] == "completed" and run["results"]["trades"] and run["metrics"]["total_trades"] > 0
    assert d.store.get_run(running)["status"] == "interrupted"
