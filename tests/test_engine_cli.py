"""`qmx backtest`: exit codes, one-line errors naming options, --json shape, progress, banners."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main
from tests.conftest import REPO, SHARED_DATA

EURUSD = str(SHARED_DATA / "EURUSD_H1.csv")
#: the spec's backtest_complete data fields
SPEC_FIELDS = {"backtest_id", "final_balance", "total_trades", "win_rate", "sharpe_ratio", "drawdown",
               "return_pct", "duration_seconds", "timestamp", "results"}


def test_bad_arguments_one_line_each_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["backtest", "--data-dir", str(tmp_path), "--timeframe", "H2", "--param", "fast",
                 "--balance", "x", "--variant", "foo", "--size-unit", "bars", "--from", "2023-13-01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "qmx backtest: error: --param must be NAME=VALUE, got 'fast'",
        "qmx backtest: error: --balance must be a number, got 'x'",
        "qmx backtest: error: --timeframe: must be one of ['M1', 'M5', 'M15', 'M30', 'H1', 'H4', 'D1'], got 'H2'",
        "qmx backtest: error: --variant: must be one of ['vanilla', 'spiced', 'vanilla_full', 'spiced_full'], "
        "got 'foo'",
        "qmx backtest: error: --from: must be a date YYYY-MM-DD, got '2023-13-01'",
        "qmx backtest: error: --size-unit: must be one of ['units', 'lots'], got 'bars'",
    ]


@pytest.mark.parametrize("argv, expected", [
    (["--param", "fast=30"], "--param fast: must be < slow (20), got 30"),
    (["--param", "fats=3"], "--param fats: unknown parameter of sma_cross; allowed: ['fast', 'mode', 'slow', "
                            "'stop_loss_pct', 'take_profit_pct']"),
    (["--strategy", "nope"], "--strategy: must be one of ['bollinger_reversion', 'donchian_breakout', "
                             "'rsi_reversion', 'sma_cross'] or 'path/to/file.py:ClassName', got 'nope'"),
    (["--symbol", "NOPE"], "--symbol/--timeframe/--from/--to: "),
    (["--data", "missing.csv"], "--data: file 'missing.csv' does not exist or is not a file"),
    (["--spread", "-1"], "--spread: must be >= 0.0, got -1.0"),
])
def test_each_bad_argument_is_named(argv: list[str], expected: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backtest", "--data-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"qmx backtest: error: {expected}")


def test_every_bad_field_is_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Strategy, spiced and robustness options are checked even when a basic field is wrong too."""
    code = main(["backtest", "--data-dir", str(tmp_path), "--timeframe", "X", "--param", "fast=abc",
                 "--spiced", "kelly_cap=3", "--from", "2023-05-01", "--to", "2023-01-01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [
        "qmx backtest: error: --timeframe: must be one of ['M1', 'M5', 'M15', 'M30', 'H1', 'H4', 'D1'], got 'X'",
        "qmx backtest: error: --to: must not be before --from (2023-05-01), got '2023-01-01'",
        "qmx backtest: error: --param fast: must be an integer in [1, 100000], got 'abc'",
        "qmx backtest: error: --spiced kelly_cap: must be in (0, 1], got 3",
    ]


def test_data_file_is_named_after_itself_never_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real bars from --data are never labelled SYNTH; a coarser --timeframe resamples the file."""
    assert main(["backtest", "--data", EURUSD, "--timeframe", "H4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["results"]["data"]
    assert data["symbol"] == "EURUSD" and data["timeframe"] == "H4" and data["synthetic"] is False
    assert data["source"] == "EURUSD_H1.csv (generic), resampled from H1" and data["bars"] == 1292
    assert main(["backtest", "--data", EURUSD, "--symbol", "synth"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["qmx backtest: error: --symbol: 'SYNTH' names the built-in synthetic data; give the --data "
                   "file's bars their own name, e.g. --symbol EURUSD"]


def test_json_output_has_the_spec_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["backtest", "--symbol", "EURUSD", "--data", EURUSD, "--param", "fast=10", "--param", "slow=20",
                 "--balance", "1000000", "--size", "1", "--size-unit", "lots", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    data = json.loads(out)
    assert set(data) == SPEC_FIELDS
    assert round(data["final_balance"], 2) == 1001422.0 and data["total_trades"] == 262
    for key in ("metrics", "trades", "equity", "open_trade", "data", "config"):
        assert key in data["results"]
    assert data["results"]["data"]["synthetic"] is False
    assert "progress 0%" in err and "progress 100% (5000/5000 bars, 262 trades)" in err


def test_table_says_synthetic_and_spiced_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["backtest", "--data-dir", str(tmp_path), "--symbol", "SYNTH", "--from", "2023-01-01",
                 "--to", "2023-03-31", "--variant", "spiced", "--param", "stop_loss_pct=1.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "SYNTHETIC DATA" in out.splitlines()[1]
    assert "Sharpe ratio" in out and "Regimes:" in out
    # what the filter did, per regime: sma_cross blocks ranging and volatile by default
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("    ")}
    assert rows["ranging"][2] == rows["volatile"][2] == "blocked" and rows["trending_up"][2] == "allowed"
    assert rows["ranging"][4] == "0" and int(rows["ranging"][3]) > 0  # refused there, no trades


def test_user_strategy_file_and_verbose_log(capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"{REPO / 'scripts' / 'examples_strategy.py'}:UserSmaCross"
    code = main(["backtest", "--symbol", "EURUSD", "--data", EURUSD, "--strategy", spec, "--verbose",
                 "--size", "0.1", "--size-unit", "lots"])
    out, err = capsys.readouterr()
    assert code == 0 and "user_sma_cross" not in err
    assert "INFO Trade executed: BUY 0.1 lots EURUSD @ " in err


def test_server_unreachable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["backtest", "--server", f"http://127.0.0.1:{port}", "--follow"])
    assert code == 1
    assert "cannot reach" in capsys.readouterr().err


def test_real_process_json() -> None:
    proc = subprocess.run([sys.executable, "-m", "server.cli", "backtest", "--symbol", "EURUSD", "--data",
                           EURUSD, "--strategy", "rsi_reversion", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == SPEC_FIELDS


def test_failing_user_strategy_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "broken.py"
    f.write_text("from engine.strategy import Strategy\n\n"
                 "class Broken(Strategy):\n"
                 "    name = 'broken'\n\n"
                 "    def next(self, i, position):\n"
                 "        return 1 // 0\n")
    code = main(["backtest", "--data-dir", str(tmp_path), "--strategy", f"{f}:Broken"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == "qmx backtest: error: backtest failed: ZeroDivisionError: integer division or modulo by zero"


def test_full_variant_prints_the_robustness_report(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["backtest", "--symbol", "EURUSD", "--data", EURUSD, "--variant", "vanilla_full"])
    out = capsys.readouterr().out
    assert code == 0
    assert "[vanilla_full] on EURUSD H1" in out.splitlines()[0] and "VERDICT" in out


@pytest.mark.e2e
def test_server_run_equals_local_run(daemon: dict, tmp_path: Path) -> None:
    """`qmx backtest --server URL --json` against a real daemon gives the local run's result
    (spiced: the worker's regime analytics too)."""
    argv = ["backtest", "--symbol", "SYNTH", "--timeframe", "H4", "--from", "2023-01-01", "--to",
            "2023-06-30", "--param", "fast=5", "--param", "slow=30", "--variant", "spiced", "--json"]
    remote = subprocess.run([sys.executable, "-m", "server.cli", *argv, "--server", daemon["url"], "--follow"],
                            cwd=REPO, capture_output=True, text=True, timeout=90)
    assert remote.returncode == 0, remote.stderr
    local = subprocess.run([sys.executable, "-m", "server.cli", *argv, "--data-dir", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=90)
    assert local.returncode == 0, local.stderr
    r, l_ = json.loads(remote.stdout), json.loads(local.stdout)
    # both print the backtest_complete data object: one shape for scripts either way
    assert set(r) == set(l_) == SPEC_FIELDS
    assert r["timestamp"].endswith("Z") and not r["backtest_id"].startswith("local-")
    for key in ("final_balance", "total_trades", "win_rate", "sharpe_ratio", "drawdown", "return_pct"):
        assert r[key] == l_[key], key
    assert r["results"]["trades"] == l_["results"]["trades"]
    assert set(r["results"]) == set(l_["results"])
    assert r["results"]["regime_analytics"] == l_["results"]["regime_analytics"]
    assert r["results"]["regime_analytics"]["transitions_total"] > 0


def test_progress_bar_on_a_terminal_and_lines_otherwise() -> None:
    import io

    from engine.progress import Progress
    from server.cli_backtest import ProgressPrinter

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        printer = ProgressPrinter(stream)
        for done in (0, 450, 500, 1000):
            printer(Progress(done, 1000, "2023-06-15", done // 100, 12.5))
        printer.clear()
    assert "\r[###############...............]  50.0%  2023-06-15  trades 5  pnl 12.50" in tty.getvalue()
    assert tty.getvalue().endswith("\r")  # cleared before the table is printed
    assert pipe.getvalue().splitlines() == ["progress 0% (0/1000 bars, 0 trades)",
                                            "progress 45% (450/1000 bars, 4 trades)",
                                            "progress 50% (500/1000 bars, 5 trades)",
                                            "progress 100% (1000/1000 bars, 10 trades)"]


def test_progress_printer_without_counts_prints_only_the_percentage() -> None:
    import io

    from engine.progress import Progress
    from server.cli_backtest import ProgressPrinter

    out = io.StringIO()
    printer = ProgressPrinter(out, counts=False)  # a daemon's sweep: only a percentage is known
    printer(Progress(500, 1000, "", 0, 0.0))
    assert out.getvalue() == "progress 50%\n"
    out = io.StringIO()
    ProgressPrinter(out)(Progress(500, 1000, "2020-01-02", 3, 1.5))
    assert out.getvalue() == "progress 50% (500/1000 bars, 3 trades)\n"
