"""Seeded synthetic FX-like bars with regime switches: the data every fresh install runs on.

Prices follow a regime-switching model. Each regime lasts 20 to 400 bars (log-uniform; trends
at most 200 so daily prices stay FX-like), then the next one is drawn from a transition matrix (a Markov chain over regimes, never staying in the
same one, with a gentle pull that keeps prices near 1.10 over the years):

=============  =====================  ==========================  =============================
regime         drift per bar          volatility (x base)         mean reversion
=============  =====================  ==========================  =============================
trending_up    +0.15 sigma            0.8                         none
trending_down  -0.15 sigma            0.8                         none
ranging        0                      0.6                         5% per bar towards the level
                                                                  where the regime began
volatile       0                      2.2                         none
=============  =====================  ==========================  =============================

Base volatility is 0.55% a day, scaled by the square root of the bar length. Bars are
deterministic by timestamp: for one seed and timeframe the whole fixed span is generated once
(2018-01-01..2025-12-31; M1 only 2024-01-01..2025-12-31 to keep it small) and every request is
a slice of it, so a bar never changes with the requested range. Weekends have no bars.
"""
from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np

from engine.bars import NS_PER_S, TIMEFRAMES, Bars, check_timeframe, to_ns

REGIME_NAMES: tuple[str, ...] = ("trending_up", "trending_down", "ranging", "volatile")
SYMBOL = "SYNTH"
SPAN: tuple[str, str] = ("2018-01-01", "2025-12-31")
M1_SPAN: tuple[str, str] = ("2024-01-01", "2025-12-31")
SPREAD = 0.00008
ANCHOR = 1.10

_DRIFT = np.array([0.15, -0.15, 0.0, 0.0])  # in units of the bar's sigma
_VOL = np.array([0.8, 0.8, 0.6, 2.2])
_REVERT = np.array([0.0, 0.0, 0.05, 0.0])
_TRANSITIONS = np.array([  # row: from, column: to; the diagonal is zero (a switch always changes)
    [0.0, 0.2, 0.5, 0.3],
    [0.2, 0.0, 0.5, 0.3],
    [0.35, 0.35, 0.0, 0.3],
    [0.3, 0.3, 0.4, 0.0],
])
_MIN_LEN, _MAX_LEN, _MAX_TREND = 20, 400, 200  # regime length in bars, log-uniform in between
_DAILY_VOL = 0.0055


def span(timeframe: str) -> tuple[str, str]:
    """First and last date (inclusive) of the synthetic data at ``timeframe``."""
    return M1_SPAN if check_timeframe(timeframe) == "M1" else SPAN


@lru_cache(maxsize=8)
def _grid(timeframe: str) -> np.ndarray:
    first, last = span(timeframe)
    step = TIMEFRAMES[timeframe] * NS_PER_S
    t = np.arange(to_ns(first), to_ns(last) + 86400 * NS_PER_S, step, dtype=np.int64)
    weekday = (t // (86400 * NS_PER_S) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    t = t[weekday < 5]
    t.flags.writeable = False
    return t


def synthetic_summary(timeframe: str) -> dict[str, object]:
    """``{start, end, bars}`` of the synthetic data at ``timeframe``, by calendar arithmetic
    (no series is built: listing the store stays instant and light in the daemon)."""
    first, last = (np.datetime64(d, "D") for d in span(timeframe))
    days = int(np.busday_count(first, last + 1))  # Monday-Friday, like the bars
    return {"start": str(np.busday_offset(first, 0, roll="forward")),
            "end": str(np.busday_offset(last, 0, roll="backward")),
            "bars": days * (86400 // TIMEFRAMES[timeframe])}


def _regimes(rng: np.random.Generator, n: int, noise: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Regime label and log price (relative to ANCHOR) of every bar, segment by segment."""
    labels = np.empty(n, np.int8)
    logp = np.empty(n, np.float64)
    x, regime, i = 0.0, int(rng.integers(4)), 0
    while i < n:
        length = int(np.exp(rng.uniform(np.log(_MIN_LEN), np.log(_MAX_LEN))))
        if regime < 2:  # trends stop at 200 bars so D1 prices stay FX-like, not 50% away
            length = min(length, _MAX_TREND)
        length = min(length, n - i)
        s = sigma * _VOL[regime]
        eps = noise[i:i + length] * s
        if _REVERT[regime]:
            # ranging: AR(1) deviation from the entry level, solved in closed form per segment
            phi = 1.0 - _REVERT[regime]
            powers = phi ** np.arange(length)
            path = x + powers * np.cumsum(eps / powers)
        else:
            path = x + np.cumsum(eps + _DRIFT[regime] * sigma)
        labels[i:i + length] = regime
        logp[i:i + length] = path
        x, i = float(path[-1]), i + length
        p = _TRANSITIONS[regime].copy()
        tilt = np.exp(-15.0 * x)  # above 1.10 favour down-trends, below favour up-trends
        p[0], p[1] = p[0] * tilt, p[1] / tilt
        regime = int(rng.choice(4, p=p / p.sum()))
    return labels, logp


@lru_cache(maxsize=3)
def _generate(timeframe: str, seed: int) -> dict[str, np.ndarray]:
    """The whole fixed span for one timeframe and seed (cached; arrays are read-only)."""
    time = _grid(timeframe)
    n = len(time)
    rng = np.random.default_rng([seed, list(TIMEFRAMES).index(timeframe)])
    sigma = _DAILY_VOL * np.sqrt(TIMEFRAMES[timeframe] / 86400)
    noise = rng.standard_normal(n)
    labels, logp = _regimes(rng, n, noise, sigma)
    close = ANCHOR * np.exp(logp)
    open_ = np.concatenate(([ANCHOR], close[:-1]))
    bar_sigma = sigma * _VOL[labels] * close
    wick_up = np.abs(rng.standard_normal(n)) * 0.4 * bar_sigma
    wick_down = np.abs(rng.standard_normal(n)) * 0.4 * bar_sigma
    # rounding to 5 decimals is monotone, so high >= max(open, close) survives it
    out = {
        "time": time,
        "open": np.round(open_, 5),
        "high": np.round(np.maximum(open_, close) + wick_up, 5),
        "low": np.round(np.minimum(open_, close) - wick_down, 5),
        "close": np.round(close, 5),
        "volume": np.round(TIMEFRAMES[timeframe] / 3.6 * _VOL[labels] * np.exp(0.3 * rng.standard_normal(n))) + 1,
        "spread": np.full(n, SPREAD),
        "regimes": labels,
    }
    for a in out.values():
        a.flags.writeable = False
    return out


def synthetic_bars(symbol: str = SYMBOL, timeframe: str = "H1", start_date: str | None = None,
                   end_date: str | None = None, seed: int = 7) -> Bars:
    """Synthetic bars between ``start_date`` and ``end_date`` (inclusive UTC dates, None = all).

    The result is labelled ``synthetic=True`` with source "synthetic (seed N)". ``meta["regimes"]``
    holds the true regime of every returned bar (int8 indices into ``meta["regime_names"]``), for
    testing regime detection. The arrays are read-only views of a cached series.
    """
    check_timeframe(timeframe)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an integer, got {seed!r}")
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValueError(f"`{name}` must be a date YYYY-MM-DD, got {value!r}") from None
    data = _generate(timeframe, seed)
    t = data["time"]
    lo = 0 if not start_date else int(np.searchsorted(t, to_ns(start_date)))
    hi = len(t) if not end_date else int(np.searchsorted(t, to_ns(end_date) + 86400 * NS_PER_S))
    hi = max(lo, hi)
    return Bars(symbol=symbol, timeframe=timeframe, time=t[lo:hi], open=data["open"][lo:hi],
                high=data["high"][lo:hi], low=data["low"][lo:hi], close=data["close"][lo:hi],
                volume=data["volume"][lo:hi], spread=data["spread"][lo:hi], synthetic=True,
                source=f"synthetic (seed {seed})",
                meta={"regimes": data["regimes"][lo:hi], "regime_names": list(REGIME_NAMES), "seed": seed})
