"""The log process: gathers every process's log records, writes them to a file, streams log_entry.

Records arrive as msgpack dicts in ``{"cmd": "log", "records": [...]}`` batches on this
process's inbox, forwarded by the main process from every child's outbox and from its own
``logging`` (see :class:`actors.process.RecordHandler`; records that do not fit a full queue are
dropped and counted, and the count is logged with the next record that gets through). The :class:`LogActor` writes every record to
``data_dir/logs/qmx.log`` (rotating, 10 MB x 5), WARNING and above also to stderr, and turns it into a spec ``log_entry`` event:
records of loggers named ``backtest.<id>`` carry ``backtest_id`` (topic ``backtest``), all others
go to the ``logs`` topic. At most 2000 log_entry events per second are streamed; the rest are
still written to the file and counted, and a WARNING entry says how many were not streamed, so a
log flood cannot starve backtest events on the shared outbox.

A worker sends a *barrier* ``{"barrier": <job id>}`` along the same path right before a run's
final event; the actor forwards it as ``_log_barrier`` after every earlier record, which lets the
supervisor hold the final event until the run's log entries have been published.
"""
from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

import pykka

from actors.process import ChildIO

STREAM_LIMIT_PER_S = 2000
_LEVELS = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR",
           "CRITICAL": "ERROR"}


def iso_from_epoch(created: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z`` of a ``time.time()`` value."""
    ms = int(created * 1000)
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def log_entry(rec: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``log_entry`` event of one record dict (``backtest_id`` only for run loggers)."""
    name = str(rec.get("name", ""))
    data: dict[str, Any] = {}
    if name.startswith("backtest.") and len(name) > 9:
        data["backtest_id"] = name[9:]
    data.update({
        "timestamp": iso_from_epoch(float(rec.get("created", time.time()))),
        "level": _LEVELS.get(str(rec.get("levelname")), "INFO"),
        "message": str(rec.get("message", "")),
        "module": str(rec.get("module", "")),
        "function": str(rec.get("funcName", "")),
        "line": int(rec.get("lineno", 0) or 0),
        "logger_name": name,
    })
    return {"type": "log_entry", "data": data}


class LogActor(pykka.ThreadingActor):
    """Writes record batches to the log file and streams them as rate-limited log_entry events."""

    use_daemon_thread = True

    def __init__(self, io: ChildIO, log_dir: Path) -> None:
        super().__init__()
        self._io = io
        log_dir.mkdir(parents=True, exist_ok=True)
        self._file = logging.handlers.RotatingFileHandler(
            log_dir / "qmx.log", maxBytes=10_000_000, backupCount=5, encoding="utf-8")
        self._file.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(processName)s] %(name)s %(module)s.%(funcName)s:"
            "%(lineno)d %(message)s"))
        # Warnings and errors of every process also reach the terminal `qmx serve` runs in (this
        # process inherits its stderr), so an operator sees a crash loop without opening the file.
        self._console = logging.StreamHandler(sys.stderr)
        self._console.setLevel(logging.WARNING)
        self._console.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"))
        self._window_start = time.monotonic()
        self._streamed = 0
        self.not_streamed = 0
        self._unreported = 0

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, list):
                self._handle(message)
        except Exception:  # keep logging even if one record is malformed
            self._io.send(log_entry({"name": "actors.logproc", "levelname": "ERROR",
                                     "message": "log process failed on a batch of records",
                                     "module": "logproc", "funcName": "on_receive"}))
        return None

    def on_stop(self) -> None:
        self._report_unstreamed(force=True)
        self._file.close()
        self._console.flush()

    def _handle(self, batch: list[dict[str, Any]]) -> None:
        for rec in batch:
            if "barrier" in rec:
                self._io.send({"type": "_log_barrier", "data": {"job_id": rec["barrier"]}})
                continue
            self._write(rec)
            if rec.get("dropped"):
                self._write({"name": "actors.logproc", "levelname": "WARNING", "message":
                             f"{rec['dropped']} log records of {rec.get('processName')} were dropped "
                             "(log queue full)", "created": time.time(), "module": "logproc",
                             "funcName": "_handle", "lineno": 0, "processName": self._io.label})
            if self._allow():
                self._io.send(log_entry(rec), droppable=True)
            else:
                self.not_streamed += 1
                self._unreported += 1
        self._report_unstreamed()

    def _allow(self) -> bool:
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._window_start, self._streamed = now, 0
        self._streamed += 1
        return self._streamed <= STREAM_LIMIT_PER_S

    def _report_unstreamed(self, force: bool = False) -> None:
        if not self._unreported or (self._streamed > STREAM_LIMIT_PER_S and not force):
            return
        rec = {"name": "actors.logproc", "levelname": "WARNING", "created": time.time(),
               "message": f"{self._unreported} log entries were written to the log file but not "
                          f"streamed (limit {STREAM_LIMIT_PER_S}/s)",
               "module": "logproc", "funcName": "_report_unstreamed", "lineno": 0,
               "processName": self._io.label}
        self._unreported = 0
        self._write(rec)
        self._io.send(log_entry(rec))

    def _write(self, rec: dict[str, Any]) -> None:
        record = logging.LogRecord(str(rec.get("name", "")), logging.getLevelName(
            str(rec.get("levelname", "INFO"))) if str(rec.get("levelname")) in _LEVELS else logging.INFO,
            "", int(rec.get("lineno", 0) or 0), str(rec.get("message", "")), None, None,
            str(rec.get("funcName", "")))
        record.module = str(rec.get("module", ""))
        record.created = float(rec.get("created", time.time()))
        record.msecs = (record.created % 1) * 1000
        record.processName = str(rec.get("processName", ""))
        try:
            self._file.emit(record)
            if record.levelno >= logging.WARNING:
                self._console.emit(record)
        except Exception:  # a full disk or a closed terminal must not stop streaming
            pass


def log_main(io: ChildIO) -> None:
    """Entry point of the log process (``actors.logproc:log_main``)."""
    actor = LogActor.start(io, Path(io.ctx.data_dir) / "logs")
    io.ready()
    try:
        for msg in io.messages():
            if msg.get("cmd") == "log":
                actor.tell(msg.get("records") or [])
    finally:
        actor.stop(block=True, timeout=5)  # handles every batch told before the stop
