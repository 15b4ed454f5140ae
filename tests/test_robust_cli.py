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
    assert "Walk-forward (rolling" in out and "Monte Carlo (200 runs" in out
    assert "PBO (CSCV, 8 blocks" in out and "VERDICT:" in out



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
    assert main(["sweep", "--server", "ftp://nowhere"]) == 2
    assert "--server: `url` must be an http(s)://" in capsys.readouterr().err
    assert main(["sweep", "--server", daemon["url"], "--symbol", "NOPE"]) == 2
    assert "qmx sweep: error: --symbol/--timeframe/--from/--to: unknown symbol 'NOPE'" in capsys.readouterr().err
