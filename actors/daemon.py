"""The Daemon facade: what the server calls. It owns the processes, actors and the run store.

    daemon = Daemon(data_dir, workers=4, deliver=hub.deliver)
    daemon.start()                       # spawns the log process and the workers, waits for them
    bid = daemon.submit_backtest(cfg)    # writes the queued row (call it from an executor)
    daemon.subscribe(client_id, "backtest")
    daemon.stop()                        # interrupts running jobs, stops every process

Every command except ``start``/``stop``/``submit_*`` is a ``tell``: it never blocks and is safe
from any thread, including the event loop.
"""
from __future__ import annotations

import logging
import multiprocessing
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pykka

from actors.codec import unpack
from actors.connections import ConnectionManager, Disconnect, Publish, Subscribe, Unsubscribe
from actors.children import ChildHandle
from actors.process import ChildSpec, CrashBudget, RecordHandler
from actors.messages import CancelJob, FromChildren, SharedState, Shutdown, SubmitJob, ToChild
from actors.runstore import RunStore
from actors.supervisor import MAX_QUEUE, WORKER, Supervisor

Deliver = Callable[[list[tuple[str, tuple[int, ...]]]], None]

LOG_SPEC = ChildSpec("log", "actors.logproc:log_main")
#: Extra child processes started, watched and restarted like the workers (one line each).
#: A child receives commands sent with ``Daemon.send_to_child(name, cmd)``.
EXTRA_CHILDREN: list[ChildSpec] = [
    ChildSpec("trading", "actors.trading:trading_main"),  # paper-trading bots (issue 5)
]
#: Event types the outbox pumps hand straight to the ConnectionManager (no run state to keep).
DIRECT_EVENTS = frozenset({"trading_update", "bench_event"})

log = logging.getLogger("actors.daemon")


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    """The config as ``engine.parse_config`` sees it, every default filled in (raises ConfigError)."""
    from engine.config import parse_config  # noqa: PLC0415 - the main process needs it only here

    if not isinstance(config, dict):
        raise TypeError(f"`config` must be a dict, got {type(config).__name__}")
    return parse_config(config).to_dict()


class QueueFull(RuntimeError):
    """The job queue holds MAX_QUEUE jobs already; the submission was refused."""


class DaemonNotRunning(RuntimeError):
    """A command was given to a daemon that is not started or already stopping."""


class Daemon:
    """The actor daemon: worker pool, log process, supervisor, connection manager, run store."""

    def __init__(self, data_dir: str | Path, workers: int, deliver: Deliver, *,
                 diagnostics: bool = False, children: list[ChildSpec] | None = None,
                 crash_limit: int = 5, crash_window: float = 60.0) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"`workers` must be an integer >= 1, got {workers!r}")
        if not callable(deliver):
            raise TypeError(f"`deliver` must be callable, got {deliver!r}")
        self.data_dir = Path(data_dir)
        self.workers = workers
        self.diagnostics = diagnostics
        self._deliver = deliver
        self._extra = list(EXTRA_CHILDREN if children is None else children)
        self._budget = CrashBudget(crash_limit, crash_window)
        self._state = "new"
        self._lock = threading.Lock()
        self._shared = SharedState()
        self.store: RunStore | None = None
        self._log_dropped = 0
        self.interrupted_at_start: list[str] = []

    @property
    def store_path(self) -> Path:
        """Where the SQLite run store lives: ``data_dir/qmx.sqlite``."""
        return self.data_dir / "qmx.sqlite"

    # ------------------------------------------------------------------ lifetime
    def start(self, timeout: float = 60.0) -> None:
        """Spawn the log process and the workers; return once all are ready, or raise."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"Daemon.start() called in state {self._state!r}; start once")
            self._state = "starting"
        try:
            self._boot()
        except BaseException:
            with self._lock:
                self._state = "stopping"
            self._teardown(8.0)
            raise
        with self._lock:
            self._state = "running"
        self._wait_ready(timeout)
        log.info("daemon started: %d workers, data dir %s", self.workers, self.data_dir)

    def _boot(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        mp = multiprocessing.get_context("spawn")  # we have threads: never fork
        self.store = RunStore(self.store_path)
        self.interrupted_at_start = self.store.mark_interrupted(
            "found queued or running when the daemon started; the previous daemon stopped first")
        self._refs_ready = threading.Event()
        self._cm = ConnectionManager.start(self._deliver)
        self._children = self._make_children(mp)
        self._sup = Supervisor.start(self._children, self.store, self._cm, self._shared,
                                     self._budget)
        self._refs_ready.set()
        self._log_handler = RecordHandler(self._log_sink, "main")
        logging.getLogger().addHandler(self._log_handler)
        if logging.getLogger("actors").level == logging.NOTSET:
            logging.getLogger("actors").setLevel(logging.INFO)

    def _make_children(self, mp: Any) -> dict[str, list[ChildHandle]]:
        specs = [LOG_SPEC, ChildSpec(WORKER, "actors.worker:worker_main", self.workers)] + self._extra
        return {s.name: [ChildHandle(s, i, mp, self._route, str(self.data_dir)) for i in range(s.count)]
                for s in specs}

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            h = self._shared.health()
            if h["children_total"] and h["children_ready"] == h["children_total"]:
                return
            if time.monotonic() > deadline or h["degraded"]:
                self.stop()
                raise RuntimeError(f"daemon processes not ready within {timeout} s: "
                                   f"{h['children_ready']}/{h['children_total']} ready")
            time.sleep(0.02)

    def begin_shutdown(self, timeout: float = 1.5) -> None:
        """Stop accepting work and end every queued or running job as ``interrupted`` now.

        Their ``backtest_error`` events are handed to ``deliver`` before this returns, so a
        server can still send them to its clients before closing the sockets; :meth:`stop`
        then stops the processes. Blocking (up to ``timeout`` s): call it from an executor.
        """
        with self._lock:
            if self._state != "running":
                return
            self._state = "draining"
        try:
            self._sup.ask(Shutdown("the daemon is shutting down"), timeout=timeout / 2)
            # The supervisor told the manager its final events; any reply to an ask means the
            # manager has handled (and delivered) everything told before it.
            self._cm.ask(None, timeout=timeout / 2)
        except (pykka.Timeout, pykka.ActorDeadError):
            log.warning("interrupting the running jobs took longer than %.1f s", timeout)

    def stop(self, timeout: float = 8.0) -> None:
        """Stop accepting work, end running jobs as ``interrupted``, stop every process.

        Children get until ``timeout`` minus 1.5 s to exit, then are terminated and killed.
        Idempotent; safe to call when start() failed half-way.
        """
        with self._lock:
            if self._state in ("new", "stopping", "stopped"):
                self._state = "stopped" if self._state == "new" else self._state
                return
            self._state = "stopping"
        self._teardown(timeout)

    def _teardown(self, timeout: float) -> None:
        """Stop whatever start() got running (everything, or part of it after a failure)."""
        deadline = time.monotonic() + timeout
        sup, cm = getattr(self, "_sup", None), getattr(self, "_cm", None)
        children: dict[str, list[ChildHandle]] = getattr(self, "_children", {})
        if sup is not None:
            try:
                sup.ask(Shutdown("the daemon is shutting down"), timeout=min(3.0, timeout / 2))
            except (pykka.Timeout, pykka.ActorDeadError):
                log.warning("supervisor did not acknowledge shutdown in time")
        others = [h for name, hs in children.items() if name != "log" for h in hs]
        for h in others:
            h.shutdown(deadline - 1.5)
        for h in others:
            h.join_pump(0.5)  # their last messages (and log records) are routed by now
        if getattr(self, "_log_handler", None) is not None:
            logging.getLogger().removeHandler(self._log_handler)
        for h in children.get("log", []):
            h.send({"cmd": "stop"})
            h.shutdown(deadline - 0.5)
            h.join_pump(0.5)
        for ref in (sup, cm):
            if ref is None:
                continue
            try:
                ref.stop(block=True, timeout=max(0.5, deadline - time.monotonic()))
            except pykka.Timeout:
                log.warning("actor %s did not stop in time", ref)
        if self.store is not None:
            self.store.close()
        with self._lock:
            self._state = "stopped"

    def _route(self, child: ChildHandle, raw: bytes) -> None:
        """One outbox batch from ``child`` (called on its pump thread): log records to the log
        process, trading/bench events straight to the ConnectionManager, the rest to the
        supervisor; at most one tell or put per destination."""
        self._refs_ready.wait(10)
        direct: list[dict[str, Any]] = []
        rest: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        for msg in unpack(raw):
            mtype = msg.get("type")
            if mtype == "_log":
                records.append(msg.get("data") or {})
            elif mtype in DIRECT_EVENTS:
                direct.append(msg)
            else:
                rest.append(msg)
        if records:
            self._forward_logs(records)
        try:
            if direct:
                self._cm.tell(Publish(direct))
            if rest:
                self._sup.tell(FromChildren(rest))
        except pykka.ActorDeadError:
            pass  # stopping

    def _forward_logs(self, records: list[dict[str, Any]]) -> bool:
        # Never log from here: this is the path log records take.
        sent = any(h.send({"cmd": "log", "records": records}, block=False)
                   for h in self._children.get("log", []))
        if not sent:
            self._log_dropped += len(records)
        return sent

    def _log_sink(self, record: dict[str, Any]) -> bool:
        if self._forward_logs([record]):
            return True
        if record.get("levelname") in ("WARNING", "ERROR", "CRITICAL"):
            # The log process is down (e.g. it is the child that just died): the operator still
            # sees the daemon's own warnings on stderr, as the log process would have shown them.
            try:
                print(f"{record['levelname']} [main] {record['name']}: {record['message']}",
                      file=sys.stderr, flush=True)
            except (OSError, ValueError):
                pass
        return False

    # ------------------------------------------------------------------ commands
    def _check_running(self) -> None:
        if self._state != "running":
            raise DaemonNotRunning(f"the daemon is {self._state}; it accepts work only while running")

    def _check_queue(self) -> None:
        if self._shared.health()["queue_length"] >= MAX_QUEUE:
            raise QueueFull(f"the job queue is full ({MAX_QUEUE} jobs waiting); try again later")

    def submit_backtest(self, config: dict[str, Any]) -> str:
        """Queue a backtest (``config`` as validated by ``engine.parse_config``); returns its id.

        The config is validated again and stored with every default filled in (``ConfigError``,
        a ``ValueError`` naming each bad field, if it is invalid). Writes the ``queued`` row
        before returning (blocking I/O: call it from an executor). Raises :class:`QueueFull`
        or :class:`DaemonNotRunning` when the job cannot be taken.
        """
        config = _normalized(config)
        self._check_running()
        self._check_queue()
        assert self.store is not None
        bid = str(uuid.uuid4())
        self.store.create_run(bid, config)
        self._shared.submitted(bid)
        self._sup.tell(SubmitJob(bid, "backtest", config))
        return bid

    def submit_sweep(self, config: dict[str, Any], grid: dict[str, list[Any]],
                     objective: str = "sharpe_ratio") -> str:
        """Queue a parameter sweep split over all workers; returns its ``sweep_id``."""
        config = _normalized(config)
        if not isinstance(grid, dict) or not grid:
            raise ValueError(f"`grid` must be a non-empty object of parameter -> values, got {grid!r}")
        if not isinstance(objective, str) or not objective:
            raise ValueError(f"`objective` must be a metric name or expression, got {objective!r}")
        self._check_running()
        self._check_queue()
        assert self.store is not None
        sid = str(uuid.uuid4())
        self.store.create_run(sid, config, kind="sweep", extra={"grid": grid, "objective": objective})
        self._sup.tell(SubmitJob(sid, "sweep", config, {"grid": grid, "objective": objective}))
        return sid

    def submit_burst(self, count: int, rate: float | None = None, size: int = 100) -> str:
        """Diagnostics: a worker emits ``count`` bench_event events (topic ``bench``)."""
        if not self.diagnostics:
            raise RuntimeError("submit_burst needs a daemon started with diagnostics=True")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"`count` must be an integer >= 1, got {count!r}")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or rate <= 0):
            raise ValueError(f"`rate` must be a number > 0 or None (as fast as possible), got {rate!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"`size` must be an integer >= 0, got {size!r}")
        self._check_running()
        job_id = f"burst-{uuid.uuid4()}"
        self._sup.tell(SubmitJob(job_id, "burst", {}, {"count": count, "rate": rate, "size": size}))
        return job_id

    def cancel_backtest(self, backtest_id: str, reason: str = "cancelled by request") -> bool:
        """Cancel a queued or running backtest; False if unknown or already finished.

        A running backtest stops at its next progress check, or its worker is killed after
        0.4 s; either way it ends as ``cancelled`` with ``backtest_error`` "Backtest cancelled".
        """
        if self._state != "running" or self._shared.status_of(backtest_id) is None:
            return False
        self._sup.tell(CancelJob(backtest_id, reason))
        return True

    def cancel_sweep(self, sweep_id: str, reason: str = "cancelled by request") -> bool:
        """Ask to cancel a running sweep; False when the daemon is not running. Its parts stop
        (queued ones at once, running ones at their next progress check) and it ends ``cancelled``
        with ``sweep_error`` "Sweep cancelled"; a sweep that already ended is left as it is."""
        if self._state != "running":
            return False
        self._sup.tell(CancelJob(sweep_id, reason))
        return True

    def subscribe(self, client_id: int, topic: str, since: int | None = None) -> None:
        """Subscribe a client; the reply (and replay when ``since`` is given) comes via deliver."""
        if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
            raise ValueError(f"`since` must be an integer >= 0 or None, got {since!r}")
        self._tell_cm(Subscribe(client_id, topic, since))

    def unsubscribe(self, client_id: int, topic: str) -> None:
        """Unsubscribe a client from one topic (replies ``unsubscription_confirmed``)."""
        self._tell_cm(Unsubscribe(client_id, topic))

    def disconnect(self, client_id: int) -> None:
        """Forget every subscription of a closed client (no reply)."""
        self._tell_cm(Disconnect(client_id))

    def _tell_cm(self, msg: Any) -> None:
        if self._state not in ("running", "starting", "draining"):
            return
        try:
            self._cm.tell(msg)
        except pykka.ActorDeadError:
            pass

    def trading_command(self, cmd: dict[str, Any]) -> None:
        """Forward a bot command to the trading process's inbox (see actors/trading.py)."""
        self.send_to_child("trading", cmd)

    def send_to_child(self, name: str, cmd: dict[str, Any]) -> None:
        """Put ``cmd`` on the inbox of the live child process named ``name``."""
        if not isinstance(cmd, dict):
            raise TypeError(f"`cmd` must be a dict, got {type(cmd).__name__}")
        self._check_running()
        self._sup.tell(ToChild(name, cmd))

    def health(self) -> dict[str, Any]:
        """A cheap snapshot: workers alive/total, queue length, running, crash budget, degraded."""
        h = self._shared.health()
        h["accepting"] = self._state == "running"
        h["state"] = self._state
        h["log_records_dropped"] = self._log_dropped
        if h.get("degraded"):
            h["status"] = "degraded"
        return h
