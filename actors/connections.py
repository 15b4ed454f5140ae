"""ConnectionManager: topics -> subscribers, per-topic seq and ring buffer, encode-once fan-out.

The actor never loops over clients: for each event and topic it builds ONE JSON frame and hands
``(frame, ids)`` to ``deliver``, where ``ids`` is a tuple cached per topic and rebuilt only when
the topic's subscribers change. All frames produced by one message are handed over in one
``deliver`` call, so the server hops to its event loop once per batch.

Ring buffers: the last 2048 frames (at most 32 MB) of each shared topic (``backtest``, ``logs``,
``trading``, ``bench``) and the last 512 frames (at most 4 MB) of each per-run topic
(``backtest:<id>``, ``sweep:<id>``); at most 64 per-run topics are kept, the least recently used
one without subscribers is forgotten first. Whichever limit is hit first evicts the oldest frames.
"""
from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pykka

Deliver = Callable[[list[tuple[str, tuple[int, ...]]]], None]

SHARED_TOPICS: tuple[str, ...] = ("backtest", "trading", "logs", "bench")
RING_SIZE = 2048
RING_BYTES = 32 * 1024 * 1024
RUN_RING_SIZE = 512
RUN_RING_BYTES = 4 * 1024 * 1024
MAX_RUN_TOPICS = 64
_RUN_TOPIC = re.compile(r"^(backtest|sweep):[A-Za-z0-9_.-]{1,64}$")
_BACKTEST_EVENTS = frozenset({"backtest_start", "backtest_progress", "backtest_complete",
                              "backtest_error"})

log = logging.getLogger("actors.connections")


def topic_error(topic: object) -> str | None:
    """None if ``topic`` is valid, else a message saying what is allowed."""
    if isinstance(topic, str) and (topic in SHARED_TOPICS or _RUN_TOPIC.match(topic)):
        return None
    return (f"`topic` must be one of {list(SHARED_TOPICS)} or 'backtest:<id>' / 'sweep:<id>', "
            f"got {topic!r}")


def topics_for(event: dict[str, Any]) -> tuple[str, ...]:
    """The topics an event is published on (see docs/internals.md)."""
    etype = event.get("type", "")
    data = event.get("data") or {}
    if etype in _BACKTEST_EVENTS or (etype == "log_entry" and data.get("backtest_id")):
        return ("backtest", f"backtest:{data.get('backtest_id')}")
    if etype == "log_entry":
        return ("logs",)
    if etype == "trading_update":
        return ("trading",)
    if etype.startswith("sweep_"):
        return ("backtest", f"sweep:{data.get('sweep_id')}")
    if etype == "bench_event":
        return ("bench",)
    return ()


@dataclass(frozen=True)
class Publish:
    """Events (``{"type", "data"}`` dicts) to number, buffer and fan out, in order."""

    events: list[dict[str, Any]]


@dataclass(frozen=True)
class Subscribe:
    client_id: int
    topic: str
    since: int | None = None


@dataclass(frozen=True)
class Unsubscribe:
    client_id: int
    topic: str


@dataclass(frozen=True)
class Disconnect:
    client_id: int


class _Topic:
    """One topic: its seq counter, bounded ring buffer (frames and bytes) and subscribers."""

    __slots__ = ("seq", "ring", "bytes", "max_frames", "max_bytes", "subscribers", "ids")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.seq = 0
        self.ring: deque[tuple[int, str]] = deque()
        self.bytes = 0
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.subscribers: set[int] = set()
        self.ids: tuple[int, ...] = ()

    def append(self, frame: str) -> None:
        self.ring.append((self.seq, frame))
        self.bytes += len(frame)
        while len(self.ring) > self.max_frames or (self.bytes > self.max_bytes and len(self.ring) > 1):
            self.bytes -= len(self.ring.popleft()[1])


class ConnectionManager(pykka.ThreadingActor):
    """Owns subscriptions; numbers, buffers and encodes events once; hands frames to ``deliver``."""

    use_daemon_thread = True

    def __init__(self, deliver: Deliver) -> None:
        super().__init__()
        self._deliver = deliver
        self._topics: dict[str, _Topic] = {t: _Topic(RING_SIZE, RING_BYTES) for t in SHARED_TOPICS}
        self._run_topics: OrderedDict[str, _Topic] = OrderedDict()
        self._client_topics: dict[int, set[str]] = {}
        self.delivered_frames = 0

    def on_receive(self, message: Any) -> Any:
        try:
            self._handle(message)
        except Exception:  # an exception would stop the actor: log it and keep serving
            log.exception("ConnectionManager failed on %s", type(message).__name__)
        return None

    def _handle(self, message: Any) -> None:
        if isinstance(message, Publish):
            self._hand_over(self._publish(message.events))
        elif isinstance(message, Subscribe):
            self._hand_over(self._subscribe(message.client_id, message.topic, message.since))
        elif isinstance(message, Unsubscribe):
            self._hand_over(self._unsubscribe(message.client_id, message.topic))
        elif isinstance(message, Disconnect):
            for topic in self._client_topics.pop(message.client_id, set()):
                self._remove(message.client_id, topic)

    def _hand_over(self, batch: list[tuple[str, tuple[int, ...]]]) -> None:
        if not batch:
            return
        try:
            self._deliver(batch)
        except Exception:  # the server's problem must not kill the fan-out
            log.exception("deliver callback failed for a batch of %d frames", len(batch))

    def _topic(self, name: str, create: bool) -> _Topic | None:
        t = self._topics.get(name)
        if t is not None:
            return t
        t = self._run_topics.get(name)
        if t is not None:
            self._run_topics.move_to_end(name)
            return t
        if not create:
            return None
        t = self._run_topics[name] = _Topic(RUN_RING_SIZE, RUN_RING_BYTES)
        # Forget the least recently used topics without subscribers, never the one just made
        # (its caller is about to publish to it or subscribe to it). Topics somebody listens to
        # stay, so there may be more than MAX_RUN_TOPICS while that many are subscribed.
        for old_name in list(self._run_topics):
            if len(self._run_topics) <= MAX_RUN_TOPICS:
                break
            if old_name != name and not self._run_topics[old_name].subscribers:
                del self._run_topics[old_name]
        return t

    def _publish(self, events: Iterable[dict[str, Any]]) -> list[tuple[str, tuple[int, ...]]]:
        out: list[tuple[str, tuple[int, ...]]] = []
        for event in events:
            topics = topics_for(event)
            if not topics:
                log.warning("dropping event of unknown type %r", event.get("type"))
                continue
            # Encode the payload once; only topic and seq differ between the topics. The topic
            # names the counter a seq belongs to, so a client on `backtest` and `backtest:<id>`
            # at once can tell the two copies apart.
            head = '{"type":' + json.dumps(event["type"]) + ',"data":' + json.dumps(
                event.get("data"), separators=(",", ":")) + ',"topic":'
            for name in topics:
                t = self._topic(name, create=True)
                assert t is not None
                t.seq += 1
                frame = f'{head}{json.dumps(name)},"seq":{t.seq}}}'
                t.append(frame)
                if t.ids:
                    out.append((frame, t.ids))
                    self.delivered_frames += len(t.ids)
        return out

    def _subscribe(self, client: int, topic: str, since: int | None) -> list[tuple[str, tuple[int, ...]]]:
        err = topic_error(topic)
        if err is not None:
            return [(json.dumps({"type": "error", "error": err}), (client,))]
        t = self._topic(topic, create=True)
        assert t is not None
        t.subscribers.add(client)
        t.ids = tuple(t.subscribers)
        self._client_topics.setdefault(client, set()).add(topic)
        reply: dict[str, Any] = {"type": "subscription_confirmed", "topic": topic}
        replay: list[str] = []
        if since is not None:
            oldest = t.ring[0][0] if t.ring else t.seq + 1
            recovered = 0 <= since <= t.seq and since >= oldest - 1
            reply["recovered"] = recovered
            if recovered:
                replay = [frame for seq, frame in t.ring if seq > since]
        ids: tuple[int, ...] = (client,)
        return [(json.dumps(reply), ids)] + [(frame, ids) for frame in replay]

    def _unsubscribe(self, client: int, topic: str) -> list[tuple[str, tuple[int, ...]]]:
        err = topic_error(topic)
        if err is not None:
            return [(json.dumps({"type": "error", "error": err}), (client,))]
        self._remove(client, topic)
        self._client_topics.get(client, set()).discard(topic)
        return [(json.dumps({"type": "unsubscription_confirmed", "topic": topic}), (client,))]

    def _remove(self, client: int, topic: str) -> None:
        t = self._topic(topic, create=False)
        if t is not None and client in t.subscribers:
            t.subscribers.discard(client)
            t.ids = tuple(t.subscribers)
