"""Read bar files (MetaTrader 5, histdata.com, Dukascopy, generic OHLCV CSV) into :class:`Bars`.

The layout is recognised from the file's first line. Parsing works on the raw bytes with numpy
(field offsets, fixed-width digit arithmetic) and never builds a Python object per field, so a
million-line M1 file imports in one to two seconds. A file is either imported completely or not at
all: the first problem raises :class:`DataFormatError` naming the file, the line and the problem.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from engine.bars import NS_PER_S, TIMEFRAMES, Bars, check_timeframe

#: Accepted values of ``fmt``; "auto" recognises the layout from the first line.
FORMATS: tuple[str, ...] = ("auto", "mt5", "histdata", "dukascopy", "generic")

#: How each layout is recognised, for the "unknown layout" error.
LAYOUTS: dict[str, str] = {
    "mt5": "MetaTrader 5 export: tab-separated header <DATE> <TIME> <OPEN> <HIGH> <LOW> <CLOSE> <TICKVOL> <VOL> <SPREAD>",
    "histdata": "histdata.com ASCII M1: no header, lines 'YYYYMMDD HHMMSS;open;high;low;close;volume' (EST)",
    "dukascopy": "Dukascopy: header 'Gmt time,Open,High,Low,Close,Volume', times 'DD.MM.YYYY HH:MM:SS.mmm' (UTC)",
    "generic": "generic CSV: header 'time,Open,High,Low,Close[,Volume][,Spread]' (any time column name)",
}

_MAX_FIELD = 64  # longest field accepted; longer means a wrong delimiter or a corrupt file
_HISTDATA_LINE = re.compile(rb"^\d{8} \d{6};")
_EST_NS = 5 * 3600 * NS_PER_S  # histdata.com clocks are EST without DST: UTC-5 all year


class DataFormatError(ValueError):
    """A bar file that cannot be imported; names the file, the 1-based line and the problem."""

    def __init__(self, filename: str, line: int | None, problem: str) -> None:
        self.filename = filename
        self.line = line
        self.problem = problem
        where = f"{filename}, line {line}" if line else filename
        super().__init__(f"{where}: {problem}")


_FIELD_CHARS = "YMDhmsf"  # year, month, day, hour, minute, second, fraction; the rest is literal
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)
_GENERIC_TIME = re.compile(
    r"^\d{4}([-/.])\d{2}\1\d{2}(?:([ T])\d{2}:\d{2}(:\d{2}(?:\.(\d{1,9}))?)?)?(Z|[+-]00:?00)?$")


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm, vectorised)."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_fixed_times(g: np.ndarray, lens: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse an (rows, width) uint8 matrix of times laid out as ``pattern`` (e.g. 'YYYY.MM.DD hh:mm').

    Returns UTC nanoseconds and a boolean mask of rows that do not match the pattern or hold an
    impossible date or time. Fields a pattern lacks default to 1970-01-01 00:00:00.
    """
    width, n = len(pattern), len(g)
    bad = lens != width
    if g.shape[1] < width:
        g = np.pad(g, ((0, 0), (0, width - g.shape[1])))
    g = g[:, :width]
    digits = g.astype(np.int32) - 48
    vals: dict[str, np.ndarray] = {}
    for ch in set(pattern) & set(_FIELD_CHARS):
        pos = [i for i, c in enumerate(pattern) if c == ch]
        dg = digits[:, pos]
        bad |= ((dg < 0) | (dg > 9)).any(axis=1)
        vals[ch] = (dg @ (10 ** np.arange(len(pos) - 1, -1, -1, dtype=np.int32))).astype(np.int64)
    for i, c in enumerate(pattern):
        if c not in _FIELD_CHARS:
            bad |= g[:, i] != ord(c)
    zero = np.zeros(n, np.int64)
    y, m, d = vals.get("Y", zero + 1970), vals.get("M", zero + 1), vals.get("D", zero + 1)
    hh, mm, ss = vals.get("h", zero), vals.get("m", zero), vals.get("s", zero)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    dim = _DAYS_IN_MONTH[np.clip(m, 1, 12) - 1] + ((m == 2) & leap)
    bad |= (m < 1) | (m > 12) | (d < 1) | (d > dim) | (hh > 23) | (mm > 59) | (ss > 59)
    ns = (_days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss) * NS_PER_S
    if "f" in vals:
        ns += vals["f"] * 10 ** (9 - pattern.count("f"))
    return ns, bad


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


_Parsed = tuple[dict[str, np.ndarray], np.ndarray, "_Table"]


@dataclass
class _Table:
    """The fields of a delimited file as byte offsets into ``buf`` (no per-field objects)."""

    name: str
    buf: np.ndarray  # uint8, padded with zeros so fixed-width windows never run off the end
    starts: np.ndarray  # (rows, fields) int64 offsets of each field's first byte
    ends: np.ndarray  # (rows, fields) int64 offsets one past each field's last byte
    lineno: np.ndarray  # (rows,) 1-based line number of each row

    def fail(self, row: int, problem: str) -> DataFormatError:
        return DataFormatError(self.name, int(self.lineno[row]), problem)

    def text(self, row: int, col: int) -> str:
        raw = self.buf[self.starts[row, col]:self.ends[row, col]].tobytes()
        return raw.decode("utf-8", "replace")

    def matrix(self, col: int) -> np.ndarray:
        """Column ``col`` as an (rows, width) uint8 matrix, zero-padded on the right."""
        s, lens = self.starts[:, col], self.ends[:, col] - self.starts[:, col]
        width = int(lens.max())
        if width > _MAX_FIELD:
            row = int(np.argmax(lens))
            raise self.fail(row, f"field {col + 1} is {width} characters long; is the delimiter right?")
        width = max(width, 1)
        g = sliding_window_view(self.buf, width)[s]
        g[np.arange(width) >= lens[:, None]] = 0
        return g

    def numbers(self, col: int, label: str) -> np.ndarray:
        """Column ``col`` parsed as float64; an unparsable field raises naming its line."""
        g = self.matrix(col)
        fast = _plain_decimals(g)
        if fast is not None:
            return fast
        strings = np.ascontiguousarray(g).view(f"S{g.shape[1]}").ravel()
        try:
            return strings.astype(np.float64)
        except ValueError:
            row = _first_unparsable(strings)
            raise self.fail(row, f"unparsable number {self.text(row, col)!r} in column {label}") from None

    def times(self, col: int, pattern: str, label: str) -> np.ndarray:
        """Column ``col`` parsed with a fixed-width pattern such as 'YYYY.MM.DD'."""
        g = self.matrix(col)
        lens = self.ends[:, col] - self.starts[:, col]
        ns, bad = parse_fixed_times(g, lens, pattern)
        if bad.any():
            row = int(np.argmax(bad))
            raise self.fail(row, f"unparsable time {self.text(row, col)!r} in column {label} "
                                 f"(expected {pattern})")
        return ns


def _plain_decimals(g: np.ndarray) -> np.ndarray | None:
    """Parse a column of plain decimals ('-1.07214') with integer arithmetic, or None.

    Handles only optional '-', up to 15 digits and one '.', which is what bar files hold; anything
    else (exponents, 'nan', spaces) returns None and numpy's parser takes over. With at most 15
    digits the mantissa and 10**decimals are exact doubles, so one IEEE division gives the
    correctly rounded value: the same float numpy's parser returns, about 5x faster.
    """
    digit = (g >= 48) & (g <= 57)
    dot = g == 46
    pad = g == 0
    minus = g[:, 0] == 45
    allowed = digit | dot | pad
    allowed[:, 0] |= minus
    ndigits = digit.sum(axis=1)
    if not allowed.all() or (dot.sum(axis=1) > 1).any() or ndigits.min(initial=1) == 0 \
            or ndigits.max(initial=0) > 15 or (np.maximum.accumulate(pad, axis=1) & ~pad).any():
        return None
    mantissa = np.zeros(len(g), np.int64)
    decimals = np.zeros(len(g), np.int64)
    after_dot = np.zeros(len(g), bool)
    for j in range(g.shape[1]):  # a loop over characters (a dozen), vectorised over rows
        d = digit[:, j]
        mantissa = np.where(d, mantissa * 10 + (g[:, j].astype(np.int64) - 48), mantissa)
        decimals += d & after_dot
        after_dot |= dot[:, j]
    value = mantissa / 10.0 ** decimals
    return np.where(minus, -value, value)


def _first_unparsable(strings: np.ndarray) -> int:
    """Index of the first element numpy cannot parse as a float (bisection: O(n) work)."""
    lo, hi = 0, len(strings)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            strings[lo:mid].astype(np.float64)
        except ValueError:
            hi = mid
        else:
            lo = mid
    return lo


def _decode(raw: bytes, name: str) -> bytes:
    """UTF-8 bytes without BOM and with '\\n' line ends, whatever the file's encoding."""
    encoding = None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"  # the BOM tells the codec the byte order
    elif raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif len(raw) >= 4 and raw[1] == 0 and raw[3] == 0:
        encoding = "utf-16-le"  # MT5 sometimes writes UTF-16 without a BOM
    elif len(raw) >= 4 and raw[0] == 0 and raw[2] == 0:
        encoding = "utf-16-be"
    if encoding:
        try:
            raw = raw.decode(encoding).encode("utf-8")
        except UnicodeError as exc:
            raise DataFormatError(name, None, f"looks like UTF-16 but cannot be decoded: {exc}") from None
    if b"\n" in raw:
        raw = raw.replace(b"\r", b"")
    else:
        raw = raw.replace(b"\r", b"\n")  # classic Mac line ends
    return raw.rstrip(b"\n") + b"\n"


def _table(data: bytes, name: str, delim: bytes, ncols: int, header_lines: int) -> _Table:
    """Split ``data`` into ``ncols`` fields per line, skipping the header and empty lines."""
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl[:-1] + 1))
    dpos = np.flatnonzero(buf == delim[0])
    before = np.searchsorted(dpos, nl)  # delimiters before each line end
    counts = np.diff(before, prepend=0)
    keep = nl > starts
    keep[:header_lines] = False
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        raise DataFormatError(name, header_lines + 1, "no bars after the header")
    wrong = rows[counts[rows] != ncols - 1]
    if wrong.size:
        row = int(wrong[0])
        raise DataFormatError(name, row + 1, f"expected {ncols} fields separated by {delim.decode()!r}, "
                                             f"found {int(counts[row]) + 1}")
    # every kept line has exactly ncols-1 delimiters and empty lines none: a reshape finds them
    skip = int(before[header_lines - 1]) if header_lines else 0
    d = dpos[skip:].reshape(rows.size, ncols - 1)
    padded = np.concatenate((buf, np.zeros(_MAX_FIELD + 1, np.uint8)))
    field_starts = np.empty((rows.size, ncols), np.int64)
    field_starts[:, 0], field_starts[:, 1:] = starts[rows], d + 1
    field_ends = np.empty((rows.size, ncols), np.int64)
    field_ends[:, :-1], field_ends[:, -1] = d, nl[rows]
    return _Table(name, padded, field_starts, field_ends, rows + 1)


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
    if _HISTDATA_LINE.match(first.encode()):
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
    t = _table(data, name, b"\t", len(header), 1)
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
    t = _table(data, name, b";", 6, 0)
    ns = t.times(0, "YYYYMMDD hhmmss", "time") + _EST_NS
    labels = ("open", "high", "low", "close", "volume")
    return {k: t.numbers(i + 1, k) for i, k in enumerate(labels)}, ns, t


def _parse_dukascopy(data: bytes, name: str) -> _Parsed:
    header = _header(data).split(",")
    cols = _columns_by_name(header, name)
    missing = [c for c in ("gmt time", "open", "high", "low", "close", "volume") if c not in cols]
    if missing:
        raise DataFormatError(name, 1, f"Dukascopy header lacks {missing}; expected {LAYOUTS['dukascopy']}")
    t = _table(data, name, b",", len(header), 1)
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
    t = _table(data, name, delim.encode(), len(header), 1)
    label = header[0].strip() or "time"
    ns = _generic_times(t, label, cols.get("time"))
    out: dict[str, np.ndarray] = {k: t.numbers(cols[k], k) for k in
                                  ("open", "high", "low", "close", "volume", "spread") if k in cols}
    out.setdefault("volume", np.zeros(len(ns)))
    return out, ns, t


def _generic_times(t: _Table, label: str, time_col: int | None) -> np.ndarray:
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


def _check(t: _Table, cols: dict[str, np.ndarray], ns: np.ndarray, timeframe: str) -> None:
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
              utc_shift_hours: float = 0.0, filename: str | None = None) -> Bars:
    """Read a bar file (a path, or the bytes of an upload) into :class:`Bars`.

    ``fmt`` is one of :data:`FORMATS`; "auto" recognises the layout from the first line.
    ``utc_shift_hours`` is how far the file's clock is ahead of UTC (MetaTrader brokers often
    run at UTC+2 or +3): it is subtracted from every time. It applies to mt5 and generic files;
    histdata.com files are always EST (UTC-5) and Dukascopy files always UTC.
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
    data = _decode(raw, name)
    blank = len(data) - len(data.lstrip(b"\n"))  # leading empty lines: parsing starts after them
    try:
        cols, ns, fmt = _parse(data[blank:], name, fmt, utc_shift_hours, timeframe)
    except DataFormatError as exc:
        if blank and exc.line:
            raise DataFormatError(name, exc.line + blank, exc.problem) from None
        raise
    return Bars(symbol=symbol, timeframe=timeframe, time=ns, open=cols["open"], high=cols["high"],
                low=cols["low"], close=cols["close"], volume=cols["volume"], spread=cols.get("spread"),
                source=f"{Path(name).name} ({fmt})", meta={"format": fmt, "filename": Path(name).name})


def _parse(data: bytes, name: str, fmt: str, utc_shift_hours: float,
           timeframe: str) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Columns, UTC times and the layout of decoded bytes that start with the header line."""
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
    _check(table, cols, ns, timeframe)
    return cols, ns, fmt
