"""Parameter sweeps across the worker pool: split a grid into parts, run them, merge and rank.

Supervisor side: :class:`SweepCoordinator` expands the grid (``engine.sweep``), sets invalid
combinations aside (counted as skipped), deals the valid ones into one part per worker
(``split_grid``), queues each part as a ``sweep_part`` job, aggregates progress and merges the
parts' ranked results with ``engine.sweep.merge_sweeps`` (best first, undefined objective last).
Events (topics ``backtest`` and ``sweep:<id>``):

- ``sweep_start``    {sweep_id, symbol, timeframe, variant, strategy, objective, combinations, parts, timestamp}
- ``sweep_progress`` {sweep_id, progress, completed, total, timestamp}
- ``sweep_complete`` {sweep_id, objective, combinations, evaluated, skipped, best, results, duration_seconds, timestamp}
- ``sweep_error``    {sweep_id, error, error_details, timestamp}

Worker side: :func:`run_sweep_part` runs its part with ``engine.run_sweep`` (bars loaded once,
indicators shared across combinations) and reports progress and cancellation through its callback.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.runstore import now_iso
from actors.worker import error_event

if TYPE_CHECKING:
    from actors.process import ChildIO
    from actors.supervisor import Job, Supervisor
    from actors.worker import _Cancel

PROGRESS_EVERY = 0.25  # seconds between a part's progress reports
TOP_IN_EVENT = 50  # ranked rows carried by sweep_complete (the store keeps all of them)


@dataclass
class _Sweep:
    id: str
    config: dict[str, Any]
    objective: str
    total: int
    skipped: list[dict[str, Any]]
    order: list[dict[str, Any]]  # the valid combinations in grid order: ties rank as in one sweep
    parts: dict[str, int] = field(default_factory=dict)  # part job id -> combos in it
    done: dict[str, float] = field(default_factory=dict)  # part job id -> combos finished
    results: list[dict[str, Any]] = field(default_factory=list)  # run_sweep result per part
    started: float = field(default_factory=time.monotonic)
    last_progress: float = 0.0


class SweepCoordinator:
    """Supervisor-side bookkeeping of running sweeps (runs on the supervisor's thread)."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._sweeps: dict[str, _Sweep] = {}

    def start(self, sweep_id: str, config: dict[str, Any], grid: dict[str, Any], objective: str) -> None:
        """Split the grid over the workers and queue the parts; emits sweep_start."""
        from engine.sweep import expand_grid, normalize_grid, split_grid  # noqa: PLC0415
        from engine.sweep_eval import split_valid  # noqa: PLC0415

        try:
            combos = expand_grid(normalize_grid(grid), base=config.get("params") or {})
            valid, skipped = split_valid(str(config.get("strategy", "sma_cross")), combos)
            if not valid:
                raise ValueError(f"`grid` has no valid combination for {config.get('strategy')!r}"
                                 + (f"; e.g. {skipped[0]['params']}: {skipped[0]['error']}" if skipped else ""))
        except ValueError as exc:
            self._sup.store.set_status(sweep_id, "failed", error=f"Invalid grid: {exc}", error_details=str(exc))
            self._sup.emit(error_event(sweep_id, f"Invalid grid: {exc}", str(exc), "sweep_id", "sweep_error"))
            return
        parts = split_grid(valid, max(1, len(self._sup.workers)))
        sweep = _Sweep(sweep_id, config, objective, len(combos), skipped, valid)
        self._sweeps[sweep_id] = sweep
        self._sup.store.set_status(sweep_id, "running")
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
        part = data["job_id"]
        sweep.done[part] = min(1.0, float(data.get("fraction", 0.0))) * sweep.parts[part]
        now = time.monotonic()
        if now - sweep.last_progress >= PROGRESS_EVERY:
            sweep.last_progress = now
            self._progress(sweep)

    def _progress(self, sweep: _Sweep) -> None:
        valid = sum(sweep.parts.values())
        completed = int(sum(sweep.done.values()))
        pct = 100.0 if valid == 0 else round(100.0 * completed / valid, 2)
        self._sup.store.set_progress(sweep.id, pct)
        self._sup.emit({"type": "sweep_progress", "data": {
            "sweep_id": sweep.id, "progress": pct, "completed": completed, "total": valid,
            "timestamp": now_iso()}})

    def part_finished(self, job: Job, status: str, event: dict[str, Any] | None,
                      error: str | None, details: str | None) -> None:
        """A part ended: keep its result, or fail the whole sweep (and cancel its other parts)."""
        sweep = self._sweeps.get(job.extra.get("sweep_id", ""))
        if sweep is None:
            return
        if status != "completed" or event is None or event.get("type") != "_sweep_part":
            if event is not None and event.get("data", {}).get("error"):
                error, details = event["data"]["error"], event["data"].get("error_details")
            self._fail(sweep, status, error or f"sweep part {status}", details or "")
            return
        sweep.results.append(event["data"]["result"])
        sweep.done[job.id] = sweep.parts[job.id]
        if len(sweep.results) < len(sweep.parts):
            self._progress(sweep)
            return
        self._complete(sweep)

    def _complete(self, sweep: _Sweep) -> None:
        from engine.sweep import merge_sweeps  # noqa: PLC0415

        del self._sweeps[sweep.id]
        self._progress(sweep)
        merged = merge_sweeps(sweep.results, sweep.objective, order=sweep.order)
        merged["combinations"] = sweep.total
        merged["skipped"] = len(sweep.skipped)
        merged["skipped_examples"] = sweep.skipped[:5]
        merged["duration_seconds"] = round(time.monotonic() - sweep.started, 3)
        best = merged.get("best")
        self._sup.store.complete_run(sweep.id, dict(best["metrics"]) if best else {}, merged)
        self._sup.emit({"type": "sweep_complete", "data": {
            "sweep_id": sweep.id, "objective": merged["objective"], "combinations": sweep.total,
            "evaluated": merged["evaluated"], "skipped": merged["skipped"], "best": best,
            "results": merged["results"][:TOP_IN_EVENT], "duration_seconds": merged["duration_seconds"],
            "timestamp": now_iso()}})

    def cancel(self, sweep_id: str, reason: str) -> bool:
        """Cancel a running sweep (False if it is not running): its parts are dropped (a running
        part stops at its next progress check) and it ends ``cancelled`` with a sweep_error."""
        sweep = self._sweeps.get(sweep_id)
        if sweep is None:
            return False
        self._fail(sweep, "cancelled", "Sweep cancelled", f"{reason} at {now_iso()}")
        return True

    def _fail(self, sweep: _Sweep, status: str, error: str, details: str) -> None:
        del self._sweeps[sweep.id]
        for part_id in sweep.parts:
            self._sup.cancel_part(part_id)
        final = status if status in ("interrupted", "cancelled") else "failed"
        self._sup.store.set_status(sweep.id, final, error=error, error_details=details)
        self._sup.emit(error_event(sweep.id, error, details, "sweep_id", "sweep_error"))

    def interrupt_all(self, reason: str) -> None:
        """Daemon shutdown: every running sweep ends as ``interrupted``."""
        for sweep in list(self._sweeps.values()):
            self._fail(sweep, "interrupted", "Sweep interrupted: the daemon is shutting down", reason)


def run_sweep_part(io: ChildIO, job: dict[str, Any], data_dir: Path,
                   cancel: _Cancel) -> tuple[str, dict[str, Any]]:
    """Worker side: run this part with ``engine.run_sweep``; returns (status, final message)."""
    import engine  # noqa: PLC0415

    job_id, sweep_id = job["job_id"], job["sweep_id"]
    last = [0.0]

    def progress(p: Any) -> None:
        if cancel.reason(job_id) is not None:
            raise engine.Cancelled(cancel.reason(job_id))
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            io.send({"type": "_sweep_part_progress", "data": {
                "sweep_id": sweep_id, "job_id": job_id,
                "fraction": p.bars_processed / p.total_bars if p.total_bars else 1.0}}, droppable=True)

    try:
        config = engine.parse_config(job["config"])
        result = engine.run_sweep(config, job["combos"], objective=job["objective"],
                                  store=engine.DataStore(data_dir), progress=progress)
    except engine.Cancelled:
        return "cancelled", error_event(sweep_id, "Sweep cancelled", cancel.reason(job_id) or "",
                                        "sweep_id", "sweep_error")
    except Exception as exc:
        return "failed", error_event(sweep_id, f"Sweep failed: {type(exc).__name__}: {exc}",
                                     traceback.format_exc(), "sweep_id", "sweep_error")
    return "completed", {"type": "_sweep_part", "data": {"result": result}}
