"""Generic child-process machinery: specs, batched outboxes, logging, the child entry point.

Every QuantMindX child (backtest workers, the log process, the trading process) is described by
a :class:`ChildSpec` and started with the multiprocessing ``spawn`` context (the main process has
threads, so it must never ``fork``). Each child gets its own inbox and its own outbox queue of
msgpack bytes, both created fresh at every (re)spawn: every queue has exactly one writing and
one reading process, so a child killed in the middle of a write (which can leave a queue's lock
held or half a message in its pipe) breaks only queues that are thrown away with it. Its entry
point receives a :class:`ChildIO`.

Outbox policy (see the README, "Inside the daemon"): messages are batched, one ``put`` carrying a
list, flushed when 256 messages are waiting or the oldest is 3 ms old. The outbox queue is
bounded; when the main process does not drain it for a while, *droppable* messages (progress,
bench events, log records) are dropped and counted, while final events wait and are retried,
so a worker never stalls forever and never grows memory without bound.

Logging: a child's records travel in its outbox as ``_log`` messages; the main process forwards
them to the log process's inbox (it is that inbox's only writer).
"""
from __future__ import annotations

import importlib
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from actors.codec import pack, unpack

BATCH_SIZE = 256
BATCH_AGE = 0.003
OUTBOX_MAXSIZE = 1024  # batches waiting in one child's outbox queue
INBOX_MAXSIZE = 2048  # commands (or log batches for the log process) waiting in one inbox
PENDING_LIMIT = 50_000  # messages waiting in one child before droppable ones are discarded
LOG_RECORDS_PER_S = 5_000  # log records one child sends per second; the rest are counted

log = logging.getLogger("actors.process")


@dataclass(frozen=True)
class ChildSpec:
    """What to run in a child process.

    ``target`` is ``"module:function"``; the function takes a :class:`ChildIO` and returns when
    the child should exit. ``count`` children are started (``index`` 0..count-1). ``options`` must
    be msgpack/pickle-safe plain data.
    """

    name: str
    target: str
    count: int = 1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildContext:
    """Everything a child needs, pickled once at spawn time."""

    name: str
    index: int
    target: str
    inbox: Any
    outbox: Any
    data_dir: str
    options: dict[str, Any]
    restart_reason: str | None = None
    log_level: int = logging.INFO


def describe_exit(exitcode: int | None) -> str:
    """Human text for a process exit code: ``killed by signal SIGKILL (exit code -9)``."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by signal {name} (exit code {exitcode})"
    return f"exited with code {exitcode}"


class CrashBudget:
    """Allows at most ``limit`` unexpected deaths per ``window`` seconds; past it, no respawns."""

    def __init__(self, limit: int = 5, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError(f"`limit` must be >= 1, got {limit!r}")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._deaths: deque[float] = deque()
        self.exhausted = False

    def record(self) -> bool:
        """Count one death; return True while a respawn is still allowed."""
        now = self._clock()
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > self.window:
            self._deaths.popleft()
        if len(self._deaths) > self.limit:
            self.exhausted = True
        return not self.exhausted

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        recent = sum(1 for t in self._deaths if now - t <= self.window)
        return {"deaths_in_window": recent, "limit": self.limit,
                "window_seconds": self.window, "exhausted": self.exhausted}


class Outbox:
    """Batches messages from one child onto its outbox queue (see module docstring)."""

    def __init__(self, q: Any, batch_size: int = BATCH_SIZE, batch_age: float = BATCH_AGE) -> None:
        self._q = q
        self._batch_size = batch_size
        self._batch_age = batch_age
        self._pending: list[tuple[dict[str, Any], bool]] = []
        self._first_at = 0.0
        self._cond = threading.Condition()
        self._put_lock = threading.Lock()  # one batch in flight at a time keeps messages in order
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="outbox-flusher", daemon=True)
        self._thread.start()

    def send(self, msg: dict[str, Any], droppable: bool = False) -> None:
        """Queue one message; ``droppable`` ones may be discarded under back-pressure."""
        with self._cond:
            if droppable and len(self._pending) >= PENDING_LIMIT:
                self.dropped += 1
                return
            if not self._pending:
                self._first_at = time.monotonic()
                self._cond.notify()  # start the age timer
            self._pending.append((msg, droppable))
            if len(self._pending) == self._batch_size:
                self._cond.notify()

    def flush(self, timeout: float = 2.0) -> bool:
        """Push everything queued so far now; True when it all reached the queue."""
        deadline = time.monotonic() + timeout
        while True:
            if self._drain(max(0.001, deadline - time.monotonic())):
                return True
            if time.monotonic() >= deadline:
                return False

    def _drain(self, timeout: float) -> bool:
        with self._put_lock:
            with self._cond:
                batch, self._pending = self._pending, []
            if not batch:
                return True
            try:
                self._q.put(pack([m for m, _ in batch]), timeout=timeout)
                return True
            except queue.Full:
                # The main process is not draining: drop what may be dropped, keep the rest in order.
                keep = [m for m in batch if not m[1]]
                with self._cond:
                    self.dropped += len(batch) - len(keep)
                    self._pending = keep + self._pending
                    if self._pending:
                        self._first_at = time.monotonic() - self._batch_age
                return False

    def _ready(self) -> bool:
        return bool(self._pending) and (len(self._pending) >= self._batch_size
                                        or time.monotonic() - self._first_at >= self._batch_age)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._ready():
                    wait = None
                    if self._pending:
                        wait = max(0.0005, self._batch_age - (time.monotonic() - self._first_at))
                    self._cond.wait(wait)
                if self._closed:
                    return
            self._drain(0.5)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the flusher thread after pushing what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        self.flush(timeout)


def record_dict(record: logging.LogRecord, process_name: str) -> dict[str, Any]:
    """The msgpack-safe dict of a log record that the log process understands."""
    msg = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        msg = msg + "\n" + logging.Formatter().formatException(record.exc_info)
    return {"name": record.name, "levelname": record.levelname, "message": msg,
            "module": record.module, "funcName": record.funcName, "lineno": record.lineno,
            "created": record.created, "processName": process_name}


class RecordHandler(logging.Handler):
    """Hands each record, as :func:`record_dict`, to ``sink``; never blocks or raises.

    At most ``max_per_second`` records a second go out (a strategy that logs on every bar of a
    million-bar run must not flood the daemon); the rest, and any the ``sink`` refuses (it
    returns False when a queue is full), are dropped and counted in ``dropped``. The count rides
    along on the next record that gets through, so the loss shows in the log file.
    """

    def __init__(self, sink: Callable[[dict[str, Any]], bool], process_name: str,
                 max_per_second: int | None = None) -> None:
        super().__init__()
        self._sink = sink
        self._process = process_name
        self._limit = max_per_second
        self._window = 0.0
        self._in_window = 0
        self.dropped = 0

    def _allow(self) -> bool:
        if self._limit is None:
            return True
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._in_window = now, 0
        self._in_window += 1
        return self._in_window <= self._limit

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not self._allow():
                self.dropped += 1
                return
            item = record_dict(record, self._process)
            item["dropped"] = self.dropped
            if self._sink(item):
                self.dropped = 0
            else:
                self.dropped += 1
        except Exception:  # a log call must never take its caller down
            self.handleError(record)


class ChildIO:
    """What a child entry point works with: its context, a batched outbox, and its inbox."""

    def __init__(self, ctx: ChildContext) -> None:
        self.ctx = ctx
        self.outbox = Outbox(ctx.outbox)
        self.stopping = threading.Event()

    @property
    def label(self) -> str:
        return f"{self.ctx.name}-{self.ctx.index}"

    def send(self, msg: dict[str, Any], droppable: bool = False) -> None:
        """Send one message (an event ``{"type", "data"}`` or an internal ``_``-typed one)."""
        self.outbox.send(msg, droppable)

    def log_record(self, record: dict[str, Any]) -> bool:
        """Send one log record (or a ``{"barrier": job_id}``) towards the log process."""
        self.outbox.send({"type": "_log", "data": record}, droppable="barrier" not in record)
        return True

    def ready(self) -> None:
        """Tell the supervisor this child is ready for work."""
        self.send({"type": "_ready", "data": {"child": self.ctx.name, "index": self.ctx.index,
                                              "pid": os.getpid()}})
        self.outbox.flush()

    def messages(self, poll: float = 0.2,
                 alive: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """Yield decoded inbox messages until a ``{"cmd": "stop"}`` arrives, the parent dies, or
        ``alive()`` (checked every ``poll`` seconds while idle) turns False."""
        parent = os.getppid()
        while not self.stopping.is_set():
            try:
                raw = self.ctx.inbox.get(timeout=poll)
            except queue.Empty:
                if os.getppid() != parent:  # orphaned: the main process is gone
                    return
                if alive is not None and not alive():
                    return
                continue
            msg = unpack(raw)
            if msg.get("cmd") == "stop":
                self.stopping.set()
                return
            yield msg


def child_entry(ctx: ChildContext) -> None:
    """Top-level function every child process runs (spawn needs an importable target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the main process, which stops us
    label = f"{ctx.name}-{ctx.index}"
    io = ChildIO(ctx)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = RecordHandler(io.log_record, label, LOG_RECORDS_PER_S)
    root.addHandler(handler)
    root.setLevel(ctx.log_level)
    module, _, func = ctx.target.partition(":")
    try:
        getattr(importlib.import_module(module), func)(io)
    except Exception:
        logging.getLogger(f"actors.{ctx.name}").exception("%s crashed", label)
        raise
    finally:
        root.removeHandler(handler)
        io.outbox.close()
