"""Vectorised indicators. Each returns a float64 array as long as its input, NaN during warm-up.

Every value at bar ``i`` uses bars ``<= i`` only, so indicators never look ahead.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_period(period: int, name: str = "period") -> None:
    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {period!r}")


def _rolling_sum(x: np.ndarray, period: int) -> np.ndarray:
    return _window_sums(_prefix(x), x, period)


def _prefix(x: np.ndarray) -> np.ndarray:
    """Prefix sums ``c[k] = sum(x[:k] - x[0])``; centring on the first value keeps the later
    subtraction well conditioned over millions of bars (prices drift little relative to their level)."""
    c = np.empty(x.shape[0] + 1)
    c[0] = 0.0
    if x.shape[0]:
        np.cumsum(x - x[0], out=c[1:])
    return c


def _window_sums(c: np.ndarray, x: np.ndarray, period: int) -> np.ndarray:
    n = x.shape[0]
    out = np.empty(n)
    out[: period - 1] = np.nan
    if n >= period:
        tail = out[period - 1:]
        np.subtract(c[period:], c[:-period], out=tail)
        tail += period * x[0]
    return out


def sma(x: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average over the last ``period`` values."""
    return smas(x, period)[0]


def smas(x: np.ndarray, *periods: int) -> list[np.ndarray]:
    """Several simple moving averages of ``x`` sharing one pass of prefix sums."""
    for p in periods:
        _check_period(p)
    x = np.asarray(x, dtype=np.float64)
    c = _prefix(x)
    out = []
    for p in periods:
        s = _window_sums(c, x, p)
        s /= p
        out.append(s)
    return out


def rolling_std(x: np.ndarray, period: int) -> np.ndarray:
    """Population standard deviation over the last ``period`` values."""
    _check_period(period)
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return np.full(0, np.nan)
    d = x - x[0]
    mean = _rolling_sum(d, period) / period
    var = _rolling_sum(d * d, period) / period - mean * mean
    return np.sqrt(np.maximum(var, 0.0))


def rolling_max(x: np.ndarray, period: int) -> np.ndarray:
    """Highest value over the last ``period`` values."""
    _check_period(period)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] >= period:
        out[period - 1:] = sliding_window_view(x, period).max(axis=1)
    return out


def rolling_min(x: np.ndarray, period: int) -> np.ndarray:
    """Lowest value over the last ``period`` values."""
    _check_period(period)
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] >= period:
        out[period - 1:] = sliding_window_view(x, period).min(axis=1)
    return out


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Relative strength index (0..100) with simple moving averages of gains and losses
    (Cutler's RSI: no recursive smoothing, so it vectorises and has a finite memory)."""
    _check_period(period)
    close = np.asarray(close, dtype=np.float64)
    out = np.full(close.shape[0], np.nan)
    if close.shape[0] <= period:
        return out
    delta = np.diff(close)
    gain = _rolling_sum(np.maximum(delta, 0.0), period)
    loss = _rolling_sum(np.maximum(-delta, 0.0), period)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = gain + loss
        r = np.where(total > 0, 100.0 * gain / np.where(total > 0, total, 1.0), 50.0)
    r[np.isnan(gain)] = np.nan
    out[1:] = r
    return out


def bollinger(close: np.ndarray, period: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands ``(lower, middle, upper)``: SMA +- ``k`` population standard deviations."""
    mid = sma(close, period)
    sd = rolling_std(close, period)
    return mid - k * sd, mid, mid + k * sd


def crossover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True at bar i when ``a[i-1] < b[i-1]`` and ``a[i] > b[i]`` (strict; NaN never crosses)."""
    return crosses(a, b)[0]


def crosses(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a crosses above b, a crosses below b)`` per bar, strict as :func:`crossover`."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    above, below = a > b, a < b
    up = np.zeros(a.shape[0], dtype=bool)
    down = np.zeros(a.shape[0], dtype=bool)
    if a.shape[0] > 1:
        np.logical_and(below[:-1], above[1:], out=up[1:])
        np.logical_and(above[:-1], below[1:], out=down[1:])
    return up, down
