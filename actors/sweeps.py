"""Parameter sweeps across the worker pool: split a grid into parts, run them, merge and rank.

Supervisor side: :class:`SweepCoordinator` expands the grid (``engine.sweep``), deals the
combinations into one part per worker (``split_grid``), queues each part as a ``sweep_part`` job,
aggregates progress and ranks the merged rows by the objective (best first, undefined last).
Events (topics ``backtest`` and ``sweep:<id>``):

- ``sweep_start``    {sweep_id, symbol, timeframe, variant, strategy, objective, combinations, parts, timestamp}
- ``sweep_progress`` {sweep_id, progress, completed, total, timestamp}
- ``sweep_complete`` {sweep_id, objective, combinations, evaluated, skipped, best, results, duration_seconds, timestamp}
- ``sweep_error``    {sweep_id, error, error_details, timestamp}

Worker side: :func:`run_sweep_part` runs each combination with ``engine.run_backtest`` on bars
loaded once; invalid combinations (rejected by ``parse_config``) are skipped and counted.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.runstore import METRIC_FIELDS, now_iso
from actors.worker import error_event

if TYPE_CHECKING:
    from actors.process import ChildIO
    from actors.supervisor import Job, Supervisor
    from actors.worker import _Cancel

PROGRESS_EVERY = 0.25  # seconds between a part's progress reports
TOP_IN_EVENT = 50  # ranked rows carried by sweep_complete (the store keeps all of them)

log = logging.getLogger("actors.sweeps")


@dataclass
class _Sweep:
    id: str
    config: dict[str, Any]
    objective: str
    total: int
    parts: dict[str, int] = field(default_factory=dict)  # part job id -> combos in it
    done: dict[str, int] = field(default_factory=dict)  # part job id -> combos finished
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    finished_parts: int = 0
    started: float = field(default_factory=time.monotonic)
    last_progress: float = 0.0


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted by ``objective`` descending; rows whose objective is None go last."""
    return sorted(rows, key=lambda r: (r.get("objective") is None, -(r.get("objective") or 0.0)))


class SweepCoordinator:
    """Supervisor-side bookkeeping of running sweeps (runs on the supervisor's thread)."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._sweeps: dict[str, _Sweep] = {}

    def start(self, sweep_id: str, config: dict[str, Any], grid: dict[str, Any], objective: str) -> None:
        """Split the grid over the workers and queue the parts; emits sweep_start."""
        from engine.sweep import expand_grid, normalize_grid, split_grid  # noqa: PLC0415

        store = self._sup.store
        try:
            combos = expand_grid(normalize_grid(grid), base=config.get("params") or {})
        except ValueError as exc:
            store.set_status(sweep_id, "failed", error=f"Invalid grid: {exc}", error_details=str(exc))
            self._sup.emit(error_event(sweep_id, f"Invalid grid: {exc}", str(exc), "sweep_id", "sweep_error"))
            return
        parts = split_grid(combos, max(1, len(self._sup.workers)))
        sweep = _Sweep(sweep_id, config, objective, len(combos))
        self._sweeps[sweep_id] = sweep
        store.set_status(sweep_id, "running")
        self._sup.emit({"type": "sweep_start", "data": {
            "sweep_id": sweep_id, "symbol": config.get("symbol"), "timeframe": config.get("timeframe"),
            "variant": config.get("variant"), "strategy": config.get("strategy"),
            "objective": objective, "combinations": len(combos), "parts": len(parts),
            "timestamp": now_iso()}})
        for i, part in enumerate(parts):
            part_id = f"{sweep_id}.{i}"
            sweep.parts[part_id] = len(part)
            self._sup.enqueue(part_id, "sweep_part", config,
                              {"sweep_id": sweep_id, "combos": part, "objective": objective})

    def part_progress(self, data: dict[str, Any]) -> None:
        sweep = self._sweeps.get(data.get("sweep_id", ""))
        if sweep is None or data.get("job_id") not in sweep.parts:
            return
        sweep.done[data["job_id"]] = int(data.get("done", 0))
        now = time.monotonic()
        if now - sweep.last_progress >= PROGRESS_EVERY:
            sweep.last_progress = now
            self._progress(sweep)

    def _progress(self, sweep: _Sweep) -> None:
        completed = sum(sweep.done.values())
        pct = 100.0 if sweep.total == 0 else round(100.0 * completed / sweep.total, 2)
        self._sup.store.set_progress(sweep.id, pct)
        self._sup.emit({"type": "sweep_progress", "data": {
            "sweep_id": sweep.id, "progress": pct, "completed": completed, "total": sweep.total,
            "timestamp": now_iso()}})

    def part_finished(self, job: Job, status: str, event: dict[str, Any] | None,
                      error: str | None, details: str | None) -> None:
        """A part ended: merge its rows, or fail the whole sweep (and cancel its other parts)."""
        sweep = self._sweeps.get(job.extra.get("sweep_id", ""))
        if sweep is None:
            return
        if status != "completed" or event is None or event.get("type") != "_sweep_part":
            if event is not None and event.get("data", {}).get("error"):
                error, details = event["data"]["error"], event["data"].get("error_details")
            self._fail(sweep, status, error or f"sweep part {status}", details or "")
            return
        sweep.rows.extend(event["data"]["rows"])
        sweep.skipped += int(event["data"].get("skipped", 0))
        sweep.done[job.id] = sweep.parts[job.id]
        sweep.finished_parts += 1
        if sweep.finished_parts < len(sweep.parts):
            self._progress(sweep)
            return
        self._complete(sweep)

    def _complete(self, sweep: _Sweep) -> None:
        del self._sweeps[sweep.id]
        self._progress(sweep)
        ranked = rank(sweep.rows)
        best = ranked[0] if ranked else None
        duration = round(time.monotonic() - sweep.started, 3)
        results = {"objective": sweep.objective, "combinations": sweep.total,
                   "evaluated": len(ranked), "skipped": sweep.skipped, "best": best,
                   "ranked": ranked, "duration_seconds": duration}
        metrics = dict(best["metrics"]) if best else {}
        self._sup.store.complete_run(sweep.id, metrics, results)
        self._sup.emit({"type": "sweep_complete", "data": {
            "sweep_id": sweep.id, "objective": sweep.objective, "combinations": sweep.total,
            "evaluated": len(ranked), "skipped": sweep.skipped, "best": best,
            "results": ranked[:TOP_IN_EVENT], "duration_seconds": duration, "timestamp": now_iso()}})

    def _fail(self, sweep: _Sweep, status: str, error: str, details: str) -> None:
        del self._sweeps[sweep.id]
        for part_id in sweep.parts:
            self._sup.cancel_part(part_id)
        final = "interrupted" if status == "interrupted" else "cancelled" if status == "cancelled" else "failed"
        self._sup.store.set_status(sweep.id, final, error=error, error_details=details)
        self._sup.emit(error_event(sweep.id, error, details, "sweep_id", "sweep_error"))

    def interrupt_all(self, reason: str) -> None:
        """Daemon shutdown: every running sweep ends as ``interrupted``."""
        for sweep in list(self._sweeps.values()):
            self._fail(sweep, "interrupted", "Sweep interrupted: the daemon is shutting down", reason)


def run_sweep_part(io: ChildIO, job: dict[str, Any], data_dir: Path,
                   cancel: _Cancel) -> tuple[str, dict[str, Any]]:
    """Worker side: evaluate this part's combinations; returns (status, ``_sweep_part`` event)."""
    import engine  # noqa: PLC0415
    from engine.sweep import compile_objective  # noqa: PLC0415

    job_id, sweep_id = job["job_id"], job["sweep_id"]
    try:
        base = engine.parse_config(job["config"])
        objective = compile_objective(job["objective"])
        store = engine.DataStore(data_dir)
        bars = store.load(base.symbol, base.timeframe, base.start_date, base.end_date)
    except Exception as exc:
        return "failed", error_event(sweep_id, f"Sweep setup failed: {type(exc).__name__}: {exc}",
                                     traceback.format_exc(), "sweep_id", "sweep_error")
    quiet = logging.getLogger(f"sweep.{sweep_id}")
    quiet.propagate = False  # thousands of runs: their trade logs would flood the log stream
    rows: list[dict[str, Any]] = []
    skipped, last = 0, 0.0

    def check(_: Any) -> None:
        if cancel.reason(job_id) is not None:
            raise engine.Cancelled(cancel.reason(job_id))

    for n, params in enumerate(job["combos"]):
        try:
            cfg = engine.parse_config({**job["config"], "params": params})
        except engine.ConfigError:
            skipped += 1
            continue
        try:
            result = engine.run_backtest(cfg, bars=bars, store=store, progress=check, logger=quiet)
        except engine.Cancelled:
            return "cancelled", error_event(sweep_id, "Sweep cancelled", cancel.reason(job_id) or "",
                                            "sweep_id", "sweep_error")
        except Exception as exc:
            return "failed", error_event(sweep_id, f"Strategy execution failed: {type(exc).__name__}: "
                                         f"{exc}", traceback.format_exc(), "sweep_id", "sweep_error")
        metrics = {k: result.get(k) for k in METRIC_FIELDS}
        metrics.update((result.get("results") or {}).get("metrics") or {})
        rows.append({"params": params, "metrics": metrics, "objective": objective(metrics)})
        if time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            io.send({"type": "_sweep_part_progress", "data": {"sweep_id": sweep_id, "job_id": job_id,
                                                              "done": n + 1}}, droppable=True)
    return "completed", {"type": "_sweep_part", "data": {"rows": rows, "skipped": skipped}}
