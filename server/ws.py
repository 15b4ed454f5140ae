"""The `/ws` endpoint of the spec: subscriptions, ping/pong, and fan-out to many clients.

Wire protocol (``../shared/spec/websocket-api.md`` plus compatible additions):

- Client actions: ``{"action": "subscribe", "topic": T, "since"?: seq}``,
  ``{"action": "unsubscribe", "topic": T}``, ``{"action": "ping"}``.
- Topics: ``backtest``, ``trading``, ``logs``, ``backtest:<id>``, ``sweep:<id>``
  (and ``bench`` when the daemon runs with ``--diagnostics``).
- Nothing is sent on connect. ``ping`` is answered here at once with ``{"type": "pong"}``;
  subscribe/unsubscribe go to the daemon, whose confirmation comes back through
  :meth:`Hub.deliver` so it stays ordered with the events of that topic.
- Bad input never closes the socket: it gets ``{"type": "error", "error": "..."}``.
  Text frames longer than :data:`APP_FRAME_LIMIT` characters get that error too; frames longer
  than :data:`HARD_FRAME_LIMIT` bytes are refused by aiohttp itself (close code 1009).

Flow control: each event is encoded once and framed once (:func:`wire_frame`); each client has
a bounded send queue of :data:`SEND_QUEUE_LIMIT` frames (shared bytes, so a full queue costs
pointers, not copies). While a client keeps up, the frames of a batch go to its socket in one
``transport.write``, as long as the socket holds less than :data:`WRITE_HIGH_WATER` unsent
bytes; the rest wait in the queue for the client's own writer task, which writes whenever the
socket drains. A client whose queue overflows (it stopped reading) is closed with
:data:`CLOSE_QUEUE_OVERFLOW` ``"send queue overflow"``; if even the close frame cannot be
written within a second, its TCP connection is aborted. So a stalled client holds at most its
socket buffers plus its queue of shared frames, and nothing ever waits on its socket except its
own writer task.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import re
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Union

from aiohttp import WSMsgType, web

from server.keys import HUB

log = logging.getLogger(__name__)

#: Longest text frame the parser accepts, in characters; longer frames get an error reply.
APP_FRAME_LIMIT = 4096
#: aiohttp's hard limit (``max_msg_size``): a bigger frame closes the socket with 1009.
HARD_FRAME_LIMIT = 64 * 1024
#: Frames a client may have waiting before it is disconnected.
SEND_QUEUE_LIMIT = 8192
#: Close code for a client that stopped reading (4000-4999: application codes, RFC 6455).
CLOSE_QUEUE_OVERFLOW = 4001
#: Bytes buffered in the transport above which writes wait for the socket (asyncio's default).
WRITE_HIGH_WATER = 64 * 1024
#: Seconds after a socket closed at which its connection is reset if bytes are still unsent.
ABORT_AFTER_S = 2.0
#: Seconds between server pings; a client that does not answer one within half of this is closed.
HEARTBEAT_S = 20.0

SPEC_TOPICS: tuple[str, ...] = ("backtest", "trading", "logs")
_RUN_TOPIC = re.compile(r"(backtest|sweep):[A-Za-z0-9_.-]{1,64}")
ACTIONS: tuple[str, ...] = ("subscribe", "unsubscribe", "ping")
_TOPICS_HELP = "'backtest', 'trading', 'logs', 'backtest:<id>' or 'sweep:<id>'"


@dataclass(frozen=True)
class Subscribe:
    """Subscribe this client to ``topic``; with ``since``, replay buffered events after it."""

    topic: str
    since: int | None = None


@dataclass(frozen=True)
class Unsubscribe:
    """Stop sending ``topic`` to this client."""

    topic: str


@dataclass(frozen=True)
class Ping:
    """Keep-alive; answered with ``{"type": "pong"}``."""


@dataclass(frozen=True)
class Invalid:
    """A message that could not be understood; ``error`` says what is wrong and what is allowed."""

    error: str


Action = Union[Subscribe, Unsubscribe, Ping, Invalid]


def parse_message(text: str, *, diagnostics: bool = False) -> Action:
    """Turn one client text frame into an action, or :class:`Invalid` explaining the problem.

    Never raises, whatever ``text`` holds.
    """
    if len(text) > APP_FRAME_LIMIT:
        return Invalid(f"message too long: {len(text)} characters; the limit is {APP_FRAME_LIMIT}")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return Invalid('invalid JSON; send an object such as {"action": "ping"}')
    if not isinstance(body, dict):
        return Invalid(f"message must be a JSON object with an 'action', got {_json_kind(body)}")
    action = body.get("action")
    if action not in ACTIONS:
        what = "missing 'action'" if "action" not in body else f"unknown action {_short(action)}"
        return Invalid(f"{what}; allowed actions: {list(ACTIONS)}")
    if action == "ping":
        return Ping()
    topic = body.get("topic")
    problem = _topic_problem(topic, diagnostics)
    if problem or not isinstance(topic, str):
        return Invalid(problem or "'topic' must be a string")
    if action == "unsubscribe":
        return Unsubscribe(topic)
    since = body.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        return Invalid(f"'since' must be a non-negative integer seq (or absent), got {_short(since)}")
    return Subscribe(topic, since)


def _topic_problem(topic: Any, diagnostics: bool) -> str | None:
    allowed = _TOPICS_HELP + (" or 'bench'" if diagnostics else "")
    if topic is None:
        return f"missing 'topic'; allowed topics: {allowed}"
    if not isinstance(topic, str):
        return f"'topic' must be a string, got {_json_kind(topic)}; allowed topics: {allowed}"
    if topic in SPEC_TOPICS or _RUN_TOPIC.fullmatch(topic) or (diagnostics and topic == "bench"):
        return None
    return f"unknown topic {_short(topic)}; allowed topics: {allowed}"


def _json_kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or value == value else "NaN"
    return text if len(text) <= 80 else text[:77] + "..."


def encode(obj: dict[str, Any]) -> bytes:
    """One JSON text payload, encoded once."""
    return json.dumps(obj, separators=(",", ":")).encode()


def wire_frame(payload: bytes) -> bytes:
    """A complete unmasked server-to-client text frame (RFC 6455 section 5.2), built once and
    shared by every recipient: fan-out then costs one ``transport.write`` per client and batch."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def error_frame(message: str) -> bytes:
    """The ``{"type": "error", "error": ...}`` reply to bad input (JSON payload)."""
    return encode({"type": "error", "error": message})


PONG = wire_frame(encode({"type": "pong"}))


class Client:
    """One WebSocket connection: a bounded queue of wire frames, flushed straight to the socket
    while it keeps up, and a writer task that takes over while the socket is backed up."""

    __slots__ = ("id", "ws", "transport", "stream", "closed", "_queue", "_waiter", "_writer")

    def __init__(self, client_id: int, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.id = client_id
        self.ws = ws
        self.transport = request.transport
        self.stream = request.writer  # its drain() waits while the transport is paused
        self.closed = False
        self._queue: collections.deque[bytes] = collections.deque()
        loop = asyncio.get_running_loop()
        # Pending while the writer task is idle; done while it has work (then flush leaves the
        # queue to it). Created here so frames queued before the task first runs still wake it.
        self._waiter: asyncio.Future[None] = loop.create_future()
        self._writer = loop.create_task(self._write_loop())

    def enqueue(self, frame: bytes) -> int:
        """Queue a wire frame: 1 if it is the first one waiting, 2 if others wait, 0 if full."""
        queue = self._queue
        if len(queue) >= SEND_QUEUE_LIMIT:
            return 0
        queue.append(frame)
        return 1 if len(queue) == 1 else 2

    def push(self, frame: bytes) -> bool:
        """Queue a wire frame and flush; False when the queue is full."""
        if not self.enqueue(frame):
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Write what the socket takes now (up to :data:`WRITE_HIGH_WATER` buffered bytes) in one
        ``transport.write``; leave the rest to the writer task, which waits for the socket."""
        queue, transport, waiter = self._queue, self.transport, self._waiter
        if not queue or self.closed or waiter.done():
            return  # nothing to do, closing, or the writer task is already on it
        if transport is None or transport.is_closing() or self.ws.closed:
            queue.clear()
            return
        room = WRITE_HIGH_WATER - transport.get_write_buffer_size()
        if room > 0:
            self._write_some(transport, room)
        if queue:
            waiter.set_result(None)

    def _write_some(self, transport: Any, room: int) -> None:
        """Write queued frames up to about ``room`` bytes (at least one) as one write."""
        queue = self._queue
        first = queue.popleft()
        if not queue or len(first) >= room:
            transport.write(first)
            return
        parts, size = [first], len(first)
        while queue and size < room:
            frame = queue.popleft()
            parts.append(frame)
            size += len(frame)
        transport.write(b"".join(parts))

    @property
    def queued(self) -> int:
        """Frames waiting for the socket."""
        return len(self._queue)

    async def _write_loop(self) -> None:
        queue, loop = self._queue, asyncio.get_running_loop()
        try:
            while True:
                await self._waiter
                while queue and not self.closed:
                    await self.stream.drain()  # waits while the transport is paused (backed up)
                    transport = self.transport
                    if transport is None or transport.is_closing() or self.ws.closed:
                        queue.clear()
                        return
                    room = WRITE_HIGH_WATER - transport.get_write_buffer_size()
                    self._write_some(transport, room)
                self._waiter = loop.create_future()
        except ConnectionError:
            pass  # the peer went away; the reader loop notices and unregisters us

    async def close(self, code: int, reason: bytes, timeout: float = 1.0) -> None:
        """Stop writing, send a close frame if the socket takes it in time, else abort."""
        self.closed = True
        self._queue.clear()
        self._writer.cancel()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason, drain=False), timeout)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class Hub:
    """All connected clients, and the daemon's ``deliver`` entry point into the event loop."""

    def __init__(self, *, diagnostics: bool = False) -> None:
        self.clients: dict[int, Client] = {}
        self.diagnostics = diagnostics
        self.daemon: Any = None  # set by server/app.py once the daemon runs
        self.overflow_disconnects = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: collections.deque[list[tuple[Any, tuple[int, ...]]]] = collections.deque()
        self._hop_pending = False
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that :meth:`deliver` hops to."""
        self._loop = loop

    def deliver(self, batch: list[tuple[Any, tuple[int, ...]]]) -> None:
        """Thread-safe: queue each ``(frame, client_ids)`` pair for its clients.

        Called from the daemon's connection-manager thread. At most one loop hop per batch:
        batches that arrive while a hop is pending ride along with it, in order, so a busy loop
        handles them together (and writes each client's share with one write).
        """
        loop = self._loop
        if loop is None:
            return
        self._pending.append(batch)  # deque.append/popleft are atomic: no lock needed
        if self._hop_pending:
            return
        self._hop_pending = True
        try:
            loop.call_soon_threadsafe(self._dispatch_pending)
        except RuntimeError:
            pass  # the loop is closing: the server is shutting down, frames have nowhere to go

    def _dispatch_pending(self) -> None:
        # Clear the flag first: a batch appended after this line schedules its own hop.
        self._hop_pending = False
        pending = self._pending
        batches = []
        while pending:
            batches.append(pending.popleft())
        self._dispatch(itertools.chain.from_iterable(batches))

    def _dispatch(self, batch: Iterable[tuple[Any, tuple[int, ...]]]) -> None:
        clients = self.clients
        touched: list[Client] = []
        for frame, ids in batch:
            wire = wire_frame(frame if isinstance(frame, bytes) else str(frame).encode())
            for cid in ids:
                client = clients.get(cid)
                if client is None:
                    continue
                state = client.enqueue(wire)
                if state == 1:
                    touched.append(client)
                elif state == 0:
                    self._overflow(client)
        for client in touched:  # one write per client for the whole batch
            client.flush()

    def register(self, ws: web.WebSocketResponse, request: web.Request) -> Client:
        """Add a newly opened socket; must run on the loop."""
        client = Client(next(self._ids), ws, request)
        self.clients[client.id] = client
        return client

    def unregister(self, client: Client) -> None:
        """Forget a closed socket and tell the daemon to drop its subscriptions."""
        if self.clients.pop(client.id, None) is not None and self.daemon is not None:
            self.daemon.disconnect(client.id)
        client.closed = True
        client._writer.cancel()

    def _overflow(self, client: Client) -> None:
        self.overflow_disconnects += 1
        log.warning("closing WebSocket client %d: send queue overflow (%d frames)",
                    client.id, SEND_QUEUE_LIMIT)
        self.unregister(client)
        self._spawn(client.close(CLOSE_QUEUE_OVERFLOW, b"send queue overflow"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_all(self, code: int = 1001, reason: bytes = b"server shutdown") -> None:
        """Close every socket (1001 GOING_AWAY on shutdown), waiting at most ~2 s."""
        clients = list(self.clients.values())
        for client in clients:
            self.unregister(client)
        await asyncio.gather(*(c.close(code, reason, timeout=2.0) for c in clients),
                             *list(self._tasks), return_exceptions=True)

    def handle(self, client: Client, action: Action) -> None:
        """Carry out one parsed client action."""
        if isinstance(action, Ping):
            client.push(PONG)
        elif isinstance(action, Invalid):
            client.push(wire_frame(error_frame(action.error)))
        elif self.daemon is None:
            client.push(wire_frame(error_frame("the daemon is not running; try again in a moment")))
        elif isinstance(action, Subscribe):
            self.daemon.subscribe(client.id, action.topic, action.since)
        else:
            self.daemon.unsubscribe(client.id, action.topic)


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws``: one reader loop per socket; replies and events go through the send queue."""
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=HARD_FRAME_LIMIT, compress=False)
    await ws.prepare(request)
    client = hub.register(ws, request)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                hub.handle(client, parse_message(msg.data, diagnostics=hub.diagnostics))
            elif msg.type is WSMsgType.BINARY:
                hub.handle(client, Invalid("binary frames are not accepted; send JSON text frames"))
            else:  # ERROR: aiohttp has already closed the socket (e.g. 1009 frame too big)
                break
    finally:
        hub.unregister(client)
        if request.transport is not None:
            asyncio.get_running_loop().call_later(ABORT_AFTER_S, _abort_if_stuck, request.transport)
    return ws


def _abort_if_stuck(transport: Any) -> None:
    """A closed socket whose peer never reads keeps its unsent bytes forever: drop them."""
    if transport.is_closing() and transport.get_write_buffer_size() > 0:
        transport.abort()


def setup_routes(app: web.Application) -> None:
    """Add ``GET /ws``."""
    app.router.add_get("/ws", websocket_handler)
