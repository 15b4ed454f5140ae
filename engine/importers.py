"""Read bar files (MetaTrader 5, histdata.com, Dukascopy, generic OHLCV CSV) into :class:`Bars`.

The layout is recognised from the file's first line. Parsing works on the raw bytes with numpy
(field offsets, fixed-width digit arithmetic) and never builds a Python object per field, so a
million-line M1 file imports in one to two seconds. A file is either imported completely or not at
all: the first problem raises :class:`DataFormatError` naming the file, the line and the problem.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.bars import NS_PER_S, TIMEFRAMES, Bars, check_timeframe
from engine.resample import can_resample, resample
from engine.textscan import DataFormatError, Table, decode, split_fields

#: Accepted values of ``fmt``; "auto" recognises the layout from the first line.
FORMATS: tuple[str, ...] = ("auto", "mt5", "histdata", "dukascopy", "generic")

#: How each layout is recognised, for the "unknown layout" error.
LAYOUTS: dict[str, str] = {
    "mt5": "MetaTrader 5 export: tab-separated header <DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL> <SPREAD>",
    "histdata": "histdata.com M1: no header, lines 'YYYYMMDD HHMMSS;open;high;low;close;volume' "
                "or 'YYYY.MM.DD,HH:MM,open,high,low,close,volume' (EST)",
    "dukascopy": "Dukascopy: header 'Gmt time,Open,High,Low,Close,Volume', times 'DD.MM.YYYY HH:MM:SS.mmm' (UTC)",
    "generic": "generic CSV: header 'time,Open,High,Low,Close[,Volume][,Spread]' (any time column name)",
}

_HISTDATA_LINE = re.compile(rb"^\d{8} \d{6};")
_HISTDATA_MT_LINE = re.compile(rb"^\d{4}\.\d{2}\.\d{2},\d{2}:\d{2},")
_EST_NS = 5 * 3600 * NS_PER_S  # histdata.com clocks are EST without DST: UTC-5 all year
_GENERIC_TIME = re.compile(
    r"^\d{4}([-/.])\d{2}\1\d{2}(?:([ T])\d{2}:\d{2}(:\d{2}(?:\.(\d{1,9}))?)?)?(Z|[+-]00:?00)?$")


def generic_time_pattern(value: str) -> str | None:
    """The fixed-width pattern of an ISO-like time such as '2017-04-19 09:00:00', or None."""
    m = _GENERIC_TIME.match(value)
    if not m:
        return None
    sep, tsep, secs, frac, zone = m.groups()
    pattern = f"YYYY{sep}MM{sep}DD"
    if tsep:
        pattern += f"{tsep}hh:mm" + (":ss" if secs else "") + ("." + "f" * len(frac) if frac else "")
    return pattern + (zone or "")


_Parsed = tuple[dict[str, np.ndarray], np.ndarray, Table]


def _header(data: bytes) -> str:
    return data[:data.index(b"\n")].decode("utf-8", "replace").strip()


def detect_format(data: bytes) -> str | None:
    """The layout name of decoded file bytes ("mt5", "histdata", ...) or None when unknown."""
    first = _header(data)
    low = first.lower()
    if "<date>" in low and "<open>" in low:
        return "mt5"
    if low.startswith("gmt time"):
        return "dukascopy"
    if _HISTDATA_LINE.match(first.encode()) or _HISTDATA_MT_LINE.match(first.encode()):
        return "histdata"
    names = [c.strip().strip('"').lower() for c in re.split(r"[,;\t]", low)]
    if {"open", "high", "low", "close"} <= set(names[1:]):
        return "generic"
    return None


def _columns_by_name(header: list[str], name: str, brackets: bool = False) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, col in enumerate(header):
        key = col.strip().strip('"').lower()
        if brackets and key.startswith("<") and key.endswith(">"):  # MT5 writes <OPEN>
            key = key[1:-1]
        if key and key in seen:
            raise DataFormatError(name, 1, f"column {col!r} appears twice in the header")
        seen[key] = i
    return seen


def _parse_mt5(data: bytes, name: str) -> _Parsed:
    header = _header(data).split("\t")
    cols = _columns_by_name(header, name, brackets=True)
    missing = [c for c in ("date", "open", "high", "low", "close") if c not in cols]
    if missing:
        raise DataFormatError(name, 1, f"MT5 header lacks {['<' + m.upper() + '>' for m in missing]}")
    t = split_fields(data, name, b"\t", len(header), 1)
    ns = t.times(cols["date"], "YYYY.MM.DD", "<DATE>")
    if "time" in cols:
        first = t.text(0, cols["time"])
        ns = ns + t.times(cols["time"], "hh:mm:ss" if len(first) == 8 else "hh:mm", "<TIME>")
    out = {k: t.numbers(cols[k], f"<{k.upper()}>") for k in ("open", "high", "low", "close")}
    vol_col = "tickvol" if "tickvol" in cols else "vol" if "vol" in cols else None
    out["volume"] = t.numbers(cols[vol_col], f"<{vol_col.upper()}>") if vol_col else np.zeros(len(ns))
    if "spread" in cols:
        digits = max(_decimals(t.matrix(cols[k])) for k in ("open", "high", "low", "close"))
        out["spread"] = t.numbers(cols["spread"], "<SPREAD>") * 10.0 ** -digits
    return out, ns, t


def _decimals(g: np.ndarray) -> int:
    """Most digits after the decimal point in a column (MT5 prices: 1.0716 and 1.07214 -> 5)."""
    dot = g == ord(".")
    width = (g != 0).sum(axis=1)
    dec = np.where(dot.any(axis=1), width - np.argmax(dot, axis=1) - 1, 0)
    return int(dec.max()) if dec.size else 0


def _parse_histdata(data: bytes, name: str) -> _Parsed:
    labels = ("open", "high", "low", "close", "volume")
    if _HISTDATA_MT_LINE.match(data):  # histdata's "MetaTrader" variant: date and time columns
        t = split_fields(data, name, b",", 7, 0)
        ns = t.times(0, "YYYY.MM.DD", "date") + t.times(1, "hh:mm", "time") + _EST_NS
        return {k: t.numbers(i + 2, k) for i, k in enumerate(labels)}, ns, t
    t = split_fields(data, name, b";", 6, 0)
    ns = t.times(0, "YYYYMMDD hhmmss", "time") + _EST_NS
    return {k: t.numbers(i + 1, k) for i, k in enumerate(labels)}, ns, t


def _parse_dukascopy(data: bytes, name: str) -> _Parsed:
    header = _header(data).split(",")
    cols = _columns_by_name(header, name)
    missing = [c for c in ("gmt time", "open", "high", "low", "close", "volume") if c not in cols]
    if missing:
        raise DataFormatError(name, 1, f"Dukascopy header lacks {missing}; expected {LAYOUTS['dukascopy']}")
    t = split_fields(data, name, b",", len(header), 1)
    ns = t.times(cols["gmt time"], "DD.MM.YYYY hh:mm:ss.fff", "Gmt time")
    return {k: t.numbers(cols[k], k) for k in ("open", "high", "low", "close", "volume")}, ns, t


def _parse_generic(data: bytes, name: str) -> _Parsed:
    if b'"' in data:
        data = data.replace(b'"', b"")  # quoted numbers and names; commas inside quotes never occur here
    first = _header(data)
    delim = max((",", ";", "\t"), key=first.count)
    header = first.split(delim)
    cols = _columns_by_name(header[1:], name)
    cols = {k: v + 1 for k, v in cols.items()}
    for alias in ("tickvol", "tick_volume", "vol"):
        if alias in cols and "volume" not in cols:
            cols["volume"] = cols[alias]
    missing = [c for c in ("open", "high", "low", "close") if c not in cols]
    if missing:
        raise DataFormatError(name, 1, f"header lacks columns {missing}; expected {LAYOUTS['generic']}")
    t = split_fields(data, name, delim.encode(), len(header), 1)
    label = header[0].strip() or "time"
    ns = _generic_times(t, label, cols.get("time"))
    out: dict[str, np.ndarray] = {k: t.numbers(cols[k], k) for k in
                                  ("open", "high", "low", "close", "volume", "spread") if k in cols}
    out.setdefault("volume", np.zeros(len(ns)))
    return out, ns, t


def _generic_times(t: Table, label: str, time_col: int | None) -> np.ndarray:
    """Times of the first column; a date-only first column adds a separate `Time` column if any."""
    first = t.text(0, 0).strip()
    if re.fullmatch(r"\d{10}|\d{13}", first):  # unix epoch seconds or milliseconds
        secs = t.numbers(0, label)
        scale = NS_PER_S if len(first) == 10 else 1_000_000
        return (secs.astype(np.int64) * scale).astype(np.int64)
    pattern = generic_time_pattern(first)
    if pattern is None:
        raise t.fail(0, f"unparsable time {first!r} in column {label} (expected YYYY-MM-DD, "
                        "YYYY-MM-DD HH:MM[:SS[.fff]], ISO 8601 with T and Z, or unix seconds)")
    ns = t.times(0, pattern, label)
    if time_col is not None and "h" not in pattern:  # `Date,Time,Open,...` layouts
        clock = t.text(0, time_col).strip()
        ns = ns + t.times(time_col, "hh:mm:ss" if len(clock) == 8 else "hh:mm", "Time")
    return ns


_PARSERS = {"mt5": _parse_mt5, "histdata": _parse_histdata, "dukascopy": _parse_dukascopy,
            "generic": _parse_generic}


def _first(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def _check(t: Table, cols: dict[str, np.ndarray], ns: np.ndarray, timeframe: str) -> None:
    """Raise for the earliest line with a problem: NaN/inf, negative volume, OHLC order, time order."""
    found: list[tuple[int, str]] = []

    def note(row: int | None, problem: str) -> None:
        if row is not None:
            found.append((row, problem))

    for key, a in cols.items():
        if (r := _first(~np.isfinite(a))) is not None:
            note(r, f"{key} is {a[r]} (NaN and infinity are not allowed)")
    for key in ("volume", "spread"):
        if key in cols and (r := _first(cols[key] < 0)) is not None:
            note(r, f"{key} is negative ({cols[key][r]})")
    o, h, lo, c = cols["open"], cols["high"], cols["low"], cols["close"]
    if (r := _first(h < lo)) is not None:
        note(r, f"high {h[r]} < low {lo[r]}")
    if (r := _first(h < np.maximum(o, c))) is not None:
        note(r, f"high {h[r]} < max(open {o[r]}, close {c[r]})")
    if (r := _first(lo > np.minimum(o, c))) is not None:
        note(r, f"low {lo[r]} > min(open {o[r]}, close {c[r]})")
    step = np.diff(ns)
    if (r := _first(step <= 0)) is not None:
        note(r + 1, f"time {_iso(ns[r + 1])} is not after the previous bar's {_iso(ns[r])} "
                    "(times must be strictly increasing)")
    tf_ns = TIMEFRAMES[timeframe] * NS_PER_S
    if (r := _first((step > 0) & (step < tf_ns))) is not None:
        note(r + 1, f"bar is {step[r] // NS_PER_S} s after the previous one, but {timeframe} bars are "
                    f"{tf_ns // NS_PER_S} s apart; import it at its own timeframe and resample")
    if found:
        row, problem = min(found, key=lambda p: p[0])  # earliest line; ties: the check listed first
        raise t.fail(row, problem)
    if len(ns) >= 20 and step.min() > tf_ns:
        raise DataFormatError(t.name, None, f"no two bars are one {timeframe} ({tf_ns // NS_PER_S} s) apart; "
                                            f"the closest are {step.min() // NS_PER_S} s apart: wrong timeframe?")


def _iso(ns: Any) -> str:
    return str(np.datetime64(int(ns), "ns").astype("datetime64[s]")).replace("T", " ")


def read_bars(source: Path | str | bytes, symbol: str, timeframe: str, fmt: str = "auto",
              utc_shift_hours: float = 0.0, filename: str | None = None, *,
              resample_finer: bool = False) -> Bars:
    """Read a bar file (a path, or the bytes of an upload) into :class:`Bars`.

    ``fmt`` is one of :data:`FORMATS`; "auto" recognises the layout from the first line.
    ``utc_shift_hours`` is how far the file's clock is ahead of UTC (MetaTrader brokers often
    run at UTC+2 or +3): it is subtracted from every time. It applies to mt5 and generic files;
    histdata.com files are always EST (UTC-5) and Dukascopy files always UTC.
    With ``resample_finer`` a file of a finer timeframe than ``timeframe`` (judged by the median
    spacing of its bars, e.g. an M1 file asked for as H1) is checked at its own timeframe and
    aggregated to ``timeframe``, as the store does for a timeframe it does not hold.
    Raises :class:`DataFormatError` (file, line, problem) for bad content, ``ValueError`` for bad
    arguments and ``OSError`` when a path cannot be read.
    """
    check_timeframe(timeframe)
    if fmt not in FORMATS:
        raise ValueError(f"`fmt` must be one of {list(FORMATS)}, got {fmt!r}")
    if isinstance(utc_shift_hours, bool) or not isinstance(utc_shift_hours, (int, float)) \
            or not math.isfinite(utc_shift_hours) or abs(utc_shift_hours) > 24:
        raise ValueError(f"`utc_shift_hours` must be a number of hours between -24 and 24, got {utc_shift_hours!r}")
    if isinstance(source, (bytes, bytearray)):
        raw, name = bytes(source), filename or "<upload>"
    else:
        raw, name = Path(source).read_bytes(), filename or str(source)
    if not raw.strip():
        raise DataFormatError(name, 1, "empty file")
    data = decode(raw, name)
    if not data.strip():  # only a byte-order mark, or blank lines in UTF-16
        raise DataFormatError(name, 1, "empty file")
    blank = len(data) - len(data.lstrip(b"\n"))  # leading empty lines: parsing starts after them
    try:
        cols, ns, fmt, native = _parse(data[blank:], name, fmt, utc_shift_hours, timeframe, resample_finer)
    except DataFormatError as exc:
        if blank and exc.line:
            raise DataFormatError(name, exc.line + blank, exc.problem) from None
        raise
    bars = Bars(symbol=symbol, timeframe=native, time=ns, open=cols["open"], high=cols["high"],
                low=cols["low"], close=cols["close"], volume=cols["volume"], spread=cols.get("spread"),
                source=f"{Path(name).name} ({fmt})", meta={"format": fmt, "filename": Path(name).name})
    if native == timeframe:
        return bars
    return replace(resample(bars, timeframe), source=f"{bars.source}, resampled from {native}",
                   meta={**bars.meta, "resampled_from": native})


def _native_timeframe(ns: np.ndarray, timeframe: str) -> str:
    """The finer timeframe whose bar length is the file's median bar spacing, if ``timeframe``
    can be aggregated from it; else ``timeframe`` (whose checks then report any problem).
    The median, not the minimum: one stray close pair of bars must fail, not pick a timeframe."""
    if ns.size < 2:
        return timeframe
    median_s = float(np.median(np.diff(ns))) / NS_PER_S
    for tf, secs in TIMEFRAMES.items():
        if secs == median_s and secs < TIMEFRAMES[timeframe] and can_resample(tf, timeframe):
            return tf
    return timeframe


def _parse(data: bytes, name: str, fmt: str, utc_shift_hours: float, timeframe: str,
           resample_finer: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray, str, str]:
    """Columns, UTC times, the layout and the bars' own timeframe of decoded bytes that start
    with the header line."""
    if fmt == "auto":
        detected = detect_format(data)
        if detected is None:
            known = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
            raise DataFormatError(name, 1, f"unknown layout {_header(data)[:80]!r}; known layouts: {known}")
        fmt = detected
    if utc_shift_hours and fmt in ("histdata", "dukascopy"):
        raise ValueError(f"`utc_shift_hours` applies to mt5 and generic files only; {fmt} files have a "
                         f"fixed time zone (histdata EST, dukascopy UTC), got {utc_shift_hours!r}")
    cols, ns, table = _PARSERS[fmt](data, name)
    ns = ns - int(round(utc_shift_hours * 3600)) * NS_PER_S
    native = _native_timeframe(ns, timeframe) if resample_finer else timeframe
    _check(table, cols, ns, native)
    return cols, ns, fmt, native
