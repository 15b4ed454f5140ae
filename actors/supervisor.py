"""Supervisor actor: the job queue, the worker pool, other children, restarts and the crash budget.

It is the only writer of run state after submission (RunStore writes happen on its thread,
never on the event loop) and it publishes backtest events to the ConnectionManager *after*
storing them, so a client that sees ``backtest_complete`` can read the complete run over REST.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import pykka

from actors.children import ChildHandle, Watcher
from actors.connections import Publish
from actors.messages import (CancelJob, ChildDied, FromChildren, HardKill, ReleaseFinal, SharedState,
                             Shutdown, SubmitJob, ToChild)
from actors.process import CrashBudget, describe_exit
from actors.runstore import METRIC_FIELDS, RunStore, now_iso
from actors.worker import error_event

#: Seconds a running job gets to stop by itself before its worker is killed (the engine checks
#: for cancellation about 10 times a second; the rest of the 1 s promise is delivery headroom).
CANCEL_GRACE = 0.4
#: Seconds a final event waits for the run's log entries (they take the longer way, through the
#: log process; on a loaded machine that trip alone can take over half a second). A cancelled
#: run waits less: its end must reach clients within 1 s of the DELETE.
BARRIER_WAIT = 2.0
CANCELLED_BARRIER_WAIT = 0.2
MAX_QUEUE = 1000
#: Closed trades carried by a backtest_complete frame. The store keeps every trade (REST
#: /api/backtests/{id}/trades); a long run's full list would push the frame past the 1 MiB
#: default message limit of common WebSocket clients, the spec's own Python example included.
TRADES_IN_EVENT = 500
WORKER = "worker"

log = logging.getLogger("actors.supervisor")


@dataclass
class Job:
    """Supervisor-side state of one job (mutable, never sent anywhere)."""

    id: str
    kind: str
    config: dict[str, Any]
    extra: dict[str, Any]
    status: str = "queued"
    slot: int | None = None
    cancel_reason: str | None = None
    last_progress_store: float = 0.0


class Supervisor(pykka.ThreadingActor):
    """Schedules jobs FIFO onto ready workers and keeps every child alive within a crash budget."""

    use_daemon_thread = True

    def __init__(self, children: dict[str, list[ChildHandle]], store: RunStore,
                 cm: pykka.ActorRef, shared: SharedState, budget: CrashBudget) -> None:
        super().__init__()
        self._children = children
        self._workers = children.get(WORKER, [])
        self._store = store
        self._cm = cm
        self._shared = shared
        self._budget = budget
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._held: dict[str, dict[str, Any]] = {}
        self._barriers: dict[str, float] = {}
        self._timers: set[threading.Timer] = set()
        self._stopping = False
        self._degraded = False
        self._out: list[dict[str, Any]] = []
        self.watcher = Watcher(self._report_death)
        from actors.sweeps import SweepCoordinator  # noqa: PLC0415 - avoids an import cycle
        self.sweeps = SweepCoordinator(self)

    # ------------------------------------------------------------------ plumbing
    def on_start(self) -> None:
        self.watcher.start()
        for handles in self._children.values():
            for h in handles:
                self._spawn(h, None)
        self._publish_health()

    def on_receive(self, message: Any) -> Any:
        try:
            return self._dispatch_message(message)
        except Exception:  # an exception would stop this actor and with it the whole daemon
            log.exception("supervisor failed on %s; carrying on", type(message).__name__)
            return None
        finally:
            self._flush()
            self._publish_health()
            if isinstance(message, SubmitJob):  # listed as active (or finished) from now on
                self._shared.taken(message.job_id)

    def _flush(self) -> None:
        """Hand the events emitted so far to the connection manager (one tell)."""
        if self._out:
            events, self._out = self._out, []
            self._cm.tell(Publish(events))

    def _dispatch_message(self, message: Any) -> Any:
        if isinstance(message, FromChildren):
            for msg in message.messages:
                self._from_child(msg)
        elif isinstance(message, SubmitJob):
            self._submit(message)
        elif isinstance(message, CancelJob):
            self._cancel(message.job_id, message.reason)
        elif isinstance(message, ChildDied):
            self._child_died(message)
        elif isinstance(message, HardKill):
            self._hard_kill(message.job_id)
        elif isinstance(message, ReleaseFinal):
            self._release(message.job_id)
        elif isinstance(message, ToChild):
            self._to_child(message)
        elif isinstance(message, Shutdown):
            return self._shutdown(message.reason)
        self._schedule()
        return None

    def emit(self, event: dict[str, Any]) -> None:
        """Publish one event after the current message is handled (keeps order, one tell)."""
        self._out.append(event)

    def later(self, delay: float, message: Any) -> None:
        """Tell ourselves ``message`` after ``delay`` seconds (dropped if we are gone by then)."""
        def fire() -> None:
            self._timers.discard(timer)
            try:
                self.actor_ref.tell(message)
            except pykka.ActorDeadError:
                pass
        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _report_death(self, name: str, index: int, pid: int, exitcode: int | None) -> None:
        try:
            self.actor_ref.tell(ChildDied(name, index, pid, exitcode))
        except pykka.ActorDeadError:
            pass

    def _publish_health(self) -> None:
        alive = sum(1 for w in self._workers if w.alive)
        ready = sum(1 for h in self._all_children() if h.ready)
        running = sum(1 for j in self._jobs.values() if j.status == "running")
        active = {j.id: j.status for j in self._jobs.values()
                  if j.status in ("queued", "running") and j.kind == "backtest"}
        self._shared.update(
            {"workers_alive": alive, "workers_ready": sum(1 for w in self._workers if w.ready),
             "workers_total": len(self._workers), "children_ready": ready,
             "children_total": len(self._all_children()), "queue_length": len(self._queue),
             "running": running, "crash_budget": self._budget.snapshot(),
             "degraded": self._degraded,
             "children": [{"name": h.spec.name, "index": h.index, "pid": h.pid, "alive": h.alive,
                           "ready": h.ready, "job_id": self._job_on(h)}
                          for h in self._all_children()]}, active)

    def _job_on(self, h: ChildHandle) -> str | None:
        job = self._running_on(h.index) if h.spec.name == WORKER else None
        return None if job is None else job.id

    def _all_children(self) -> list[ChildHandle]:
        return [h for hs in self._children.values() for h in hs]

    def _find(self, name: str, index: int) -> ChildHandle | None:
        hs = self._children.get(name, [])
        return hs[index] if 0 <= index < len(hs) else None

    def _spawn(self, h: ChildHandle, reason: str | None) -> None:
        h.spawn(reason)
        self.watcher.add(h.spec.name, h.index, h.process)

    # ------------------------------------------------------------------ jobs
    @property
    def store(self) -> RunStore:
        return self._store

    @property
    def workers(self) -> list[ChildHandle]:
        return self._workers

    def _submit(self, msg: SubmitJob) -> None:
        if msg.kind == "sweep":
            self.sweeps.start(msg.job_id, msg.config, msg.extra["grid"], msg.extra["objective"])
        else:
            self.enqueue(msg.job_id, msg.kind, msg.config, msg.extra)

    def enqueue(self, job_id: str, kind: str, config: dict[str, Any], extra: dict[str, Any]) -> None:
        """Append a job to the FIFO queue; it starts when a worker is free."""
        self._jobs[job_id] = Job(job_id, kind, config, dict(extra))
        self._queue.append(job_id)

    def cancel_part(self, job_id: str) -> None:
        """Drop a sweep part quietly: its sweep has already ended."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        job.kind = "detached"  # its end must not reach the (finished) sweep again
        self._cancel(job_id, "its sweep ended")

    def _schedule(self) -> None:
        if self._stopping:
            return
        if self._degraded and not any(w.alive for w in self._workers):
            while self._queue:
                self.finish(self._queue.popleft(), "failed", "No backtest workers available",
                            "the crash budget is exhausted and no worker is alive; restart the daemon")
            return
        for w in self._workers:
            if not self._queue:
                return
            if w.ready and w.alive and self._running_on(w.index) is None:
                job = self._jobs[self._queue.popleft()]
                self._start_job(job, w)

    def _running_on(self, index: int) -> Job | None:
        for j in self._jobs.values():
            if j.slot == index and j.status == "running":
                return j
        return None

    def _start_job(self, job: Job, w: ChildHandle) -> None:
        job.status, job.slot = "running", w.index
        if job.kind == "backtest":
            self._store.set_status(job.id, "running")
        payload = {"job_id": job.id, "kind": job.kind, "config": job.config, **job.extra}
        if not w.send({"cmd": "run", "job": payload}):
            job.status, job.slot = "queued", None
            self._queue.appendleft(job.id)

    def finish(self, job_id: str, status: str, error: str | None = None,
               details: str | None = None, event: dict[str, Any] | None = None,
               wait_for_logs: bool = False) -> None:
        """End a job: store its outcome, forget it, and publish its final event."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        job.status = status
        if job.kind == "sweep_part":
            self.sweeps.part_finished(job, status, event, error, details)
            return
        if job.kind != "backtest":
            return
        if event is None:
            event = error_event(job_id, error or status, details or "")
        if status == "completed":
            data = event["data"]
            self._store.complete_run(job_id, {k: data.get(k) for k in METRIC_FIELDS},
                                     data.get("results") or {})
            event = for_transport(event)
        else:
            self._store.set_status(job_id, status, error=event["data"].get("error"),
                                   error_details=event["data"].get("error_details"))
        if wait_for_logs and job_id not in self._barriers and self._log_ready():
            self._held[job_id] = event
            self.later(CANCELLED_BARRIER_WAIT if status == "cancelled" else BARRIER_WAIT,
                       ReleaseFinal(job_id))
        else:
            self._barriers.pop(job_id, None)
            self.emit(event)

    def _log_ready(self) -> bool:
        """A log process is up to forward barriers (while it restarts, nobody waits for one)."""
        return any(h.ready and h.alive for h in self._children.get("log", []))

    def _release(self, job_id: str) -> None:
        held = self._held.pop(job_id, None)
        if held is not None:
            self.emit(held)

    def _cancel(self, job_id: str, reason: str) -> None:
        job = self._jobs.get(job_id)
        if job is None:
            self.sweeps.cancel(job_id, reason)  # a sweep is no job of its own, its parts are
            return
        if job.status == "queued":
            self._queue.remove(job_id)
            self.finish(job_id, "cancelled", "Backtest cancelled", f"{reason} at {now_iso()} "
                        "while queued")
        elif job.status == "running" and job.cancel_reason is None:
            job.cancel_reason = f"{reason} at {now_iso()}"
            w = self._workers[job.slot] if job.slot is not None else None
            if w is not None:
                w.send({"cmd": "cancel", "job_id": job_id, "reason": job.cancel_reason})
            self.later(CANCEL_GRACE, HardKill(job_id))

    def _hard_kill(self, job_id: str) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.status != "running" or job.slot is None:
            return
        w = self._workers[job.slot]
        w.ready = False
        w.kill()
        self.finish(job_id, "cancelled", "Backtest cancelled",
                    f"{job.cancel_reason}; the worker did not stop within {CANCEL_GRACE} s "
                    f"and was killed")

    # ------------------------------------------------------------------ children
    def _from_child(self, msg: dict[str, Any]) -> None:
        mtype = msg.get("type")
        data = msg.get("data") or {}
        if mtype == "_job_end":
            self._job_end(data)
        elif mtype == "_log_barrier":
            job_id = str(data.get("job_id"))
            if job_id in self._held:
                self._barriers.pop(job_id, None)
                self._release(job_id)
            else:
                self._barriers[job_id] = time.monotonic()
                self._prune_barriers()
        elif mtype == "_ready":
            h = self._find(data.get("child", ""), int(data.get("index", -1)))
            if h is not None and h.pid == data.get("pid"):
                h.ready = True
        elif mtype in ("backtest_start", "backtest_progress"):
            job = self._jobs.get(str(data.get("backtest_id")))
            if job is None or job.status != "running":
                return  # a late event of a run that already ended (cancelled, interrupted)
            if mtype == "backtest_progress":
                self._store_progress(job, float(data.get("progress", 0.0)))
            self.emit(msg)
        elif mtype == "_sweep_part_progress":
            self.sweeps.part_progress(data)
        elif isinstance(mtype, str) and not mtype.startswith("_"):
            self.emit(msg)

    def _store_progress(self, job: Job, progress: float) -> None:
        now = time.monotonic()
        if now - job.last_progress_store >= 0.5 or progress >= 100.0:
            job.last_progress_store = now
            self._store.set_progress(job.id, progress)

    def _prune_barriers(self) -> None:
        if len(self._barriers) > 1000:
            cutoff = time.monotonic() - 60
            self._barriers = {k: t for k, t in self._barriers.items() if t >= cutoff}

    def _job_end(self, data: dict[str, Any]) -> None:
        job = self._jobs.get(data.get("job_id", ""))
        if job is None or job.status != "running":
            return
        job.slot = None
        self.finish(job.id, data.get("status", "failed"), event=data.get("event"),
                    wait_for_logs=True)

    def _child_died(self, msg: ChildDied) -> None:
        h = self._find(msg.name, msg.index)
        if h is None or h.pid != msg.pid or self._stopping:
            return
        h.ready = False
        h.dead = True
        how = describe_exit(msg.exitcode)
        expected = h.expected_death
        if msg.name == WORKER:
            job = self._running_on(msg.index)
            if job is not None:
                job.slot = None
                self.finish(job.id, "failed", f"worker process died: {how}",
                            f"{h.label} (pid {msg.pid}) died while running this job; a new worker "
                            "takes its slot")
                self._flush()  # the error goes out now, not after the replacement is spawned
        if not expected:
            log.warning("%s (pid %d) died unexpectedly: %s", h.label, msg.pid, how)
            if not self._budget.record():
                self._degraded = True
                log.error("crash budget exhausted (%d deaths within %.0f s): not restarting %s; "
                          "the daemon is degraded", self._budget.limit, self._budget.window, h.label)
                return
        self._spawn(h, f"previous {h.spec.name} process {how}")

    def _to_child(self, msg: ToChild) -> None:
        for h in self._children.get(msg.name, []):
            if h.send(msg.msg):
                return
        log.warning("no live %s process to take command %r", msg.name, msg.msg.get("cmd"))

    def _shutdown(self, reason: str) -> dict[str, int]:
        """Interrupt every job, tell every child to stop; the Daemon joins them afterwards."""
        self._stopping = True
        self.watcher.stop()
        for t in list(self._timers):
            t.cancel()
        for job_id in list(self._held):
            self._release(job_id)
        counts = {"interrupted": 0}
        for job_id in list(self._jobs):
            counts["interrupted"] += 1
            self.finish(job_id, "interrupted", "Backtest interrupted: the daemon is shutting down",
                        f"{reason} at {now_iso()}")
        self._queue.clear()
        self.sweeps.interrupt_all(reason)
        for h in self._all_children():
            if h.spec.name != "log":
                h.send({"cmd": "stop"})
        self._flush()
        return counts


def for_transport(event: dict[str, Any]) -> dict[str, Any]:
    """The backtest_complete event as sent: the last TRADES_IN_EVENT trades, with the total
    and where to read them all. A new dict; the stored results are untouched."""
    results = event["data"].get("results") or {}
    trades = results.get("trades")
    if not isinstance(trades, list) or len(trades) <= TRADES_IN_EVENT:
        return event
    bid = event["data"]["backtest_id"]
    slim = {**results, "trades": trades[-TRADES_IN_EVENT:], "trades_total": len(trades),
            "trades_truncated": True, "trades_url": f"/api/backtests/{bid}/trades"}
    return {**event, "data": {**event["data"], "results": slim}}
