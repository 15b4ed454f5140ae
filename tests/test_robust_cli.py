"""`qmx sweep` and the `_full` report of `qmx backtest` from the terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main
from tests.conftest import REPO, SHARED_DATA

EURUSD = str(SHARED_DATA / "EURUSD_H1.csv")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QMX_DATA_DIR", str(tmp_path))
    return tmp_path


def test_sweep_prints_a_ranked_table(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["sweep", "--data", EURUSD, "--symbol", "EURUSD", "--grid", "fast=5:15:5", "--grid", "slow=10:30:10",
               "--top", "3", "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "7 combinations evaluated, 2 skipped, ranked by sharpe_ratio" in out
    lines = [ln for ln in out.splitlines() if ln[:1].isdigit()]
    assert [ln.split()[0] for ln in lines] == ["1", "2", "3"]
    assert "progress 100%" in err


def test_sweep_json_is_the_result_object(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["sweep", "--data", EURUSD, "--symbol", "EURUSD", "--grid", '{"fast": [5, 10], "slow": "20:20:1"}',
               "--objective", "return_pct / max(drawdown, 1)", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["evaluated"] == 2 and result["objective"] == "return_pct / max(drawdown, 1)"
    assert result["results"][0]["objective_value"] >= result["results"][1]["objective_value"]


@pytest.mark.parametrize("argv, message", [
    (["--grid", "fast"], "--grid: `--grid` must be NAME=START:STOP:STEP"),
    (["--grid", '{"fast": [5,'], "--grid: `--grid` JSON object is not valid JSON"),
    (["--grid", '{"fast": []}'], "--grid: `grid.fast` must not be an empty list"),
    (["--grid", "fast=9:1:1"], "--grid: `grid.fast` range needs step > 0"),
    (["--objective", "__import__('os')"], "--objective: `objective` may use only metric names"),
    (["--top", "x"], "--top must be an integer >= 0, got 'x'"),
    (["--variant", "spiced_full"], "--variant must be one of ['vanilla', 'spiced']"),
    (["--timeframe", "H2"], "--timeframe: must be one of"),
    (["--grid", "fast=50", "--grid", "slow=10"], "no valid combination for 'sma_cross'"),
    (["--symbol", "NOPE"], "--symbol/--timeframe/--from/--to: no data for symbol 'NOPE'"),
    (["--strategy", "nope"], "--strategy: must be one of"),
    (["--jobs", "0"], "--jobs must be an integer >= 1 or auto, got '0'"),
    (["--variant", "spiced", "--spiced", "nope=1"], "--spiced nope: unknown option; allowed: ['blocked_regimes'"),
])
def test_bad_arguments_exit_2_with_one_line(argv: list[str], message: str, data_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", *argv]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("qmx sweep: error:")]
    assert any(message in ln for ln in err), err


def test_backtest_full_variant_prints_the_robustness_report(data_dir: Path) -> None:
    # A real `qmx` process, as a user runs it.
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "backtest", "--data", EURUSD, "--symbol", "EURUSD",
         "--variant", "vanilla_full", "--robustness", 'grid={"fast": [5, 10], "slow": [30, 60]}',
         "--robustness", "mc_runs=200", "--robustness", "pbo_blocks=8"],
        cwd=REPO, capture_output=True, text=True, timeout=100, env={**os.environ, "QMX_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Walk-forward (rolling" in out and "resampled 200 times per method" in out
    assert "PBO (CSCV, 8 blocks" in out and "VERDICT:" in out
    # The whole data range and the stitched out-of-sample part, each with its bars.
    assert "vanilla_full sma_cross on EURUSD H1: data 2017-04-19 .. 2018-02-07 (5000 bars); stitched out of sample" in out
    assert "value at risk: " in out and "(losses positive)" not in out


def test_sweep_jobs_runs_parts_in_processes_and_ranks_like_one(data_dir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    grid = ["sweep", "--data", EURUSD, "--symbol", "EURUSD", "--grid", "fast=5:25:5", "--grid", "slow=10:60:10",
            "--objective", "min(return_pct, 0)", "--json"]  # ties (every gain) keep grid order
    # A real process, as a user runs it: its parts are forked processes of its own.
    proc = subprocess.run([sys.executable, "-m", "server.cli", *grid, "--jobs", "2"], cwd=REPO, capture_output=True,
                          text=True, timeout=100, env={**os.environ, "QMX_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    parallel = json.loads(proc.stdout)
    assert main([*grid, "--jobs", "1"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert parallel["processes"] == 2 and one["processes"] == 1
    assert parallel["results"] == one["results"] and parallel["grid"] == one["grid"]
    for key in ("combinations", "evaluated", "skipped", "skipped_examples", "objective", "data"):
        assert parallel[key] == one[key], key
    assert (parallel["evaluated"], parallel["skipped"]) == (24, 6)
    steps = [ln for ln in proc.stderr.splitlines() if ln.startswith("progress ")]
    assert steps[0].startswith("progress 0% (0/120000 bars") and steps[-1].startswith("progress 100% (120000/120000")



def test_sweep_on_a_daemon_ranks_like_a_local_sweep(daemon: dict, capsys: pytest.CaptureFixture[str]) -> None:
    # A real `qmx serve` (2 worker processes) on SYNTH, which every store has.
    grid = ["--symbol", "SYNTH", "--from", "2019-01-01", "--to", "2019-06-30", "--grid", "fast=5,10,20",
            "--grid", "slow=20,40", "--json"]
    assert main(["sweep", *grid, "--server", daemon["url"]]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert main(["sweep", *grid, "--data-dir", str(daemon["data_dir"])]) == 0
    local = json.loads(capsys.readouterr().out)
    assert remote["sweep_id"] and remote["evaluated"] == local["evaluated"] == 5 and remote["skipped"] == 1
    assert [r["params"] for r in remote["results"]] == [r["params"] for r in local["results"]]
    assert [r["metrics"] for r in remote["results"]] == [r["metrics"] for r in local["results"]]


def test_sweep_server_errors(daemon: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--server", daemon["url"], "--data-dir", "x"]) == 2
    assert "--data/--data-dir cannot be used with --server" in capsys.readouterr().err
    assert main(["sweep", "--server", daemon["url"], "--jobs", "2"]) == 2
    assert "--jobs cannot be used with --server" in capsys.readouterr().err
    assert main(["sweep", "--server", "ftp://nowhere"]) == 2
    assert "--server: `url` must be an http(s)://" in capsys.readouterr().err
    assert main(["sweep", "--server", daemon["url"], "--symbol", "NOPE"]) == 2
    assert "qmx sweep: error: --symbol/--timeframe/--from/--to: unknown symbol 'NOPE'" in capsys.readouterr().err


def test_remote_full_backtest_prints_the_robustness_report(daemon: dict, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["backtest", "--server", daemon["url"], "--from", "2019-01-01", "--to", "2019-04-30",
               "--variant", "vanilla_full", "--robustness", 'grid={"fast": [5, 10], "slow": [30]}',
               "--robustness", "in_sample=600", "--robustness", "out_of_sample=300", "--robustness", "mc_runs=100",
               "--robustness", "pbo_blocks=4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Walk-forward (rolling, in-sample 600 bars" in out and "resampled 100 times" in out
    assert "PBO (CSCV, 4 blocks" in out and "VERDICT:" in out


def test_sweep_over_rest_streams_progress_and_stores_ranked_results(daemon: dict) -> None:
    import asyncio  # noqa: PLC0415

    import aiohttp  # noqa: PLC0415

    from tests.fixtures_daemon import api  # noqa: PLC0415

    body = {"symbol": "SYNTH", "timeframe": "H1", "start_date": "2019-01-01", "end_date": "2019-12-31",
            "grid": {"fast": [5, 10, 15, 30], "slow": [20, 40, 60]}, "objective": "min(return_pct, 0)"}
    # Refused up front, naming the field, rather than queued to fail later:
    status, err = api(daemon, "POST", "/api/sweeps", {**body, "variant": "vanilla_full"})
    assert status == 400 and "a sweep runs one of ['vanilla', 'spiced']" in err["errors"]["variant"], err
    status, err = api(daemon, "POST", "/api/sweeps", {**body, "grid": {"fast": [50], "slow": [10]}})
    assert status == 400 and "no valid combination for 'sma_cross'" in err["errors"]["grid"], err

    async def follow() -> tuple[str, list[dict]]:
        async with aiohttp.ClientSession() as session, session.ws_connect(daemon["ws_url"]) as ws:
            await ws.send_json({"action": "subscribe", "topic": "backtest"})  # before submitting: no race
            assert (await ws.receive_json(timeout=10))["type"] == "subscription_confirmed"
            async with session.post(daemon["url"] + "/api/sweeps", json=body) as resp:
                sid = (await resp.json())["sweep_id"]
            frames: list[dict] = []
            while not frames or frames[-1]["type"] not in ("sweep_complete", "sweep_error"):
                frame = await ws.receive_json(timeout=60)
                if (frame.get("data") or {}).get("sweep_id") == sid:
                    frames.append(frame)
            return sid, frames

    sid, frames = asyncio.run(follow())
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "sweep_start" and kinds[-1] == "sweep_complete" and "sweep_progress" in kinds, kinds
    progress = [f["data"]["progress"] for f in frames if f["type"] == "sweep_progress"]
    assert progress == sorted(progress) and progress[-1] == 100.0
    done = frames[-1]["data"]
    assert (done["combinations"], done["evaluated"], done["skipped"]) == (12, 11, 1)
    stored = api(daemon, "GET", f"/api/sweeps/{sid}")[1]
    assert stored["status"] == "completed" and stored["results"]["results"] == done["results"]
    # Ranked by the objective; ties (every gain is 0 here) in grid order, as one local sweep ranks them.
    values = [r["objective_value"] for r in done["results"]]
    assert values == sorted(values, reverse=True)
    ties = [r["params"] for r in done["results"] if r["objective_value"] == 0]
    grid_order = [{"fast": f, "slow": s} for f in (5, 10, 15, 30) for s in (20, 40, 60) if f < s]
    assert len(ties) >= 3 and ties == [p for p in grid_order if p in ties]


def test_a_running_sweep_can_be_cancelled_and_frees_the_workers(daemon: dict) -> None:
    from tests.conftest import eventually  # noqa: PLC0415
    from tests.fixtures_daemon import api  # noqa: PLC0415

    long = {"symbol": "SYNTH", "timeframe": "M1", "variant": "spiced", "strategy": "rsi_reversion",
            "grid": {"period": "7:21:7", "lower": "20:35:5", "upper": "65:80:5"}}  # minutes of work
    status, body = api(daemon, "POST", "/api/sweeps", long)
    assert status == 202, body
    sid = body["sweep_id"]
    eventually(lambda: api(daemon, "GET", f"/api/sweeps/{sid}")[1]["status"] == "running")
    status, body = api(daemon, "DELETE", f"/api/sweeps/{sid}")
    assert (status, body) == (202, {"sweep_id": sid, "status": "cancelling"})
    done = eventually(lambda: (lambda s: s if s["status"] == "cancelled" else None)(
        api(daemon, "GET", f"/api/sweeps/{sid}")[1]), timeout=20)
    assert done["error"] == "Sweep cancelled" and "cancelled by request" in done["error_details"]
    status, body = api(daemon, "DELETE", f"/api/sweeps/{sid}")
    assert status == 409 and "already finished (cancelled)" in body["error"]
    assert api(daemon, "DELETE", "/api/sweeps/nope")[0] == 404
    # Its parts are gone from the workers: the daemon is idle again.
    eventually(lambda: api(daemon, "GET", "/api/health")[1]["running"] == 0, timeout=20)
