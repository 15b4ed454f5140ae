"""`qmx data import` / `qmx data list` through server.cli.main and once as a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import main
from tests.conftest import REPO


def test_import_then_list(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    code = main(["data", "import", str(shared_data / "EURUSD_H1_mt5.csv"), "--symbol", "eurusd",
                 "--timeframe", "H1", "--utc-shift", "2", "--data-dir", data])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Stored EURUSD H1: 5000 bars 2017-04-19 .. 2018-02-07 "
                          "(5000 read from EURUSD_H1_mt5.csv as mt5, 5000 new)")
    assert main(["data", "import", str(shared_data / "GOOG_D1.csv"), "--symbol", "GOOG", "--timeframe", "D1",
                 "--format", "generic", "--data-dir", data]) == 0
    capsys.readouterr()
    assert main(["data", "list", "--data-dir", data]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SYMBOL", "TIMEFRAME", "START", "END", "BARS", "DATA", "SOURCE"]
    assert lines[1].split() == ["EURUSD", "H1", "2017-04-19", "2018-02-07", "5,000", "imported",
                                "EURUSD_H1_mt5.csv", "(mt5)"]
    assert lines[2].split()[:6] == ["GOOG", "D1", "2004-08-19", "2013-03-01", "2,148", "imported"]
    synth = [line for line in lines if line.startswith("SYNTH")]
    assert len(synth) == 7 and all(line.split()[5] == "SYNTHETIC" for line in synth)
    for title in ("START", "DATA", "SOURCE"):  # every row's cell starts under its title
        at = lines[0].index(title)
        assert all(line[at - 1] == " " and line[at] != " " for line in lines[1:])
    assert main(["data", "list", "--json", "--data-dir", data]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["symbol"] == "EURUSD" and rows[0]["synthetic"] is False
    assert {r["timeframe"] for r in rows if r["synthetic"]} == {"M1", "M5", "M15", "M30", "H1", "H4", "D1"}


def test_bad_file_exits_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Open,High,Low,Close\n2024-01-02,1,2,0.5,1.5\n2024-01-03,1,0.4,0.5,1.5\n")
    code = main(["data", "import", str(bad), "--symbol", "X", "--timeframe", "D1", "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and f"{bad}, line 3: high 0.4 < low 0.5" in err
    assert not (tmp_path / "d" / "bars").exists()


@pytest.mark.parametrize("argv,message", [
    (["--symbol", "SYNTH", "--timeframe", "H1"], "error: --symbol 'SYNTH' is reserved"),
    (["--symbol", "a b", "--timeframe", "H1"], "error: --symbol must be 1-32 characters"),
    (["--symbol", "X", "--timeframe", "H1", "--format", "histdata", "--utc-shift", "2"], "error: --utc-shift applies"),
    (["--symbol", "X", "--timeframe", "H1", "--utc-shift", "25"], "error: --utc-shift must be a number of hours"),
])
def test_bad_arguments_exit_2(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              argv: list[str], message: str) -> None:
    code = main(["data", "import", str(shared_data / "EURUSD_H1_mt5.csv"), *argv, "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "import", str(tmp_path / "nope.csv"), "--symbol", "X", "--timeframe", "H1",
                 "--data-dir", str(tmp_path)])
    assert code == 2 and "nope.csv' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["data", "import", "f.csv", "--symbol", "X", "--timeframe", "H2"], "argument --timeframe: invalid choice: 'H2'"),
    (["data", "import", "f.csv", "--symbol", "X", "--timeframe", "H1", "--format", "xls"], "argument --format"),
    (["data", "import", "f.csv", "--timeframe", "H1"], "the following arguments are required: --symbol"),
    (["data", "import", "f.csv", "--symbol", "X", "--timeframe", "H1", "--utc-shift", "two"], "argument --utc-shift"),
    (["data"], "required"),
])
def test_argparse_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_qmx_subprocess_uses_qmx_data_dir(tmp_path: Path, shared_data: Path) -> None:
    env = {**os.environ, "QMX_DATA_DIR": str(tmp_path / "envdata")}
    cmd = [sys.executable, "-m", "server.cli", "data"]
    imported = subprocess.run([*cmd, "import", str(shared_data / "EURUSD_H1.csv"), "--symbol", "EURUSD",
                               "--timeframe", "H1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    listed = subprocess.run([*cmd, "list", "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["source"] == "EURUSD_H1.csv (generic)"
    assert (tmp_path / "envdata" / "bars" / "EURUSD" / "H1.npy").is_file()
