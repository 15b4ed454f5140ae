"""`qmx serve` as a user runs it: argument errors, a taken port, SIGINT."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures_daemon import REPO, Daemon

pytestmark = pytest.mark.e2e


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "serve", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, words", [
    (["--port", "http"], ["--port", "0-65535", "'http'"]),
    (["--port", "70000"], ["--port", "0-65535"]),
    (["--workers", "0"], ["--workers", ">= 1"]),
])
def test_bad_arguments_exit_2_naming_the_argument(args: list[str], words: list[str]) -> None:
    done = _serve(*args)
    assert done.returncode == 2 and done.stdout == ""
    for word in words:
        assert word in done.stderr, done.stderr


def test_a_taken_port_fails_fast_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        done = _serve("--port", str(port), "--data-dir", str(tmp_path), "--workers", "1")
    assert done.returncode == 1 and time.monotonic() - t0 < 10
    assert done.stderr.strip().splitlines() == [
        f"qmx serve: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert not (tmp_path / "qmx.sqlite").exists()  # nothing was started


def test_sigint_stops_everything_within_10_s(daemon_factory: object) -> None:
    d: Daemon = daemon_factory(workers=1)  # type: ignore[operator]
    children = psutil.Process(d["proc"].pid).children(recursive=True)
    assert children
    t0 = time.monotonic()
    d["proc"].send_signal(signal.SIGINT)
    assert d["proc"].wait(10) == 0
    assert time.monotonic() - t0 < 10
    _gone, alive = psutil.wait_procs(children, timeout=2)
    assert not alive
    assert "QuantMindX shutting down" in d["log"].read_text()


def test_an_unusable_data_dir_fails_with_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    done = _serve("--port", "0", "--workers", "1", "--data-dir", str(a_file))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"qmx serve: argument --data-dir: cannot create directory '{a_file}': File exists"]
    broken = tmp_path / "broken"
    (broken / "qmx.sqlite").mkdir(parents=True)  # the run store cannot be opened
    done = _serve("--port", "0", "--workers", "1", "--data-dir", str(broken))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "qmx serve: the daemon could not start: OperationalError: unable to open database file"]
