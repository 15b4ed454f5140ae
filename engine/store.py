"""The local market-data store: one memory-mapped file per symbol and timeframe.

Layout under the data directory::

    bars/<SYMBOL>/<TF>.npy    structured array (time int64 UTC ns, open, high, low, close,
                              volume, spread float64), opened with np.load(mmap_mode="r")
    bars/<SYMBOL>/<TF>.json   sidecar: source file, format, imported_at, rows, start, end

Files are replaced atomically (temporary file + os.replace), so a reader (a backtest worker
holding a memory map) always sees a whole old file or a whole new one. The synthetic symbol
``SYNTH`` exists in every store at every timeframe without any file.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from engine.bars import NS_PER_S, TIMEFRAMES, Bars, check_timeframe, ns_to_date, to_ns
from engine.importers import DataFormatError, read_bars
from engine.resample import can_resample, resample
from engine.synthetic import SYMBOL as SYNTH
from engine.synthetic import synthetic_bars, synthetic_summary

try:
    import fcntl
except ImportError:  # Windows: imports into one symbol are then not serialised between processes
    fcntl = None  # type: ignore[assignment]

DTYPE = np.dtype([("time", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"),
                  ("close", "<f8"), ("volume", "<f8"), ("spread", "<f8")])
_SYMBOL = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
_HISTORY = 50  # imports remembered per sidecar
_log = logging.getLogger(__name__)


class DataNotFound(LookupError):
    """Requested bars do not exist; ``kind`` is "symbol" (no such symbol/timeframe) or "range"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def default_data_dir() -> Path:
    """The data directory: ``$QMX_DATA_DIR`` if set, else ``~/.quantmindx``."""
    env = os.environ.get("QMX_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".quantmindx"


def check_symbol(symbol: object) -> str:
    """The symbol uppercased, or ``ValueError`` when it is not 1-32 of ``A-Z a-z 0-9 . _ -``."""
    # at least one letter or digit, so '.' and '..' can never name a directory outside bars/
    if not isinstance(symbol, str) or not _SYMBOL.match(symbol) or not any(c.isalnum() for c in symbol):
        raise ValueError(f"`symbol` must be 1-32 characters of A-Z, a-z, 0-9, '.', '_' or '-' "
                         f"(at least one letter or digit), got {symbol!r}")
    return symbol.upper()


def _check_date(value: str | None, name: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a date YYYY-MM-DD, got {value!r}") from None


def _write_atomic(path: Path, write: Any) -> None:
    """Write through ``write(file)`` to a temporary file, fsync it, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _to_array(bars: Bars) -> np.ndarray:
    arr = np.empty(len(bars), DTYPE)
    for name in ("time", "open", "high", "low", "close", "volume"):
        arr[name] = getattr(bars, name)
    arr["spread"] = np.nan if bars.spread is None else bars.spread  # NaN: the source had no spread
    return arr


def _merge(old: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    """Union by time, sorted; on equal timestamps the new row wins (np.unique keeps the first)."""
    if old is None or len(old) == 0:
        return new
    both = np.concatenate((new, old))
    _, first = np.unique(both["time"], return_index=True)
    return both[first]


def _check_spacing(merged: np.ndarray, timeframe: str, filename: str) -> None:
    """Refuse a merge that puts bars closer than one timeframe, e.g. the same file imported
    twice with different UTC shifts; the file on its own was already checked."""
    step = np.diff(merged["time"])
    close = np.flatnonzero(step < TIMEFRAMES[timeframe] * NS_PER_S)
    if close.size:
        i = int(close[0]) + 1
        when = np.datetime64(int(merged["time"][i]), "ns").astype("datetime64[s]")
        raise DataFormatError(filename, None, f"merging with the stored {timeframe} bars would put the bar at "
                                              f"{when} only {int(step[i - 1]) // NS_PER_S} s after the previous "
                                              "one; are the file's times shifted differently (utc_shift_hours)?")


class DataStore:
    """Bars on disk under ``root/bars/``; see the module docstring for the layout."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.bars_dir = self.root / "bars"

    def _path(self, symbol: str, timeframe: str) -> Path:
        return self.bars_dir / symbol / f"{timeframe}.npy"

    def _stored(self) -> dict[str, list[str]]:
        """Symbol -> stored timeframes (finest first)."""
        out: dict[str, list[str]] = {}
        if not self.bars_dir.is_dir():
            return out
        for d in sorted(self.bars_dir.iterdir()):
            tfs = [tf for tf in TIMEFRAMES if (d / f"{tf}.npy").is_file()]
            if tfs:
                out[d.name] = tfs
        return out

    def _open(self, symbol: str, timeframe: str) -> np.ndarray:
        return np.load(self._path(symbol, timeframe), mmap_mode="r")

    def _sidecar(self, symbol: str, timeframe: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self._path(symbol, timeframe).with_suffix(".json").read_text()))
        except (OSError, ValueError):
            return {}

    def _row(self, symbol: str, timeframe: str) -> dict[str, Any]:
        arr = self._open(symbol, timeframe)  # rows and range come from the data, never a stale sidecar
        return {"symbol": symbol, "timeframe": timeframe, "start": ns_to_date(arr["time"][0]),
                "end": ns_to_date(arr["time"][-1]), "bars": int(len(arr)), "synthetic": False,
                "source": str(self._sidecar(symbol, timeframe).get("source", ""))}

    def list(self) -> list[dict[str, Any]]:
        """One row per stored symbol and timeframe, plus SYNTH at every timeframe.

        Rows are ``{symbol, timeframe, start, end, bars, synthetic, source}`` with inclusive
        ``YYYY-MM-DD`` dates, sorted by symbol then timeframe (finest first).
        """
        rows = []
        for sym, tfs in self._stored().items():
            for tf in tfs:
                try:
                    rows.append(self._row(sym, tf))
                except (OSError, ValueError, IndexError) as exc:  # one damaged file must not hide the rest
                    _log.warning("skipping unreadable %s: %s", self._path(sym, tf), exc)
        for tf in TIMEFRAMES:
            summary = synthetic_summary(tf)
            rows.append({"symbol": SYNTH, "timeframe": tf, "start": summary["start"], "end": summary["end"],
                         "bars": summary["bars"], "synthetic": True, "source": "synthetic (seed 7)"})
        order = list(TIMEFRAMES)
        return sorted(rows, key=lambda r: (r["symbol"], order.index(r["timeframe"])))

    def load(self, symbol: str, timeframe: str, start_date: str | None = None,
             end_date: str | None = None) -> Bars:
        """Bars of ``symbol`` at ``timeframe`` on ``start_date`` .. ``end_date`` (inclusive, UTC).

        Stored bars are memory-mapped (read-only arrays, nothing copied). A timeframe that is not
        stored is resampled from the coarsest stored finer one. ``SYNTH`` comes from the
        synthetic generator. Raises ``DataNotFound`` (kind "symbol" or "range") or ``ValueError``.
        """
        symbol = check_symbol(symbol)
        check_timeframe(timeframe)
        start, end = _check_date(start_date, "start_date"), _check_date(end_date, "end_date")
        if start and end and start > end:
            raise ValueError(f"`end_date` must not be before `start_date` ({start}), got {end!r}")
        if symbol == SYNTH:
            bars = synthetic_bars(SYNTH, timeframe, start, end)
            if len(bars) == 0:
                s = synthetic_summary(timeframe)
                raise DataNotFound(f"no {SYNTH} {timeframe} bars between {start or 'the start'} and "
                                   f"{end or 'the end'}; available {s['start']} .. {s['end']}", "range")
            return bars
        source_tf = self._source_timeframe(symbol, timeframe)
        bars = self._load_stored(symbol, source_tf, start, end)
        if len(bars) == 0:
            row = self._row(symbol, source_tf)
            raise DataNotFound(f"no {symbol} {timeframe} bars between {start or 'the start'} and "
                               f"{end or 'the end'}; available {row['start']} .. {row['end']}", "range")
        if source_tf != timeframe:
            bars = resample(bars, timeframe)
            bars = replace(bars, source=f"{bars.source}, resampled from {source_tf}")
        return bars

    def _source_timeframe(self, symbol: str, timeframe: str) -> str:
        stored = self._stored()
        if symbol not in stored:
            raise DataNotFound(f"no data for symbol {symbol!r}; available symbols: "
                               f"{sorted([*stored, SYNTH])}", "symbol")
        tfs = stored[symbol]
        if timeframe in tfs:
            return timeframe
        finer = [tf for tf in tfs if can_resample(tf, timeframe)]
        if not finer:
            raise DataNotFound(f"no {symbol} {timeframe} data and no finer timeframe to resample from; "
                               f"{symbol} is stored at {tfs}", "symbol")
        return finer[-1]  # the coarsest finer timeframe: fewest rows to aggregate

    def _load_stored(self, symbol: str, timeframe: str, start: str | None, end: str | None) -> Bars:
        arr = self._open(symbol, timeframe)
        t = arr["time"]
        lo = 0 if not start else int(np.searchsorted(t, to_ns(start)))
        hi = len(arr) if not end else int(np.searchsorted(t, to_ns(end) + 86400 * NS_PER_S))
        part = arr[lo:max(lo, hi)]
        cols = {name: part[name].view(np.ndarray) for name in DTYPE.names or ()}
        spread: np.ndarray | None = cols["spread"]
        missing = np.isnan(cols["spread"])
        if missing.all():
            spread = None
        elif missing.any():  # merged files where only some had a spread: fill with the known mean
            spread = np.where(missing, np.nanmean(cols["spread"]), cols["spread"])
        side = self._sidecar(symbol, timeframe)
        return Bars(symbol=symbol, timeframe=timeframe, time=cols["time"], open=cols["open"],
                    high=cols["high"], low=cols["low"], close=cols["close"], volume=cols["volume"],
                    spread=spread, synthetic=False, source=str(side.get("source", "")),
                    meta={"format": side.get("format"), "imported_at": side.get("imported_at")})

    @contextlib.contextmanager
    def _locked(self, symbol: str) -> Iterator[None]:
        """Serialise imports into one symbol across processes (daemon upload vs `qmx data import`)."""
        folder = self.bars_dir / symbol
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "wb") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def import_csv(self, source: Path | str | bytes, symbol: str, timeframe: str, fmt: str = "auto",
                   utc_shift_hours: float = 0.0, filename: str | None = None) -> dict[str, Any]:
        """Import a bar file (a path, or the bytes of an upload) into ``symbol``/``timeframe``.

        Rows merge by time with what is stored (the file wins on equal timestamps). Returns the
        :meth:`list` row of what is stored now, plus ``imported`` (rows read from the file),
        ``added`` (rows new to the store) and ``format``. Bad content raises ``DataFormatError``
        and changes nothing; bad arguments raise ``ValueError``.
        """
        symbol = check_symbol(symbol)
        if symbol == SYNTH:
            raise ValueError(f"`symbol` {SYNTH!r} is reserved for the built-in synthetic data; choose another name")
        check_timeframe(timeframe)
        bars = read_bars(source, symbol, timeframe, fmt, utc_shift_hours, filename)
        new = _to_array(bars)
        path = self._path(symbol, timeframe)
        with self._locked(symbol):
            old = np.load(path) if path.is_file() else None
            merged = _merge(old, new)
            _check_spacing(merged, timeframe, str(bars.meta["filename"]))
            _write_atomic(path, lambda f: np.save(f, merged, allow_pickle=False))
            side = self._sidecar(symbol, timeframe)
            event = {"source": bars.source, "format": bars.meta["format"], "rows": len(new),
                     "utc_shift_hours": float(utc_shift_hours),
                     "imported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
            side = {"symbol": symbol, "timeframe": timeframe, **event, "rows": len(merged),
                    "start": ns_to_date(merged["time"][0]), "end": ns_to_date(merged["time"][-1]),
                    "synthetic": False, "imports": [*side.get("imports", []), event][-_HISTORY:]}
            _write_atomic(path.with_suffix(".json"), lambda f: f.write(json.dumps(side, indent=1).encode()))
        added = len(merged) - (0 if old is None else len(old))
        return {**self._row(symbol, timeframe), "imported": len(new), "added": added,
                "format": bars.meta["format"]}
