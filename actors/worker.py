"""Backtest worker process: a BacktestActor that runs one job at a time and emits spec events.

Commands arrive on the inbox as msgpack dicts: ``{"cmd": "run", "job": {...}}``,
``{"cmd": "cancel", "job_id": ...}`` and ``{"cmd": "stop"}``. The bridge (the process's main
thread) tells ``run`` to the actor; ``cancel`` only sets a flag, because the actor is busy inside
the engine, which checks the flag through its progress callback (cooperative cancellation).

Every job ends with one ``_job_end`` message carrying the run's status and its final spec event
(``backtest_complete`` or ``backtest_error``); a barrier through the log queue comes first so
the supervisor can publish the run's log entries before its final event.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pykka

from actors.process import ChildIO
from actors.runstore import METRIC_FIELDS, now_iso

PROGRESS_INTERVAL = 0.1  # at most ~10 progress events per second per backtest
STOP_GRACE = 1.0  # seconds a running job gets to end when the worker is asked to stop

log = logging.getLogger("actors.worker")


def error_event(job_id: str, error: str, details: str, key: str = "backtest_id",
                etype: str = "backtest_error") -> dict[str, Any]:
    """A spec ``backtest_error`` (or ``sweep_error``) event."""
    return {"type": etype, "data": {key: job_id, "error": error, "error_details": details,
                                    "timestamp": now_iso()}}


class _Cancel:
    """Cancellation flags set by the bridge thread and read by the engine's progress callback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}
        self._all: str | None = None  # set when the process is stopping: cancels any job

    def request_all(self, reason: str) -> None:
        self._all = reason

    def request(self, job_id: str, reason: str) -> None:
        with self._lock:
            self._ids[job_id] = reason

    def reason(self, job_id: str) -> str | None:
        with self._lock:
            return self._ids.get(job_id, self._all)

    def clear(self, job_id: str) -> None:
        with self._lock:
            self._ids.pop(job_id, None)


class BacktestActor(pykka.ThreadingActor):
    """Runs backtests, sweep parts and diagnostic bursts; one job at a time."""

    use_daemon_thread = True  # a stuck engine must not keep the process alive after stop

    def __init__(self, io: ChildIO, cancel: _Cancel) -> None:
        super().__init__()
        self._io = io
        self._cancel = cancel
        self._data_dir = Path(io.ctx.data_dir)

    def on_receive(self, message: Any) -> Any:
        try:
            self._run(message["job"])
        except Exception:  # an exception would stop the actor and leave the worker useless
            log.exception("worker %s failed to run a job", self._io.label)
        return None

    def _run(self, job: dict[str, Any]) -> None:
        kind = job.get("kind", "backtest")
        started = time.monotonic()
        final: dict[str, Any] | None
        try:
            if kind == "backtest":
                status, final = self._backtest(job)
            elif kind == "sweep_part":
                from actors.sweeps import run_sweep_part  # noqa: PLC0415 - only sweeps pay for it
                status, final = run_sweep_part(self._io, job, self._data_dir, self._cancel)
            elif kind == "burst":
                status, final = self._burst(job)
            else:
                status, final = "failed", error_event(job["job_id"], "Unknown job kind",
                                                      f"kind must be backtest/sweep_part/burst, got {kind!r}")
        except BaseException as exc:  # noqa: BLE001 - the run must end with a final event, or
            # its slot hangs; SystemExit from user code must not end the actor's thread either.
            status, final = "failed", error_event(job["job_id"], f"Internal worker error: "
                                                  f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            self._cancel.clear(job["job_id"])
        self._finish(job, status, final, time.monotonic() - started)

    def _finish(self, job: dict[str, Any], status: str, final: dict[str, Any] | None,
                elapsed: float) -> None:
        # Barrier first: the log process forwards it after this job's earlier records, which
        # lets the supervisor publish them before the final event.
        if job.get("kind", "backtest") == "backtest":
            self._io.log_record({"barrier": job["job_id"]})
        self._io.send({"type": "_job_end", "data": {
            "job_id": job["job_id"], "kind": job.get("kind", "backtest"), "status": status,
            "event": final, "index": self._io.ctx.index, "elapsed": elapsed}})
        self._io.outbox.flush()

    def _backtest(self, job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        import engine  # noqa: PLC0415 - keep worker start-up light until a job arrives

        bid = job["job_id"]
        loaded = self._load(bid, job["config"])
        if isinstance(loaded, dict):
            return "failed", loaded
        config, store, bars = loaded
        if self._cancel.reason(bid) is not None:  # cancelled while the data was loading
            return "cancelled", error_event(bid, "Backtest cancelled",
                                            f"{self._cancel.reason(bid)}; before the first bar")
        logger = logging.getLogger(f"backtest.{bid}")
        from engine.bars import ns_to_date  # noqa: PLC0415

        progress = _ProgressEmitter(self._io, bid, len(bars), self._cancel,
                                    ns_to_date(int(bars.time[-1])))
        try:
            result = engine.run_backtest(config, bars=bars, store=store, progress=progress,
                                         logger=logger)
        except engine.Cancelled:
            reason = self._cancel.reason(bid) or "cancelled"
            return "cancelled", error_event(bid, "Backtest cancelled", f"{reason}; stopped at bar "
                                            f"{progress.last_bars}/{len(bars)}")
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # sys.exit() in a strategy too
            logger.error("Strategy execution failed: %s: %s", type(exc).__name__, exc)
            return "failed", error_event(bid, f"Strategy execution failed: {type(exc).__name__}: {exc}",
                                         traceback.format_exc())
        progress.final()
        data: dict[str, Any] = {"backtest_id": bid}
        data.update({k: result.get(k) for k in METRIC_FIELDS})
        data["timestamp"] = now_iso()
        data["results"] = result.get("results") or {}
        return "completed", {"type": "backtest_complete", "data": data}

    def _load(self, bid: str, raw_config: dict[str, Any]) -> tuple[Any, Any, Any] | dict[str, Any]:
        """(config, store, bars), sending backtest_start as early as it can; or an error event."""
        import engine  # noqa: PLC0415
        from engine.bars import ns_to_date  # noqa: PLC0415

        try:
            config = engine.parse_config(raw_config)
        except engine.ConfigError as exc:
            return error_event(bid, "Invalid backtest configuration", str(exc))
        store = engine.DataStore(self._data_dir)
        # Announce the start before loading: loading (or generating) a long range takes a while.
        span = _date_range(store, config)
        if span is not None:
            self._start_event(bid, config, *span)
        try:
            bars = store.load(config.symbol, config.timeframe, config.start_date, config.end_date)
        except LookupError as exc:
            return error_event(bid, f"Data not available: {exc}", traceback.format_exc())
        except Exception as exc:
            return error_event(bid, f"Could not load data: {type(exc).__name__}: {exc}",
                               traceback.format_exc())
        if len(bars) == 0:
            return error_event(bid, "No bars in the requested date range", f"{config.symbol} "
                               f"{config.timeframe} {config.start_date}..{config.end_date} has no data")
        if span is None:
            self._start_event(bid, config, ns_to_date(int(bars.time[0])), ns_to_date(int(bars.time[-1])))
        return config, store, bars

    def _start_event(self, bid: str, config: Any, start: str, end: str) -> None:
        self._io.send({"type": "backtest_start", "data": {
            "backtest_id": bid, "variant": config.variant, "symbol": config.symbol,
            "timeframe": config.timeframe, "start_date": start, "end_date": end,
            "timestamp": now_iso()}})
        self._io.outbox.flush()

    def _burst(self, job: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        count, rate, pad = int(job["count"]), job.get("rate"), "x" * int(job.get("size", 0))
        interval = 1.0 / float(rate) if rate else 0.0
        start = time.perf_counter()
        for n in range(count):
            if self._cancel.reason(job["job_id"]) is not None:
                return "cancelled", None
            if interval:
                delay = start + n * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            self._io.send({"type": "bench_event", "data": {"n": n, "emit_ns": time.time_ns(),
                                                           "pad": pad}})
        return "completed", None


def _date_range(store: Any, config: Any) -> tuple[str, str] | None:
    """The run's (start_date, end_date) without loading bars: the request's dates, with the
    stored data's first/last day for a date left empty; None when that needs the bars."""
    start, end = config.start_date, config.end_date
    if start and end:
        return start, end
    try:
        row = next((r for r in store.list() if r["symbol"] == config.symbol
                    and r["timeframe"] == config.timeframe), None)
    except Exception:  # an unreadable store is reported by load() with a better message
        return None
    if row is None:
        return None
    return start or row["start"], end or row["end"]


class _ProgressEmitter:
    """The engine's progress callback: checks for cancellation, emits throttled progress events."""

    def __init__(self, io: ChildIO, bid: str, total: int, cancel: _Cancel,
                 last_date: str = "") -> None:
        self._io, self._bid, self._total, self._cancel = io, bid, total, cancel
        self._last_date = last_date  # current_date of a 100 % event the engine did not send
        self._last_emit = float("-inf")
        self.last_bars = -1
        self._last: Any = None

    def __call__(self, p: Any) -> None:
        from engine import Cancelled  # noqa: PLC0415 - engine is already imported by now

        if self._cancel.reason(self._bid) is not None:
            raise Cancelled(self._cancel.reason(self._bid))
        self._last = p
        if self.last_bars >= p.total_bars > 0:
            return  # 100 % went out already (an engine may report the end of several phases)
        now = time.monotonic()
        first = self.last_bars < 0
        if first and p.bars_processed > 0:
            self._emit(0, p.total_bars, p.current_date, 0, 0.0)  # always start at 0 %
        if first or p.bars_processed >= p.total_bars or now - self._last_emit >= PROGRESS_INTERVAL:
            self._emit(p.bars_processed, p.total_bars, p.current_date, p.trades_count, p.current_pnl)

    def final(self) -> None:
        """Make sure a 100 % event went out (the engine promises one; this is a seat belt)."""
        p = self._last
        if p is None:
            self._emit(self._total, self._total, self._last_date, 0, 0.0)
        elif self.last_bars < p.total_bars:
            self._emit(p.total_bars, p.total_bars, p.current_date, p.trades_count, p.current_pnl)

    def _emit(self, done: int, total: int, date: str, trades: int, pnl: float) -> None:
        self._last_emit = time.monotonic()
        self.last_bars = done
        pct = 100.0 if total <= 0 else round(min(100.0, 100.0 * done / total), 2)
        self._io.send({"type": "backtest_progress", "data": {
            "backtest_id": self._bid, "progress": float(pct),
            "status": f"Processing bar {done}/{total}", "bars_processed": int(done),
            "total_bars": int(total), "current_date": date, "trades_count": int(trades),
            "current_pnl": float(pnl), "timestamp": now_iso()}}, droppable=done not in (0, total))


def _bridge(io: ChildIO, actor: pykka.ActorRef, cancel: _Cancel) -> None:
    # If the actor's thread ever dies, stop reading: the process then exits with an error and the
    # supervisor fails its job and starts a fresh worker, instead of the slot hanging forever.
    for msg in io.messages(alive=actor.is_alive):
        cmd = msg.get("cmd")
        if cmd == "run":
            actor.tell(msg)
        elif cmd == "cancel":
            cancel.request(msg["job_id"], msg.get("reason") or "cancelled")
        else:
            log.warning("worker got unknown command %r", cmd)


def worker_main(io: ChildIO) -> None:
    """Entry point of a backtest worker process (``actors.worker:worker_main``)."""
    cancel = _Cancel()
    actor = BacktestActor.start(io, cancel)
    io.ready()
    try:
        _bridge(io, actor, cancel)
        if not actor.is_alive() and not io.stopping.is_set():
            log.error("worker %s: its backtest actor stopped unexpectedly; exiting", io.label)
            raise SystemExit(1)
    finally:
        # Stopping (or orphaned): ask a running engine to stop at its next progress report.
        cancel.request_all("daemon shutting down")
        try:
            actor.stop(block=True, timeout=STOP_GRACE)
        except pykka.Timeout:
            # The engine checks for cancellation between chunks of bars; a slow per-bar strategy
            # may not reach the next check soon. Its run is already marked interrupted.
            log.warning("worker %s: job did not stop within %s s; exiting anyway", io.label, STOP_GRACE)
