"""Messages told to the supervisor (frozen: never mutated after sending) and its shared snapshot."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SubmitJob:
    """Queue a job (``kind``: backtest, sweep, sweep_part, burst); the run row exists already."""

    job_id: str
    kind: str  # backtest | sweep_part | burst
    config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CancelJob:
    """Cancel a queued or running job; ``reason`` ends up in the error details."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class FromChildren:
    """Decoded outbox messages from child processes, in arrival order."""

    messages: list[dict[str, Any]]


@dataclass(frozen=True)
class ChildDied:
    """The watcher saw a child process exit (``exitcode`` negative: killed by that signal)."""

    name: str
    index: int
    pid: int
    exitcode: int | None


@dataclass(frozen=True)
class HardKill:
    """The cancel grace period of a running job is over: kill its worker if it still runs it."""

    job_id: str


@dataclass(frozen=True)
class ReleaseFinal:
    """Stop waiting for a run's log barrier and publish its final event."""

    job_id: str


@dataclass(frozen=True)
class ToChild:
    """Put ``msg`` on the inbox of the live child named ``name``."""

    name: str
    msg: dict[str, Any]


@dataclass(frozen=True)
class Shutdown:
    """Interrupt every job and ask every child except the log process to stop (an ask)."""

    reason: str


class SharedState:
    """Health snapshot and active job ids, written by the supervisor, read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._health: dict[str, Any] = {"workers_alive": 0, "workers_total": 0, "queue_length": 0,
                                        "running": 0, "degraded": False, "children_ready": 0,
                                        "children_total": 0, "workers_ready": 0}
        self._active: dict[str, str] = {}
        self._submitted: set[str] = set()  # told to the supervisor, not yet taken by it

    def update(self, health: dict[str, Any], active: dict[str, str]) -> None:
        with self._lock:
            self._health, self._active = health, active

    def submitted(self, job_id: str) -> None:
        """A job is on its way to the supervisor: it counts as queued until the supervisor has it
        (so a cancel right after the submission is not refused as "already finished")."""
        with self._lock:
            self._submitted.add(job_id)

    def taken(self, job_id: str) -> None:
        """The supervisor has the job (it publishes its status from now on)."""
        with self._lock:
            self._submitted.discard(job_id)

    def health(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._health)

    def status_of(self, job_id: str) -> str | None:
        with self._lock:
            status = self._active.get(job_id)
            return "queued" if status is None and job_id in self._submitted else status
