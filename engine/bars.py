"""Columnar OHLCV bars: the one data shape every part of QuantMindX passes around."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import numpy as np

#: Bar length of each supported timeframe, in seconds (the spec's list).
TIMEFRAMES: dict[str, int] = {
    "M1": 60,
    "M5": 300,
    "M15": 900,
    "M30": 1800,
    "H1": 3600,
    "H4": 14400,
    "D1": 86400,
}

NS_PER_S = 1_000_000_000


def check_timeframe(timeframe: object, name: str = "timeframe") -> str:
    """Return `timeframe` if it is one of :data:`TIMEFRAMES`, else raise ``ValueError`` naming it."""
    if not isinstance(timeframe, str) or timeframe not in TIMEFRAMES:
        raise ValueError(f"`{name}` must be one of {list(TIMEFRAMES)}, got {timeframe!r}")
    return timeframe


def to_ns(day: dt.date | dt.datetime | str) -> int:
    """UTC nanoseconds since the epoch of a date (midnight UTC), datetime or ISO string."""
    if isinstance(day, str):
        day = dt.datetime.fromisoformat(day)
    if isinstance(day, dt.datetime):
        if day.tzinfo is None:
            day = day.replace(tzinfo=dt.timezone.utc)
        return int(day.timestamp()) * NS_PER_S + day.microsecond * 1000
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()) * NS_PER_S


def ns_to_date(ns: int) -> str:
    """`YYYY-MM-DD` (UTC) of a nanosecond timestamp."""
    return dt.datetime.fromtimestamp(int(ns) // NS_PER_S, tz=dt.timezone.utc).strftime("%Y-%m-%d")


def ns_to_iso(ns: int) -> str:
    """ISO 8601 UTC with milliseconds and `Z` of a nanosecond timestamp."""
    ms = int(ns) // 1_000_000
    t = dt.datetime.fromtimestamp(ms // 1000, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _cut(value: object, n: int, start: int, stop: int) -> object:
    """Per-bar meta arrays (e.g. true regime labels) follow a window; other meta is kept whole."""
    if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n:
        return value[start:stop]
    return value


@dataclass(frozen=True)
class Bars:
    """OHLCV bars of one symbol and timeframe as parallel numpy arrays.

    ``time`` is int64 UTC nanoseconds of each bar's open, strictly increasing; prices and
    volume are float64; ``spread`` (price units) is present where the source has it.
    ``synthetic`` is True for generated data, which must never pass for real.
    """

    symbol: str
    timeframe: str
    time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    spread: np.ndarray | None = None
    synthetic: bool = False
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return int(self.time.shape[0])

    def window(self, start: int, stop: int) -> Bars:
        """Bars ``[start, stop)`` by index (views, no copy)."""
        return replace(
            self,
            time=self.time[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            volume=self.volume[start:stop],
            spread=None if self.spread is None else self.spread[start:stop],
            meta={k: _cut(v, len(self), start, stop) for k, v in self.meta.items()},
        )

    def between(self, start_date: str | None, end_date: str | None) -> Bars:
        """Bars whose time falls on ``start_date`` .. ``end_date`` inclusive (UTC dates)."""
        lo = 0 if not start_date else int(np.searchsorted(self.time, to_ns(start_date), "left"))
        if not end_date:
            hi = len(self)
        else:
            end_ns = to_ns(end_date) + 86400 * NS_PER_S
            hi = int(np.searchsorted(self.time, end_ns, "left"))
        return self.window(lo, hi)

    @property
    def label(self) -> str:
        """Human label that always says when the data is synthetic."""
        tag = " [SYNTHETIC]" if self.synthetic else ""
        return f"{self.symbol} {self.timeframe}{tag}"
