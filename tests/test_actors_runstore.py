"""RunStore: the SQLite run store's writes, reads, errors, and survival of a SIGKILL."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actors.runstore import RunStore
from tests.conftest import REPO

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RESULTS = {"metrics": {"profit_factor": 1.2}, "trades": [{"pnl": 1.0}, {"pnl": -0.5}],
           "equity": {"time": ["2020-01-01T00:00:00.000Z"], "equity": [1.0], "drawdown_pct": [0.0]},
           "open_trade": None}
METRICS = {"final_balance": 10_500.0, "total_trades": 2, "win_rate": 50.0, "sharpe_ratio": 1.1,
           "drawdown": 3.0, "return_pct": 5.0, "duration_seconds": 0.2}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(tmp_path / "qmx.sqlite")
    yield s
    s.close()


def test_run_lifecycle_is_stored_with_history_and_split_results(store: RunStore) -> None:
    store.create_run("a", {"symbol": "SYNTH"})
    store.set_status("a", "running")
    store.set_progress("a", 42.5)
    assert store.get_run("a")["progress"] == 42.5
    store.complete_run("a", METRICS, RESULTS)
    run = store.get_run("a")
    assert run["status"] == "completed" and run["metrics"] == METRICS and run["results"] == RESULTS
    assert run["config"] == {"symbol": "SYNTH"} and run["error"] is None
    assert [h["status"] for h in run["status_history"]] == ["queued", "running", "completed"]
    for key in ("created_at", "started_at", "finished_at"):
        assert ISO.match(run[key]), run[key]
    assert store.get_trades("a") == RESULTS["trades"]
    assert store.get_equity("a") == RESULTS["equity"]
    assert store.get_run("nope") is None and store.get_trades("nope") is None


def test_list_filters_by_status_newest_first_and_validates_arguments(store: RunStore) -> None:
    for n in range(3):
        store.create_run(f"r{n}", {})
    store.set_status("r1", "failed", error="boom", error_details="trace")
    assert [r["backtest_id"] for r in store.list_runs()] == ["r2", "r1", "r0"]
    assert [r["backtest_id"] for r in store.list_runs("queued", limit=1)] == ["r2"]
    failed = store.list_runs("failed")
    assert failed[0]["error"] == "boom" and "results" not in failed[0]
    with pytest.raises(ValueError, match="`status` must be one of"):
        store.list_runs("done")
    with pytest.raises(ValueError, match="`limit`"):
        store.list_runs(limit=0)
    with pytest.raises(ValueError, match="`kind`"):
        store.create_run("x", {}, kind="job")


def test_sweeps_are_stored_apart_from_backtests(store: RunStore) -> None:
    store.create_run("s", {"symbol": "SYNTH"}, kind="sweep", extra={"grid": {"fast": [5]},
                                                                      "objective": "sharpe_ratio"})
    store.complete_run("s", {"sharpe_ratio": 1.0}, {"ranked": [{"params": {"fast": 5}}]})
    assert store.list_runs() == [] and [s["sweep_id"] for s in store.list_sweeps()] == ["s"]
    sweep = store.get_sweep("s")
    assert sweep["grid"] == {"fast": [5]} and sweep["objective"] == "sharpe_ratio"
    assert sweep["results"]["ranked"] == [{"params": {"fast": 5}}]
    assert store.get_sweep("missing") is None


def test_threads_each_get_their_own_connection(store: RunStore) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(20):
                store.create_run(f"t{n}-{k}", {"n": n})
                store.list_runs(limit=5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(store.list_runs(limit=500)) == 80


WRITER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from actors.runstore import RunStore
s = RunStore(sys.argv[1])
s.create_run("done", {"symbol": "SYNTH"})
s.set_status("done", "running")
s.complete_run("done", {"total_trades": 2}, {"trades": [{"pnl": 1}, {"pnl": 2}], "equity": None})
s.create_run("inflight", {"symbol": "SYNTH"})
s.set_status("inflight", "running")
print("written", flush=True)
time.sleep(60)
"""


def test_store_survives_sigkill_of_the_writer_and_marks_inflight_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "qmx.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(REPO)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.kill()  # SIGKILL while it holds the database open
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    store = RunStore(path)
    try:
        assert store.get_run("done")["status"] == "completed"
        assert store.get_trades("done") == [{"pnl": 1}, {"pnl": 2}]
        assert store.mark_interrupted("test restart") == ["inflight"]
        run = store.get_run("inflight")
        assert run["status"] == "interrupted" and run["error_details"] == "test restart"
        assert [h["status"] for h in run["status_history"]] == ["queued", "running", "interrupted"]
    finally:
        store.close()
