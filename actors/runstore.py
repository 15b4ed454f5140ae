"""The run store: one SQLite file (WAL) at ``data_dir/qmx.sqlite`` with every run the daemon saw.

Tables: ``runs`` (request, status, progress, metrics, results without the bulky parts, errors),
``status_history``, ``trades`` and ``equity`` (JSON per run). Every write is one short
transaction, so a daemon killed with SIGKILL loses at most the write in flight; on the next start
:meth:`RunStore.mark_interrupted` turns runs left ``queued``/``running`` into ``interrupted``.

Connections are per thread (SQLite connections must not be shared across threads); the server
calls the read methods through ``loop.run_in_executor``.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

STATUSES: tuple[str, ...] = ("queued", "running", "completed", "failed", "cancelled", "interrupted")
FINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "interrupted"})
KINDS: tuple[str, ...] = ("backtest", "sweep")
METRIC_FIELDS: tuple[str, ...] = ("final_balance", "total_trades", "win_rate", "sharpe_ratio",
                                  "drawdown", "return_pct", "duration_seconds")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, config TEXT NOT NULL,
    extra TEXT, metrics TEXT, results TEXT, error TEXT, error_details TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs(status, created_at);
CREATE INDEX IF NOT EXISTS runs_by_kind ON runs(kind, created_at);
CREATE TABLE IF NOT EXISTS status_history (
    run_id TEXT NOT NULL, status TEXT NOT NULL, at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_run ON status_history(run_id);
CREATE TABLE IF NOT EXISTS trades (run_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS equity (run_id TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


def now_iso() -> str:
    """Current time as ISO 8601 UTC with milliseconds and ``Z``."""
    ms = time.time_ns() // 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _dumps(obj: Any) -> str:
    # allow_nan=False: the engine promises plain JSON; a NaN here is a bug we want to see.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class RunStore:
    """Runs, status history, metrics, results, trades, equity and sweeps in SQLite (WAL).

    Safe to use from many threads: each thread gets its own connection. Reads never block on a
    writer (WAL); writers wait up to ``busy_timeout`` seconds for each other.
    """

    def __init__(self, path: str | Path, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        con = self._con()
        con.executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                                  check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.row_factory = sqlite3.Row
            self._local.con = con
            with self._lock:
                self._all.append(con)
        return con

    def close(self) -> None:
        """Close every connection this store opened (any thread's)."""
        with self._lock:
            cons, self._all = self._all, []
        for con in cons:
            try:
                con.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    # ----------------------------------------------------------------- writes
    def _tx(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                con.execute(sql, args)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def create_run(self, run_id: str, config: dict[str, Any], kind: str = "backtest",
                   extra: dict[str, Any] | None = None) -> str:
        """Insert a ``queued`` run; returns its creation timestamp."""
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
        at = now_iso()
        self._tx([
            ("INSERT INTO runs (id, kind, status, created_at, config, extra) VALUES (?,?,?,?,?,?)",
             (run_id, kind, "queued", at, _dumps(config), None if extra is None else _dumps(extra))),
            ("INSERT INTO status_history VALUES (?,?,?)", (run_id, "queued", at)),
        ])
        return at

    def set_status(self, run_id: str, status: str, *, error: str | None = None,
                   error_details: str | None = None) -> None:
        """Move a run to ``status`` (recorded in its history); final statuses set finished_at."""
        if status not in STATUSES:
            raise ValueError(f"`status` must be one of {list(STATUSES)}, got {status!r}")
        at = now_iso()
        if status == "running":
            sql = "UPDATE runs SET status=?, started_at=? WHERE id=?"
            args: tuple[Any, ...] = (status, at, run_id)
        elif status in FINAL_STATUSES:
            sql = ("UPDATE runs SET status=?, finished_at=?, error=COALESCE(?, error), "
                   "error_details=COALESCE(?, error_details) WHERE id=?")
            args = (status, at, error, error_details, run_id)
        else:
            sql, args = "UPDATE runs SET status=? WHERE id=?", (status, run_id)
        self._tx([(sql, args), ("INSERT INTO status_history VALUES (?,?,?)", (run_id, status, at))])

    def set_progress(self, run_id: str, progress: float) -> None:
        """Record the latest progress percentage of a running run."""
        self._con().execute("UPDATE runs SET progress=? WHERE id=?", (float(progress), run_id))

    def complete_run(self, run_id: str, metrics: dict[str, Any], results: dict[str, Any]) -> None:
        """Store a finished run's metrics and results (trades/equity in their own tables)."""
        results = dict(results)
        trades = results.pop("trades", None)
        equity = results.pop("equity", None)
        at = now_iso()
        self._tx([
            ("UPDATE runs SET status='completed', progress=100, finished_at=?, metrics=?, results=? "
             "WHERE id=?", (at, _dumps(metrics), _dumps(results), run_id)),
            ("INSERT OR REPLACE INTO trades VALUES (?,?)", (run_id, _dumps(trades or []))),
            ("INSERT OR REPLACE INTO equity VALUES (?,?)", (run_id, _dumps(equity))),
            ("INSERT INTO status_history VALUES (?,?,?)", (run_id, "completed", at)),
        ])

    def mark_interrupted(self, reason: str) -> list[str]:
        """Turn every ``queued``/``running`` run into ``interrupted``; returns their ids."""
        ids = [r[0] for r in self._con().execute(
            "SELECT id FROM runs WHERE status IN ('queued','running')")]
        for run_id in ids:
            self.set_status(run_id, "interrupted", error="Daemon stopped before the run finished",
                            error_details=reason)
        return ids

    # ------------------------------------------------------------------ reads
    def list_runs(self, status: str | None = None, limit: int = 200,
                  kind: str = "backtest") -> list[dict[str, Any]]:
        """Newest first: summaries (no results) of runs of ``kind``, optionally of one ``status``."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"`status` must be one of {list(STATUSES)}, got {status!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"`limit` must be a positive integer, got {limit!r}")
        sql = ("SELECT id, kind, status, progress, created_at, started_at, finished_at, config, "
               "metrics, error FROM runs WHERE kind=?")
        args: list[Any] = [kind]
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        args.append(limit)
        return [{"backtest_id" if kind == "backtest" else "sweep_id": r["id"], "kind": r["kind"],
                 "status": r["status"], "progress": r["progress"], "created_at": r["created_at"],
                 "started_at": r["started_at"], "finished_at": r["finished_at"],
                 "config": _loads(r["config"]), "metrics": _loads(r["metrics"]), "error": r["error"]}
                for r in self._con().execute(sql, args)]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run with everything: config, metrics, full results, errors and status history."""
        con = self._con()
        r = con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if r is None:
            return None
        results = _loads(r["results"])
        if results is not None and r["kind"] == "backtest":
            results["trades"] = self.get_trades(run_id)
            results["equity"] = self.get_equity(run_id)
        history = [{"status": h["status"], "at": h["at"]} for h in con.execute(
            "SELECT status, at FROM status_history WHERE run_id=? ORDER BY rowid", (run_id,))]
        return {"backtest_id": r["id"], "kind": r["kind"], "status": r["status"],
                "progress": r["progress"], "created_at": r["created_at"],
                "started_at": r["started_at"], "finished_at": r["finished_at"],
                "config": _loads(r["config"]), "metrics": _loads(r["metrics"]), "results": results,
                "error": r["error"], "error_details": r["error_details"], "status_history": history}

    def get_trades(self, run_id: str) -> list[dict[str, Any]] | None:
        """The run's closed trades, ``[]`` when it has none yet, None for an unknown run."""
        r = self._con().execute("SELECT data FROM trades WHERE run_id=?", (run_id,)).fetchone()
        if r is None:
            return None if not self._exists(run_id) else []
        return _loads(r["data"])

    def get_equity(self, run_id: str) -> dict[str, Any] | None:
        """The run's equity curve ``{time, equity, drawdown_pct}``; None if unknown or not done."""
        r = self._con().execute("SELECT data FROM equity WHERE run_id=?", (run_id,)).fetchone()
        return None if r is None else _loads(r["data"])

    def _exists(self, run_id: str) -> bool:
        return self._con().execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is not None

    def get_sweep(self, sweep_id: str) -> dict[str, Any] | None:
        """One sweep: status, grid, objective, progress and its ranked results when complete."""
        run = self.get_run(sweep_id)
        if run is None or run["kind"] != "sweep":
            return None
        extra = _loads(self._con().execute("SELECT extra FROM runs WHERE id=?",
                                           (sweep_id,)).fetchone()["extra"]) or {}
        run["sweep_id"] = run.pop("backtest_id")
        run["grid"] = extra.get("grid")
        run["objective"] = extra.get("objective")
        return run

    def list_sweeps(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first: summaries of sweeps, optionally of one ``status``."""
        return self.list_runs(status, limit, kind="sweep")
