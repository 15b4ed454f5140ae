"""The /ws endpoint and fan-out hub over real sockets, in-process (no daemon attached)."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

import aiohttp
from aiohttp import WSMsgType, web

from server.keys import HUB
from server.ws import HARD_FRAME_LIMIT, Hub, setup_routes


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Hub, str, int]]:
    app = web.Application()
    app[HUB] = hub = Hub()
    setup_routes(app)
    app.on_shutdown.append(lambda a: hub.close_all())
    hub.bind(asyncio.get_running_loop())
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield hub, f"http://127.0.0.1:{port}/ws", port
    finally:
        await runner.cleanup()


async def _reply(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


def test_ping_bad_input_and_binary_never_close_the_socket() -> None:
    async def main() -> None:
        async with serving() as (hub, url, _), aiohttp.ClientSession() as http:
            async with http.ws_connect(url) as ws:
                bad = ["nope", "[]", "{}", '{"action":"fly"}', '{"action":"subscribe"}',
                       '{"action":"subscribe","topic":"weather"}', '{"action":"subscribe","topic":[1]}',
                       '{"action":"subscribe","topic":"logs","since":-3}', "x" * 5000]
                for text in bad:
                    await ws.send_str(text)
                    reply = await _reply(ws)
                    assert reply["type"] == "error" and reply["error"], (text, reply)
                    await ws.send_str('{"action": "ping"}')
                    assert await _reply(ws) == {"type": "pong"}
                await ws.send_bytes(b'{"action": "ping"}')
                assert "binary" in str((await _reply(ws))["error"])
                await ws.send_str('{"action":"subscribe","topic":"backtest"}')
                assert "daemon is not running" in str((await _reply(ws))["error"])
                assert not ws.closed and len(hub.clients) == 1
    asyncio.run(main())


def test_frame_above_hard_limit_closes_with_1009() -> None:
    async def main() -> None:
        async with serving() as (hub, url, _), aiohttp.ClientSession() as http:
            async with http.ws_connect(url) as ws:
                await ws.send_str("x" * (HARD_FRAME_LIMIT + 1))
                msg = await ws.receive(timeout=5)
                assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    asyncio.run(main())


def test_deliver_from_a_thread_fans_out_in_order_and_close_all_sends_1001() -> None:
    async def main() -> None:
        async with serving() as (hub, url, _), aiohttp.ClientSession() as http:
            a = await http.ws_connect(url)
            b = await http.ws_connect(url)
            c = await http.ws_connect(url)
            ids = tuple(hub.clients)
            frames = [(json.dumps({"type": "e", "seq": i}), ids[:2]) for i in range(100)]
            frames.append((b'{"type":"only-c"}', ids[2:]))
            thread = threading.Thread(target=hub.deliver, args=(frames,))
            thread.start()
            thread.join()
            for ws in (a, b):
                assert [(await _reply(ws))["seq"] for _ in range(100)] == list(range(100))
            assert await _reply(c) == {"type": "only-c"}
            await hub.close_all()
            for ws in (a, b, c):
                msg = await ws.receive(timeout=5)
                assert msg.type is WSMsgType.CLOSE and msg.data == 1001
                await ws.close()
            assert hub.clients == {}
    asyncio.run(main())


def _stalled_socket(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _drain_until_closed(sock: socket.socket) -> str:
    """Read what the server managed to send; the connection must end (close frame 4001 or RST)."""
    sock.settimeout(10)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        return "reset"
    return "eof"


def test_a_stalled_client_is_disconnected_and_others_keep_receiving() -> None:
    async def main() -> None:
        async with serving() as (hub, url, port), aiohttp.ClientSession() as http:
            reader = await http.ws_connect(url)
            stalled = await asyncio.to_thread(_stalled_socket, port)
            try:
                await asyncio.sleep(0)
                ids = tuple(hub.clients)
                stalled_id = max(ids)
                payload = "y" * 2000
                received = 0
                for batch in range(80):
                    frames = [(json.dumps({"n": batch * 200 + i, "p": payload}), ids) for i in range(200)]
                    await asyncio.to_thread(hub.deliver, frames)
                    for _ in range(200):  # the reading client gets every frame, in order
                        assert (await _reply(reader))["n"] == received
                        received += 1
                assert received == 16000
                assert hub.overflow_disconnects == 1 and stalled_id not in hub.clients
                assert len(hub.clients) == 1
                assert await asyncio.to_thread(_drain_until_closed, stalled) in ("eof", "reset")
            finally:
                stalled.close()
                await reader.close()
    asyncio.run(main())



def test_many_small_batches_from_a_thread_arrive_complete_and_in_order() -> None:
    async def main() -> None:
        async with serving() as (hub, url, _), aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url)
            (cid,) = tuple(hub.clients)

            def flood() -> None:  # one frame per batch, as fast as the thread can call deliver
                for i in range(5000):
                    hub.deliver([(f'{{"n":{i}}}', (cid,))])
            thread = threading.Thread(target=flood)
            thread.start()
            got = [(await _reply(ws))["n"] for _ in range(5000)]
            thread.join()
            assert got == list(range(5000))
            await ws.close()
    asyncio.run(main())


def test_the_server_never_waits_on_an_actor() -> None:
    # STYLE.md: no pykka future, ask or blocking get inside server/ (it would block the loop);
    # the server only tells the Daemon, which answers through deliver.
    import re
    from pathlib import Path

    server = Path(__file__).resolve().parent.parent / "server"
    banned = re.compile(r"\bpykka\b|\.ask\(|\.proxy\(|\bActorRef\b")
    hits = [f"{path.name}:{n}: {line.strip()}" for path in sorted(server.glob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if banned.search(line)]
    assert not hits, hits
