#!/usr/bin/env python3
"""WebSocket fan-out benchmark: worker processes -> daemon -> N subscribers.

    python scripts/bench_ws.py                 # 100 and 1000 clients, 3 client processes
    python scripts/bench_ws.py --clients 1000 --procs 4

Starts a real ``qmx serve --diagnostics`` (2 workers), connects N clients spread over separate
client processes (asyncio + aiohttp), all subscribed to ``bench``, and triggers bursts of
``bench_event`` from a worker process (``POST /api/diagnostics/burst``). Prints per scenario:

- throughput: deliveries/s (frames received by all clients / time from first emit to last receipt),
  with the worker emitting flat out;
- latency: p50/p99 from the worker's ``emit_ns`` to client receipt at a paced 20k deliveries/s;
- idle memory: daemon main-process RSS with 0 vs N idle connections, per connection;
- the same throughput and latency with one stalled client (never reads) subscribed too;
- a bare aiohttp broadcast loop (one process, no actors, no queues) measured by the same clients.

Needs only the project's own dependencies (aiohttp, psutil from the test extra). Numbers depend
heavily on load: on a shared 2-core machine the client processes compete with the server.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
SAMPLED_PER_PROC = 20  # connections per client process whose every latency is recorded


# ------------------------------------------------------------------------ client processes
async def _client_main(url: str, n: int, topic: str | None, conn: Any) -> None:
    import aiohttp  # noqa: PLC0415 - imported in the child only

    # limit=0: the default connector stops at 100 connections, and each socket holds one
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = [await http.ws_connect(url, max_msg_size=0) for _ in range(n)]
        if topic:
            for ws in sockets:
                await ws.send_str(json.dumps({"action": "subscribe", "topic": topic}))
            for ws in sockets:
                assert json.loads((await ws.receive()).data)["type"] == "subscription_confirmed"
        conn.send("ready")
        while True:
            cmd = await asyncio.to_thread(conn.recv)
            if cmd[0] == "stop":
                break
            _, expected, timeout = cmd
            results = await asyncio.gather(*(_collect(ws, expected, timeout, i < SAMPLED_PER_PROC)
                                             for i, ws in enumerate(sockets)))
            conn.send(_merge(results))
        for ws in sockets:
            await ws.close()


async def _collect(ws: Any, expected: int, timeout: float, sample: bool) -> dict[str, Any]:
    got, lat, first, last = 0, [], None, 0
    deadline = time.monotonic() + timeout
    while got < expected:
        try:
            msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg.type.name != "TEXT":
            break
        now = time.time_ns()
        emit = json.loads(msg.data)["data"]["emit_ns"]
        first = emit if first is None else min(first, emit)
        last, got = now, got + 1
        if sample:
            lat.append(now - emit)
    return {"got": got, "lat": lat, "first": first, "last": last}


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    firsts = [p["first"] for p in parts if p["first"] is not None]
    return {"got": sum(p["got"] for p in parts), "lat": [x for p in parts for x in p["lat"]],
            "first": min(firsts) if firsts else None, "last": max(p["last"] for p in parts),
            "short": sum(1 for p in parts if p["got"] == 0)}


def _client_proc(url: str, n: int, topic: str | None, conn: Any) -> None:
    _raise_nofile()
    asyncio.run(_client_main(url, n, topic, conn))


class Clients:
    """N WebSocket clients spread over ``procs`` processes."""

    def __init__(self, url: str, n: int, procs: int, topic: str | None = "bench") -> None:
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = [], []
        for i in range(procs):
            share = n // procs + (1 if i < n % procs else 0)
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_client_proc, args=(url, share, topic, child), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise RuntimeError("client process did not connect within 120 s")
            assert pipe.recv() == "ready"

    def measure(self, expected: int, timeout: float) -> dict[str, Any]:
        for pipe in self.pipes:
            pipe.send(("measure", expected, timeout))
        return _merge([pipe.recv() for pipe in self.pipes])

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(("stop",))
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


# ---------------------------------------------------------------------------- servers
def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(cmd: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(rb"listening on http://[\d.]+:(\d+)", line)
        if match:
            return proc, int(match.group(1))
    raise RuntimeError(f"server did not start: {cmd}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def post(port: int, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def stalled_client(port: int, topic: str) -> socket.socket:
    """Handshake, subscribe, then never read (with a tiny receive buffer, so it backs up soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    payload, mask = json.dumps({"action": "subscribe", "topic": topic}).encode(), os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


# ------------------------------------------------------------------------- scenarios
def _pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1e6


def _ws_stats(port: int) -> dict[str, int]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=30) as r:
            return dict(json.loads(r.read())["websocket"])
    except (OSError, KeyError, ValueError):
        return {}  # the bare server has no health endpoint


def _backed_up_client(port: int, path: str) -> socket.socket:
    """A stalled subscriber that is already backed up: its kernel buffers are full and frames
    wait in the server's queue for it (a fill burst it alone receives, ~6 MB)."""
    sock = stalled_client(port, "bench")
    time.sleep(0.3)
    post(port, path, {"count": 3000, "rate": None, "size": 2000})
    deadline = time.monotonic() + 30
    while _ws_stats(port).get("backed_up", 1) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    return sock


def _cpu(pid: int) -> float:
    import psutil  # noqa: PLC0415

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def run_burst(clients: Clients, n: int, server: tuple[int, int], path: str, count: int,
              rate: float | None) -> dict[str, float]:
    """Trigger one burst and measure what the clients receive and the server's CPU time."""
    port, pid = server
    expected_s = count / rate if rate else 0
    cpu0 = _cpu(pid)
    post(port, path, {"count": count, "rate": rate, "size": 100})
    r = clients.measure(count, timeout=expected_s + 30)
    cpu = _cpu(pid) - cpu0
    span = (r["last"] - r["first"]) / 1e9 if r["first"] else float("nan")
    return {"delivered": r["got"], "expected": count * n, "per_s": r["got"] / span if span else 0,
            "p50_ms": _pct(r["lat"], 0.50), "p99_ms": _pct(r["lat"], 0.99),
            "cpu_us": cpu / max(1, r["got"]) * 1e6}


def scenarios(server: tuple[int, int], n: int, procs: int, path: str,
              stalled: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = server[0]
    sock = _backed_up_client(port, path) if stalled else None
    before = _ws_stats(port)
    clients = Clients(f"http://127.0.0.1:{port}/ws", n, procs)
    try:
        time.sleep(0.5)
        burst = max(50, 200_000 // n)  # ~200k deliveries flat out, under the 8192-frame queue
        out["throughput"] = run_burst(clients, n, server, path, burst, None)
        rate = 20_000 / n  # 20k deliveries/s in total
        out["latency@20k/s"] = run_burst(clients, n, server, path, int(rate * 5), rate)
        if stalled:
            out["note"] = (f"stalled client backed up before: {before}; after: {_ws_stats(port)} "
                           "(a client that never reads is also closed by the 20 s heartbeat)")
    finally:
        clients.close()
        if sock is not None:
            sock.close()
    return out


def idle_rss(port: int, pid: int, n: int, procs: int) -> float:
    """Daemon RSS growth per idle connection, in KB."""
    import psutil  # noqa: PLC0415

    proc = psutil.Process(pid)
    time.sleep(1.0)
    before = proc.memory_info().rss
    clients = Clients(f"http://127.0.0.1:{port}/ws", n, procs, topic=None)
    try:
        time.sleep(2.0)
        after = proc.memory_info().rss
    finally:
        clients.close()
    return (after - before) / n / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="100,1000", help="comma-separated subscriber counts")
    ap.add_argument("--procs", type=int, default=3, help="client processes (default 3)")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare aiohttp comparison")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    _raise_nofile()
    print(f"bench_ws: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} "
          "(shared machine: numbers are noisy)", flush=True)
    servers = [("qmx daemon", "/api/diagnostics/burst", True)]
    if not args.no_bare:
        servers.append(("bare aiohttp loop", "/burst", False))
    for name, path, stall in servers:
        for n in counts:  # idle memory first, each on a fresh server: freed memory is not reused
            with _server(name) as (port, pid):
                print(f"{name}, {n} idle connections: {idle_rss(port, pid, n, args.procs):.1f} "
                      "KB RSS each", flush=True)
        with _server(name) as server:
            for n in counts:
                for stalled in (False, True) if stall else (False,):
                    res = scenarios(server, n, args.procs, path, stalled)
                    _print(f"{name}, {n} clients" + (" + 1 stalled" if stalled else ""), res)
    return 0


@contextlib.contextmanager
def _server(name: str) -> Iterator[tuple[int, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        if name.startswith("qmx"):
            cmd = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--workers", "2",
                   "--diagnostics", "--data-dir", tmp]
        else:
            cmd = [sys.executable, __file__, "--bare-server"]
        proc, port = start_server(cmd)
        try:
            yield port, proc.pid
        finally:
            stop_server(proc)


def _print(title: str, res: dict[str, Any]) -> None:
    note = res.pop("note", None)
    for name, r in res.items():
        print(f"{title:<36} {name:<14} {r['per_s']:>8,.0f} deliveries/s  p50 {r['p50_ms']:6.1f} ms  "
              f"p99 {r['p99_ms']:6.1f} ms  server CPU {r['cpu_us']:5.1f} us/delivery  "
              f"({r['delivered']:,}/{r['expected']:,} received)", flush=True)
    if note:
        print(f"  {note}", flush=True)


# ---------------------------------------------------------------- bare aiohttp reference
class BareServer:
    """A minimal aiohttp broadcast loop: the ceiling for one Python process on this machine."""

    def __init__(self) -> None:
        self.clients: set[Any] = set()

    async def ws_handler(self, request: Any) -> Any:
        from aiohttp import web  # noqa: PLC0415

        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self.clients.add(ws)
        try:
            async for msg in ws:
                topic = json.loads(msg.data).get("topic")
                await ws.send_str(json.dumps({"type": "subscription_confirmed", "topic": topic}))
        finally:
            self.clients.discard(ws)
        return ws

    async def broadcast(self, count: int, rate: float | None) -> None:
        start = time.perf_counter()
        for n in range(count):
            if rate:
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            frame = json.dumps({"type": "bench_event", "data": {"n": n, "emit_ns": time.time_ns(),
                                                                  "pad": "x" * 100}, "seq": n + 1})
            for ws in list(self.clients):
                await ws.send_str(frame)

    async def burst(self, request: Any) -> Any:
        from aiohttp import web  # noqa: PLC0415

        body = await request.json()
        asyncio.get_running_loop().create_task(self.broadcast(body["count"], body.get("rate")))
        return web.json_response({}, status=202)

    async def serve(self) -> None:
        from aiohttp import web  # noqa: PLC0415

        app = web.Application()
        app.router.add_get("/ws", self.ws_handler)
        app.router.add_post("/burst", self.burst)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(f"bare listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    if sys.argv[1:] == ["--bare-server"]:
        _raise_nofile()
        asyncio.run(BareServer().serve())
        sys.exit(0)
    sys.exit(main())
