"""The main process's side of child processes: one handle per slot, and a watcher of deaths."""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from actors.codec import pack
from actors.process import INBOX_MAXSIZE, OUTBOX_MAXSIZE, ChildContext, ChildSpec, child_entry

log = logging.getLogger("actors.children")


Route = Callable[["ChildHandle", bytes], None]


class _Pump:
    """Reads one child's outbox queue on a main-process thread and hands each batch to ``route``.

    Retired when its child is replaced or stopped: it then reads until the queue is empty and
    exits, so the last words of a dead child still arrive.
    """

    def __init__(self, handle: ChildHandle, q: Any, route: Route) -> None:
        self._handle, self._q, self._route = handle, q, route
        self.retired = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pump-{handle.label}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                raw = self._q.get(timeout=0.1)
            except queue.Empty:
                if self.retired.is_set():
                    break
                continue
            except (OSError, ValueError, EOFError):  # closed under us: nothing more to read
                break
            try:
                self._route(self._handle, raw)
            except Exception:
                log.exception("routing a batch from %s failed", self._handle.label)
        self._q.cancel_join_thread()
        self._q.close()


class ChildHandle:
    """The main process's side of one child slot: spawns it with fresh queues, talks to it."""

    def __init__(self, spec: ChildSpec, index: int, mp: Any, route: Route, data_dir: str,
                 log_level: int = logging.INFO) -> None:
        self.spec, self.index = spec, index
        self._mp, self._route = mp, route
        self._data_dir, self._log_level = data_dir, log_level
        self.process: Any = None
        self.inbox: Any = None
        self._pump: _Pump | None = None
        self.ready = False
        self.dead = False
        self.expected_death = False  # set before we kill it on purpose (cancel, stop)
        self.spawned_at = 0.0
        self.dropped = 0  # messages that did not fit the inbox

    @property
    def label(self) -> str:
        return f"{self.spec.name}-{self.index}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        """Spawned and not yet reported dead (no waitpid here: the watcher thread reaps)."""
        return self.process is not None and not self.dead

    def spawn(self, restart_reason: str | None = None) -> None:
        """Start a new process for this slot with a new inbox and outbox.

        A killed child may have died holding a queue's lock or mid-message, so its queues are
        never reused; the old outbox is still drained by its retiring pump.
        """
        self._drop_queues()
        self.inbox = self._mp.Queue(maxsize=INBOX_MAXSIZE)
        outbox = self._mp.Queue(maxsize=OUTBOX_MAXSIZE)
        ctx = ChildContext(self.spec.name, self.index, self.spec.target, self.inbox, outbox,
                           self._data_dir, dict(self.spec.options), restart_reason, self._log_level)
        self.process = self._mp.Process(target=child_entry, args=(ctx,), name=self.label, daemon=True)
        self.ready = False
        self.dead = False
        self.expected_death = False
        self.spawned_at = time.monotonic()
        self._pump = _Pump(self, outbox, self._route)
        self.process.start()

    def send(self, msg: dict[str, Any], block: bool = True) -> bool:
        """Put one command on the child's inbox; False if no live child can take it (or, with
        ``block=False``, if the inbox is full: the message is dropped and counted)."""
        inbox = self.inbox
        if inbox is None or not self.alive:
            return False
        try:
            inbox.put(pack(msg), block, 1.0)
            return True
        except queue.Full:
            self.dropped += 1
            return False
        except (OSError, ValueError):  # replaced by a respawn on another thread
            return False

    def kill(self) -> None:
        """SIGKILL the child now (its death is then reported by the watcher)."""
        self.expected_death = True
        if self.process is not None and not self.dead:
            self.process.kill()

    def _drop_queues(self) -> None:
        if self.inbox is not None:
            self.inbox.cancel_join_thread()  # never block on a feeder whose reader is dead
            self.inbox.close()
            self.inbox = None
        if self._pump is not None:
            self._pump.retired.set()
            self._pump = None

    def join_pump(self, timeout: float) -> None:
        """Retire the outbox pump and wait for it to drain (used at shutdown)."""
        pump = self._pump
        self._drop_queues()
        if pump is not None:
            pump.thread.join(timeout)

    def shutdown(self, deadline: float) -> str:
        """Join (asked to stop already), then terminate, then kill; returns how it ended."""
        proc = self.process
        how = "not started"
        if proc is not None:
            proc.join(max(0.0, deadline - time.monotonic()))
            how = "stopped"
            if proc.is_alive():
                proc.terminate()
                proc.join(1.0)
                how = "terminated"
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
                how = "killed"
            try:
                proc.close()
            except ValueError:
                pass
        return how


DeathFn = Callable[[str, int, int, "int | None"], None]


class Watcher:
    """A thread that waits on children's sentinels and reports each death exactly once."""

    def __init__(self, on_death: DeathFn, poll: float = 0.1) -> None:
        self._on_death = on_death
        self._poll = poll
        self._lock = threading.Lock()
        self._procs: dict[int, tuple[str, int, Any]] = {}  # sentinel -> (name, index, process)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, name: str, index: int, process: Any) -> None:
        with self._lock:
            self._procs[process.sentinel] = (name, index, process)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        from multiprocessing.connection import wait  # noqa: PLC0415

        while not self._stop.is_set():
            with self._lock:
                sentinels = list(self._procs)
            if not sentinels:
                self._stop.wait(self._poll)
                continue
            for s in wait(sentinels, timeout=self._poll):
                with self._lock:
                    entry = self._procs.pop(s, None)  # type: ignore[call-overload,arg-type]
                if entry is None or self._stop.is_set():
                    continue
                name, index, proc = entry
                proc.join(0.5)  # reap it so exitcode is known
                try:
                    self._on_death(name, index, proc.pid, proc.exitcode)
                except Exception:
                    log.exception("reporting the death of %s-%d failed", name, index)
