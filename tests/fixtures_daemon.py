"""Fixtures that run a real `qmx serve` daemon in a subprocess (pytest plugin).

- ``daemon``: one daemon per test session (per xdist worker) on a fresh data dir, 2 workers.
  Share it when your test leaves it running; do not stop or signal it.
- ``daemon_factory``: ``start(data_dir=None, workers=2, diagnostics=False)`` for tests that stop,
  kill or restart a daemon; every daemon it started is stopped at the end of the test.

Each daemon is a dict: ``url`` (http://127.0.0.1:PORT), ``ws_url`` (ws://.../ws), ``port``,
``proc`` (``subprocess.Popen``), ``data_dir`` (``Path``), ``log`` (path of its stdout+stderr).
``api(daemon, method, path, body)`` is a small blocking JSON client for its REST API;
``wait_idle(daemon)`` waits until all its workers are ready and idle.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"QuantMindX listening on (http://([\d.]+):(\d+))")
START_TIMEOUT_S = 60.0

Daemon = dict[str, Any]


def start_daemon(data_dir: Path, *, workers: int = 2, diagnostics: bool = False,
                 log: Path | None = None) -> Daemon:
    """Start ``python -m server.cli serve --port 0`` and wait until it prints its address."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log or data_dir.parent / f"{data_dir.name}-daemon-{time.monotonic_ns()}.log"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--workers", str(workers),
           "--data-dir", str(data_dir)]
    if diagnostics:
        cmd.append("--diagnostics")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        text = log.read_text(errors="replace")
        match = _LISTENING.search(text)
        if match:
            url, port = match.group(1), int(match.group(3))
            return {"url": url, "ws_url": f"ws://127.0.0.1:{port}/ws", "port": port,
                    "proc": proc, "data_dir": data_dir, "log": log}
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_daemon({"proc": proc})
            raise RuntimeError(f"qmx serve did not start (exit {proc.returncode}); output:\n{text[-4000:]}")
        time.sleep(0.05)


def stop_daemon(daemon: Daemon, timeout: float = 10.0) -> int | None:
    """SIGTERM the daemon, wait up to ``timeout`` s, then SIGKILL it and its children."""
    proc: subprocess.Popen[bytes] = daemon["proc"]
    if proc.poll() is None:
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for child in children:  # never leave workers behind, even after a failed shutdown
            try:
                child.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
    return proc.returncode


def api(daemon: Daemon, method: str, path: str, body: Any = None,
        timeout: float = 30.0) -> tuple[int, Any]:
    """Call the daemon's REST API; returns ``(status, decoded JSON body or None)``.

    ``body`` is sent as JSON unless it is ``bytes`` (sent as is)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(daemon["url"] + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        exc.close()
    return status, (json.loads(raw) if raw else None)


def wait_idle(daemon: Daemon, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until every worker is ready and nothing runs or waits (a run cancelled by an earlier
    test may have had its worker killed; the replacement takes a moment to start)."""
    deadline = time.monotonic() + timeout
    while True:
        health = api(daemon, "GET", "/api/health")[1]
        if (health["workers_ready"] == health["workers_total"] and not health["running"]
                and not health["queue_length"]):
            return dict(health)
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon not idle within {timeout} s: {health}")
        time.sleep(0.05)


def _children(pid: int) -> list[Any]:
    try:
        import psutil  # noqa: PLC0415 - a test extra

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - process already gone
        return []


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A shared running daemon (2 workers, fresh data dir) for tests that leave it running."""
    d = start_daemon(tmp_path_factory.mktemp("daemon") / "data")
    try:
        yield d
    finally:
        stop_daemon(d)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons a test may stop, kill or restart; all are stopped afterwards."""
    started: list[Daemon] = []

    def start(data_dir: Path | None = None, workers: int = 2, diagnostics: bool = False) -> Daemon:
        d = start_daemon(data_dir or tmp_path / "data", workers=workers, diagnostics=diagnostics)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            stop_daemon(d)
