"""Aggregate bars from a finer timeframe into a coarser one (M1 -> H1, H1 -> D1, ...)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.bars import NS_PER_S, TIMEFRAMES, Bars, check_timeframe


def can_resample(source: str, target: str) -> bool:
    """True when bars of timeframe ``source`` can be aggregated into ``target`` bars."""
    src, dst = TIMEFRAMES[source], TIMEFRAMES[target]
    return dst >= src and dst % src == 0


def resample(bars: Bars, timeframe: str) -> Bars:
    """Aggregate ``bars`` into the coarser ``timeframe``.

    Buckets are aligned to UTC: a D1 bar covers 00:00-24:00 UTC, H4 bars open at 00, 04, 08...
    UTC. Each output bar has the first open, the highest high, the lowest low, the last close, the
    summed volume and the mean spread of the bars inside it, and is stamped with its bucket's
    start. Buckets without bars (weekends, gaps) produce no bar. Asking for a finer timeframe,
    or one the source does not divide, raises ``ValueError``; the same timeframe returns ``bars``.
    """
    check_timeframe(timeframe)
    check_timeframe(bars.timeframe, "bars.timeframe")
    if bars.timeframe == timeframe:
        return bars
    if not can_resample(bars.timeframe, timeframe):
        raise ValueError(f"cannot resample {bars.timeframe} bars to `timeframe` {timeframe!r}: only a "
                         f"finer timeframe can be aggregated into a coarser one that it divides")
    width = TIMEFRAMES[timeframe] * NS_PER_S
    bucket = bars.time // width  # floor division keeps buckets UTC-aligned before 1970 too
    if len(bars) == 0:
        starts = np.zeros(0, np.intp)
    else:
        starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.concatenate((starts[1:], [len(bars)])) if len(starts) else starts
    spread = None
    if bars.spread is not None:
        spread = _reduce(np.add, bars.spread, starts) / np.maximum(ends - starts, 1)
    return replace(
        bars,
        timeframe=timeframe,
        time=(bucket[starts] * width).astype(np.int64),
        open=np.asarray(bars.open[starts], np.float64),
        high=_reduce(np.maximum, bars.high, starts),
        low=_reduce(np.minimum, bars.low, starts),
        close=np.asarray(bars.close[ends - 1], np.float64),
        volume=_reduce(np.add, bars.volume, starts),
        spread=spread,
        meta={"resampled_from": bars.timeframe},
    )


def _reduce(ufunc: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``ufunc.reduceat`` that also accepts zero buckets (reduceat rejects empty indices)."""
    if len(starts) == 0:
        return np.zeros(0, np.float64)
    return ufunc.reduceat(np.asarray(values, np.float64), starts)
