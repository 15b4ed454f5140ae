"""End to end: faults and lifetime of a real `qmx serve` (worker SIGKILL, SIGTERM, kill -9,
restart on the same data dir, a stalled WebSocket client). Each test owns its daemon."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time
from typing import Any, Callable

import aiohttp
import psutil
import pytest
import websockets

from tests.conftest import eventually
from tests.fixtures_daemon import Daemon, api
from tests.test_e2e_stream import LONG, check_event, submit

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _finished_run(daemon: Daemon, bid: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status, run = api(daemon, "GET", f"/api/backtests/{bid}")
        assert status == 200, run
        return run if run["status"] not in ("queued", "running") else None
    return eventually(done, timeout=timeout)


async def _until(ws: Any, pred: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if pred(event):
            return event


async def _subscribed(url: str) -> Any:
    ws = await websockets.connect(url, max_size=None)
    await ws.send(json.dumps({"action": "subscribe", "topic": "backtest"}))
    assert json.loads(await ws.recv())["type"] == "subscription_confirmed"
    return ws


def _progressing(bid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "backtest_progress" and e["data"]["backtest_id"] == bid


def _worker_of(daemon: Daemon, bid: str) -> psutil.Process:
    """The worker process running ``bid``, as /api/health names it (children[].job_id)."""
    def find() -> int | None:
        children = api(daemon, "GET", "/api/health")[1]["children"]
        return next((c["pid"] for c in children if c["name"] == "worker" and c["job_id"] == bid), None)
    return psutil.Process(eventually(find))


def test_sigkill_of_a_worker_mid_run_fails_that_run_within_a_second(daemon_factory: Any) -> None:
    d = daemon_factory()

    async def main() -> None:
        ws = await _subscribed(d["ws_url"])
        try:
            bid = await asyncio.to_thread(submit, d, **LONG)
            await _until(ws, _progressing(bid))
            victim = await asyncio.to_thread(_worker_of, d, bid)
            t0 = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            event = await _until(ws, lambda e: e["type"] in ("backtest_error", "backtest_complete")
                                 and e["data"]["backtest_id"] == bid, timeout=10)
            elapsed = time.monotonic() - t0
            assert event["type"] == "backtest_error", event
            check_event(event)
            text = event["data"]["error"] + event["data"]["error_details"]
            assert "SIGKILL" in text, event
            assert elapsed < 1.0, elapsed
            nxt = await asyncio.to_thread(submit, d)  # a fresh worker takes the slot
            done = await _until(ws, lambda e: e["type"] in ("backtest_error", "backtest_complete")
                                and e["data"]["backtest_id"] == nxt)
            assert done["type"] == "backtest_complete", done
        finally:
            await ws.close()
    asyncio.run(main())
    eventually(lambda: api(d, "GET", "/api/health")[1]["workers_alive"] == 2)


def test_sigterm_interrupts_runs_closes_sockets_1001_then_restart_keeps_runs(
        daemon_factory: Any) -> None:
    d = daemon_factory()
    finished = submit(d)
    assert _finished_run(d, finished)["status"] == "completed"

    async def main() -> tuple[str, int | None, float]:
        ws = await _subscribed(d["ws_url"])
        bid = await asyncio.to_thread(submit, d, **LONG)
        await _until(ws, _progressing(bid))
        t0 = time.monotonic()
        d["proc"].send_signal(signal.SIGTERM)
        final = None
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if event["type"] == "backtest_error" and event["data"]["backtest_id"] == bid:
                    final = event
        # the run's end reaches its subscribers before the socket closes
        assert final is not None and "interrupted" in final["data"]["error"], final
        check_event(final)
        code = ws.close_code
        await asyncio.to_thread(d["proc"].wait, 10)
        return bid, code, time.monotonic() - t0

    children = psutil.Process(d["proc"].pid).children(recursive=True)
    in_flight, close_code, elapsed = asyncio.run(main())
    assert close_code == 1001 and d["proc"].returncode == 0 and elapsed < 10, (close_code, elapsed)
    _gone, alive = psutil.wait_procs(children, timeout=2)
    assert not alive, f"child processes left running: {alive}"

    again = daemon_factory(d["data_dir"])
    _check_restarted(again, finished, in_flight)


def _check_restarted(d: Daemon, finished: str, in_flight: str) -> None:
    status, run = api(d, "GET", f"/api/backtests/{finished}")
    assert status == 200 and run["status"] == "completed"
    assert run["metrics"]["final_balance"] > 0 and run["results"]["trades"]
    assert run["results"]["equity"]["equity"] and run["results"]["metrics"]
    assert api(d, "GET", f"/api/backtests/{in_flight}")[1]["status"] == "interrupted"
    listed = {r["backtest_id"]: r["status"] for r in api(d, "GET", "/api/backtests")[1]["backtests"]}
    assert listed[finished] == "completed" and listed[in_flight] == "interrupted"
    nxt = submit(d)
    assert _finished_run(d, nxt)["status"] == "completed"


def test_kill_9_of_the_daemon_then_restart_keeps_every_finished_run(daemon_factory: Any) -> None:
    d = daemon_factory()
    finished = submit(d)
    assert _finished_run(d, finished)["status"] == "completed"
    in_flight = submit(d, **LONG)
    eventually(lambda: api(d, "GET", f"/api/backtests/{in_flight}")[1]["status"] == "running")
    children = psutil.Process(d["proc"].pid).children(recursive=True)
    d["proc"].kill()
    d["proc"].wait(5)
    for child in children:  # kill -9 of the whole process group, as an OOM killer or a crash would
        child.kill()
    psutil.wait_procs(children, timeout=5)
    _check_restarted(daemon_factory(d["data_dir"]), finished, in_flight)


# ----------------------------------------------------------------------- stalled client
def _masked_text(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body


def _stalled_subscriber(port: int) -> socket.socket:
    """Handshakes, subscribes to `bench`, then never reads again."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade"
                  f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(_masked_text('{"action": "subscribe", "topic": "bench"}'))
    return sock


async def _read_burst(d: Daemon, count: int) -> list[int]:
    async with aiohttp.ClientSession() as http, http.ws_connect(d["ws_url"]) as ws:
        await ws.send_str('{"action": "subscribe", "topic": "bench"}')
        assert (await ws.receive_json(timeout=10))["type"] == "subscription_confirmed"
        stalled = await asyncio.to_thread(_stalled_subscriber, d["port"])
        try:
            await asyncio.sleep(0.5)  # let the stalled client's subscription land
            status, body = await asyncio.to_thread(api, d, "POST", "/api/diagnostics/burst",
                                                   {"count": count, "rate": 20_000, "size": 1000})
            assert status == 202, body
            seen = []
            while len(seen) < count:
                event = await ws.receive_json(timeout=30)
                seen.append(event["data"]["n"])
            return seen
        finally:
            stalled.close()


def test_a_stalled_client_is_disconnected_while_another_keeps_receiving(daemon_factory: Any) -> None:
    d = daemon_factory(diagnostics=True)
    count = 20_000
    seen = asyncio.run(_read_burst(d, count))
    assert seen == list(range(count))  # nothing lost, nothing out of order for the reader
    # the reader's close reaches the server's handler a moment after the client returns
    eventually(lambda: api(d, "GET", "/api/health")[1]["websocket"] == {
        "clients": 0, "backed_up": 0, "overflow_disconnects": 1})
