"""Python asyncio client of a QuantMindX daemon: the WebSocket stream plus REST helpers.

    async with QmxClient("http://127.0.0.1:8000") as qmx:
        await qmx.subscribe("backtest")
        run_id = await qmx.submit_backtest(symbol="SYNTH", timeframe="H1")
        async for event in qmx:
            if event["type"] == "backtest_complete":
                break

It mirrors the JavaScript ``ws-client``: it reconnects with capped exponential backoff and
jitter, re-subscribes its topics with ``since`` (the last ``seq`` seen per topic) so the daemon
replays what was missed, and a ``ping`` without a ``pong`` in time forces a reconnect.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp

Handler = Callable[[dict[str, Any]], "Awaitable[None] | None"]
#: Topics the daemon accepts (``bench`` only with ``qmx serve --diagnostics``).
TOPIC_RE = re.compile(r"backtest|trading|logs|bench|(backtest|sweep):[A-Za-z0-9_.-]{1,64}")
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "interrupted"})
_CLOSED = object()  # end-of-stream marker in the event queue


class QmxError(Exception):
    """A REST call the daemon refused; ``status`` is the HTTP status, ``body`` its JSON reply."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


def base_url(url: str) -> str:
    """``http(s)://host:port`` of a daemon given its base URL or its ``ws(s)://.../ws`` URL."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"`url` must be an http(s):// or ws(s):// URL with a host, got {url!r}")
    path = parts.path[:-3] if parts.path.endswith("/ws") else parts.path
    return urlunsplit((scheme, parts.netloc, path.rstrip("/"), "", ""))


def frame_topic(msg: dict[str, Any], topics: set[str]) -> str:
    """The topic a frame's ``seq`` counts in (the frame's ``topic`` field when the server sends it)."""
    if isinstance(msg.get("topic"), str):
        return msg["topic"]
    if msg.get("type") == "trading_update":
        return "trading"
    bid = (msg.get("data") or {}).get("backtest_id")
    if msg.get("type") == "log_entry" and not bid:
        return "logs"
    if bid and f"backtest:{bid}" in topics and "backtest" not in topics:
        return f"backtest:{bid}"
    return "backtest"


class QmxClient:
    """A connection to one daemon. Use as ``async with``; every wait has a timeout."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, reconnect: bool = True,
                 max_reconnect_attempts: int = 10, initial_delay: float = 0.5, max_delay: float = 30.0,
                 ping_interval: float = 25.0, pong_timeout: float = 10.0, connect_timeout: float = 10.0,
                 request_timeout: float = 30.0, queue_size: int = 10_000) -> None:
        self.url = base_url(url)
        self.ws_url = "ws" + self.url[4:] + "/ws"
        numbers = {"max_reconnect_attempts": max_reconnect_attempts, "initial_delay": initial_delay,
                   "max_delay": max_delay, "ping_interval": ping_interval, "pong_timeout": pong_timeout,
                   "connect_timeout": connect_timeout, "request_timeout": request_timeout, "queue_size": queue_size}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"`queue_size` must be an integer >= 1, got {queue_size!r}")
        self.reconnect = reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.topics: set[str] = set()
        self.last_seq: dict[str, int] = {}
        self.reconnects = 0
        self._handlers: dict[str, list[Handler]] = {}
        # Bounded: a consumer that never iterates drops the oldest events rather than growing memory.
        self._events: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        self._pending: dict[tuple[str, str], list[asyncio.Future[dict[str, Any]]]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._runner: asyncio.Task[None] | None = None
        self._pong: asyncio.Event = asyncio.Event()
        self._closed = False

    async def __aenter__(self) -> QmxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- WebSocket ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open."""
        return self._ws is not None and not self._ws.closed

    async def connect(self) -> None:
        """Open the WebSocket (``aiohttp.ClientError`` if unreachable, TimeoutError after ``connect_timeout``)."""
        if self._runner is not None:
            return
        ws = await asyncio.wait_for(self._open(), self.connect_timeout)
        self._runner = asyncio.get_running_loop().create_task(self._run(ws))

    def on(self, type_: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(event)`` (sync or async) for each event of ``type_`` (``"*"``: all)."""
        self._handlers.setdefault(type_, []).append(handler)
        return lambda: self.off(type_, handler)

    def off(self, type_: str, handler: Handler | None = None) -> None:
        """Remove one handler, or all handlers of ``type_``."""
        handlers = self._handlers.get(type_, [])
        if handler is None:
            handlers.clear()
        elif handler in handlers:
            handlers.remove(handler)

    async def subscribe(self, topic: str, since: int | None = None) -> dict[str, Any]:
        """Subscribe (connecting first if needed); returns ``subscription_confirmed``.

        ``topic``: ``backtest``, ``trading``, ``logs`` or ``backtest:<id>``. With ``since``,
        the daemon first replays buffered events whose seq is greater.
        """
        if not isinstance(topic, str) or not TOPIC_RE.fullmatch(topic):
            raise ValueError(f"`topic` must be one of backtest, trading, logs, backtest:<id>, sweep:<id>; got {topic!r}")
        if since is not None:
            self.last_seq[topic] = since
        await self.connect()  # before adding the topic, so connecting does not subscribe it twice
        self.topics.add(topic)
        return await self._request("subscribe", topic)

    async def unsubscribe(self, topic: str) -> dict[str, Any] | None:
        """Stop receiving ``topic``; returns the daemon's ``unsubscription_confirmed`` (None when
        not connected: the topic is simply not restored on the next connect)."""
        self.topics.discard(topic)
        self.last_seq.pop(topic, None)
        if not self.connected:
            return None
        return await self._request("unsubscribe", topic)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self._events.get()
            if item is _CLOSED:
                return
            yield item

    async def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None after ``timeout`` seconds or when the client has closed."""
        try:
            item = await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None
        return None if item is _CLOSED else item

    async def close(self) -> None:
        """Close the WebSocket and the HTTP session; no reconnect follows."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._fail_pending(ConnectionError("client closed"))
        self._put(_CLOSED)

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        session = self._http()
        ws = await session.ws_connect(self.ws_url, timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                                      autoping=True, heartbeat=None)
        self._ws = ws
        for topic in list(self.topics):  # restore subscriptions, resuming where we were
            msg: dict[str, Any] = {"action": "subscribe", "topic": topic}
            if topic in self.last_seq:
                msg["since"] = self.last_seq[topic]
            await ws.send_str(json.dumps(msg))
        return ws

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not self._closed:
            await self._serve_connection(ws)
            self._fail_pending(ConnectionError("connection lost"))
            if self._closed or not self.reconnect:
                break
            reopened = await self._reconnect()
            if reopened is None:
                break
            ws = reopened
            self.reconnects += 1
            await self._emit({"type": "reconnected", "topics": sorted(self.topics)})
        self._put(_CLOSED)

    async def _serve_connection(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Read until the socket closes or a ping goes unanswered, then let the socket go."""
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(ws))
        pinger = loop.create_task(self._keepalive(ws))
        try:
            await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, pinger):
                task.cancel()
            await asyncio.gather(reader, pinger, return_exceptions=True)
        if self._ws is ws:
            self._ws = None
        if not ws.closed:  # a dead path never answers the close handshake: bound the wait
            try:
                await asyncio.wait_for(ws.close(code=4000, message=b"pong timeout"), 1.0)
            except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                pass

    async def _reconnect(self) -> aiohttp.ClientWebSocketResponse | None:
        """Backoff with jitter until a connection opens; None after too many attempts."""
        for attempt in range(self.max_reconnect_attempts):
            if self._closed:
                return None
            delay = min(self.max_delay, self.initial_delay * 2 ** attempt) * (1 - 0.5 * random.random())
            await asyncio.sleep(delay)
            try:
                return await asyncio.wait_for(self._open(), self.connect_timeout)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                continue
        return None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in ws:
            if raw.type is not aiohttp.WSMsgType.TEXT:
                break
            try:
                msg = json.loads(raw.data)
            except ValueError:
                continue
            await self._handle(msg)

    async def _keepalive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Returns (ending the connection) when a ping gets no pong in time; else runs forever."""
        if self.ping_interval <= 0:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(self.ping_interval)
            self._pong.clear()
            await ws.send_str('{"action":"ping"}')
            try:
                await asyncio.wait_for(self._pong.wait(), self.pong_timeout)
            except asyncio.TimeoutError:
                return

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "pong":
            self._pong.set()
            return
        if kind == "subscription_confirmed":
            topic = str(msg.get("topic"))
            self._settle(("subscribe", topic), msg)
            if msg.get("recovered") is False:
                # The gap is gone (or the daemon restarted): accept its seq from here on, and
                # tell the application that it should reload state over REST.
                await self._emit(msg)
                await self._emit({"type": "gap", "topic": topic, "since": self.last_seq.pop(topic, None)})
                return
        elif kind == "unsubscription_confirmed":
            self._settle(("unsubscribe", str(msg.get("topic"))), msg)
        elif isinstance(msg.get("seq"), int):
            topic = frame_topic(msg, self.topics)
            if msg["seq"] <= self.last_seq.get(topic, -1):
                return  # a replayed frame we already have
            self.last_seq[topic] = msg["seq"]
        await self._emit(msg)

    async def _emit(self, msg: dict[str, Any]) -> None:
        for handler in [*self._handlers.get(str(msg.get("type")), []), *self._handlers.get("*", [])]:
            result = handler(msg)
            if inspect.isawaitable(result):
                await result
        self._put(msg)

    def _put(self, item: Any) -> None:
        if self._events.full():
            self._events.get_nowait()
        self._events.put_nowait(item)

    async def _send(self, msg: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("not connected")
        await self._ws.send_str(json.dumps(msg))

    async def _request(self, action: str, topic: str) -> dict[str, Any]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.setdefault((action, topic), []).append(fut)
        msg: dict[str, Any] = {"action": action, "topic": topic}
        if topic in self.last_seq:
            msg["since"] = self.last_seq[topic]
        await self._send(msg)
        return await asyncio.wait_for(fut, self.request_timeout)

    def _settle(self, key: tuple[str, str], msg: dict[str, Any]) -> None:
        for fut in self._pending.pop(key, []):
            if not fut.done():
                fut.set_result(msg)

    def _fail_pending(self, exc: Exception) -> None:
        for futs in self._pending.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(exc)
        self._pending.clear()

    # ---- REST -----------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        return self._session

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call; returns the decoded JSON reply or raises :class:`QmxError`."""
        async with self._http().request(method, self.url + path, json=body) as resp:
            text = await resp.text()
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = text
            if resp.status >= 400:
                raise QmxError(resp.status, _error_message(data, resp.reason or ""), data)
            return data

    async def submit_backtest(self, **body: Any) -> str:
        """``POST /api/backtests``; returns the new backtest id (400 -> QmxError naming the fields)."""
        return str((await self.request("POST", "/api/backtests", body))["backtest_id"])

    async def backtest(self, backtest_id: str) -> dict[str, Any]:
        """``GET /api/backtests/{id}``: status, progress, config, metrics, results, error."""
        return await self.request("GET", f"/api/backtests/{backtest_id}")  # type: ignore[no-any-return]

    async def backtests(self, status: str | None = None) -> list[dict[str, Any]]:
        """``GET /api/backtests[?status=]``."""
        data = await self.request("GET", "/api/backtests" + (f"?status={status}" if status else ""))
        return data.get("backtests", []) if isinstance(data, dict) else data  # type: ignore[no-any-return]

    async def wait(self, backtest_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict[str, Any]:
        """Poll until the run is completed, failed or cancelled; returns the run (TimeoutError after ``timeout``)."""
        async def until_done() -> dict[str, Any]:
            while True:
                run = await self.backtest(backtest_id)
                if run.get("status") in TERMINAL:
                    return run
                await asyncio.sleep(poll)
        return await asyncio.wait_for(until_done(), timeout)

    async def report(self, backtest_id: str) -> str:
        """``GET /api/backtests/{id}/report``: the HTML report (QmxError 404 unknown, 409 unfinished)."""
        async with self._http().get(f"{self.url}/api/backtests/{backtest_id}/report") as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    data: Any = json.loads(text)
                except ValueError:
                    data = text
                raise QmxError(resp.status, _error_message(data, resp.reason or ""), data)
            return text

    async def cancel(self, backtest_id: str) -> Any:
        """``DELETE /api/backtests/{id}``."""
        return await self.request("DELETE", f"/api/backtests/{backtest_id}")

    async def bots(self) -> list[dict[str, Any]]:
        """``GET /api/bots``."""
        data = await self.request("GET", "/api/bots")
        return data.get("bots", data) if isinstance(data, dict) else data  # type: ignore[no-any-return]

    async def start_bot(self, **body: Any) -> dict[str, Any]:
        """``POST /api/bots`` with the bot's config; returns the daemon's reply (with ``bot_id``)."""
        return await self.request("POST", "/api/bots", body)  # type: ignore[no-any-return]

    async def stop_bot(self, bot_id: str) -> Any:
        """``DELETE /api/bots/{id}``."""
        return await self.request("DELETE", f"/api/bots/{bot_id}")

    async def kill(self) -> Any:
        """``POST /api/trading/kill``: the kill switch; every bot stops trading."""
        return await self.request("POST", "/api/trading/kill", {})

    async def resume(self) -> Any:
        """``POST /api/trading/resume``: lift the kill switch."""
        return await self.request("POST", "/api/trading/resume", {})


def _error_message(data: Any, reason: str) -> str:
    if isinstance(data, dict):
        errors = data.get("errors") or data.get("fields")
        if isinstance(errors, dict) and errors:
            return "; ".join(f"{k}: {v}" for k, v in errors.items())
        if data.get("error"):
            return str(data["error"])
    return str(data or reason)


async def submit_and_follow(server_url: str, body: dict[str, Any], *, json_output: bool) -> int:
    """Submit a backtest to a daemon, show live progress on stderr, then print the result.

    Returns the process exit code: 0 completed, 1 failed/cancelled/unreachable, 2 invalid request.
    ``qmx backtest --server URL --follow`` calls this.
    """
    from server.cli_client import follow_backtest  # noqa: PLC0415 - terminal rendering lives there

    return await follow_backtest(server_url, body, json_output=json_output)
