"""Generic child-process machinery: specs, spawning, batched outboxes, logging, crash budget.

Every QuantMindX child (backtest workers, the log process, the trading process) is described by
a :class:`ChildSpec` and started with the multiprocessing ``spawn`` context (the main process has
threads, so it must never ``fork``). A child gets one inbox queue of msgpack bytes and shares the
main process's outbox queue; its entry point receives a :class:`ChildIO`.

Outbox policy (see docs/readme/daemon-internals.md): messages are batched, one ``put`` carrying a
list, flushed when 256 messages are waiting or the oldest is 3 ms old. The outbox queue is
bounded; when the main process does not drain it for a while, *droppable* messages (progress,
bench events) are dropped and counted, while terminal events wait and are retried, so a worker
never stalls forever and never grows memory without bound.
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
OUTBOX_MAXSIZE = 4096  # batches
PENDING_LIMIT = 50_000  # messages waiting in one child before droppable ones are discarded
LOG_QUEUE_MAXSIZE = 20_000  # records

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
    log_queue: Any
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
    """Batches messages from one child onto the shared outbox queue (see module docstring)."""

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


class QueueLogHandler(logging.Handler):
    """Sends each record as a msgpack dict to the log process; never blocks the caller.

    When the bounded log queue is full the record is dropped and counted in ``dropped``; the
    count rides along on the next record that gets through, so the loss is visible in the log.
    """

    def __init__(self, q: Any, process_name: str) -> None:
        super().__init__()
        self._q = q
        self._process = process_name
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                msg = msg + "\n" + logging.Formatter().formatException(record.exc_info)
            item = {"name": record.name, "levelname": record.levelname, "message": msg,
                    "module": record.module, "funcName": record.funcName, "lineno": record.lineno,
                    "created": record.created, "processName": self._process,
                    "dropped": self.dropped}
            self._q.put_nowait(pack(item))
            self.dropped = 0
        except queue.Full:
            self.dropped += 1
        except Exception:  # a log call must never take its caller down
            self.handleError(record)


def install_log_handler(q: Any, process_name: str, level: int = logging.INFO) -> QueueLogHandler:
    """Route this (child) process's root logger to the log process, replacing other handlers."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = QueueLogHandler(q, process_name)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


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

    def ready(self) -> None:
        """Tell the supervisor this child is ready for work."""
        self.send({"type": "_ready", "data": {"child": self.ctx.name, "index": self.ctx.index,
                                              "pid": os.getpid()}})
        self.outbox.flush()

    def messages(self, poll: float = 0.2) -> Iterator[dict[str, Any]]:
        """Yield decoded inbox messages until a ``{"cmd": "stop"}`` arrives or the parent dies."""
        parent = os.getppid()
        while not self.stopping.is_set():
            try:
                raw = self.ctx.inbox.get(timeout=poll)
            except queue.Empty:
                if os.getppid() != parent:  # orphaned: the main process is gone
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
    handler = None
    if ctx.log_queue is not None:
        handler = install_log_handler(ctx.log_queue, label, ctx.log_level)
    module, _, func = ctx.target.partition(":")
    io = ChildIO(ctx)
    try:
        getattr(importlib.import_module(module), func)(io)
    except Exception:
        logging.getLogger(f"actors.{ctx.name}").exception("%s crashed", label)
        raise
    finally:
        io.outbox.close()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
