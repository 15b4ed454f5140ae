"""The main process's side of child processes: one handle per slot, and a watcher of deaths."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from actors.codec import pack
from actors.process import ChildContext, ChildSpec, child_entry

log = logging.getLogger("actors.children")


class ChildHandle:
    """The main process's side of one child slot: spawns it (fresh inbox each time), talks to it."""

    def __init__(self, spec: ChildSpec, index: int, mp: Any, outbox: Any, log_queue: Any,
                 data_dir: str, log_level: int = logging.INFO) -> None:
        self.spec, self.index = spec, index
        self._mp, self._outbox, self._log_queue = mp, outbox, log_queue
        self._data_dir, self._log_level = data_dir, log_level
        self.process: Any = None
        self.inbox: Any = None
        self.ready = False
        self.dead = False
        self.expected_death = False  # set before we kill it on purpose (cancel, stop)
        self.spawned_at = 0.0

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
        """Start a new process for this slot (a killed child may hold the old inbox's lock)."""
        self._drop_inbox()
        self.inbox = self._mp.Queue()
        ctx = ChildContext(self.spec.name, self.index, self.spec.target, self.inbox, self._outbox,
                           self._log_queue, self._data_dir, dict(self.spec.options),
                           restart_reason, self._log_level)
        self.process = self._mp.Process(target=child_entry, args=(ctx,), name=self.label, daemon=True)
        self.ready = False
        self.dead = False
        self.expected_death = False
        self.spawned_at = time.monotonic()
        self.process.start()

    def send(self, msg: dict[str, Any]) -> bool:
        """Put one command on the child's inbox; False if there is no live child to take it."""
        if self.inbox is None or not self.alive:
            return False
        self.inbox.put(pack(msg))
        return True

    def kill(self) -> None:
        """SIGKILL the child now (its death is then reported by the watcher)."""
        self.expected_death = True
        if self.process is not None and not self.dead:
            self.process.kill()

    def _drop_inbox(self) -> None:
        if self.inbox is not None:
            self.inbox.cancel_join_thread()  # never block on a feeder whose reader is dead
            self.inbox.close()
            self.inbox = None

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
        self._drop_inbox()
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
