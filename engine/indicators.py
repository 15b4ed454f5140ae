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
    return _rolling_sums(np.asarray(x, dtype=np.float64), period)[0]


def _rolling_sums(x: np.ndarray, period: int, squares: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Sums of the last ``period`` values, NaN for the first ``period - 1`` bars; with ``squares``
    the sums of deviations from a local anchor and of their squares (for variances).

    Prefix sums over millions of bars grow large and lose precision, so the series is cut into
    overlapping blocks, each with its own prefix sums; every window lies inside one block. The
    layout depends on ``period`` only, so a moving average is bit-identical however it is
    requested (exact ties between two averages stay ties)."""
    n = x.shape[0]
    if n == 0:
        return np.zeros(0), (np.zeros(0) if squares else None)
    block = max(4096, 4 * period)  # the overlap (period - 1) stays a small share of a block
    nb = -(-n // block)
    xp = np.concatenate((np.full(period - 1, x[0]), x, np.full(nb * block - n, x[-1])))
    rows = sliding_window_view(xp, block + period - 1)[::block]
    c = np.empty((nb, block + period))
    c[:, 0] = 0.0
    if not squares:
        # Within a block the running sum stays near block x price, so plain prefix sums keep
        # about 1e-12 relative precision however long the series is.
        np.cumsum(rows, axis=1, out=c[:, 1:])
        return _trim(c[:, period:] - c[:, :block], n, period), None
    # Squares need deviations from a local anchor, or E[x^2] - E[x]^2 cancels catastrophically.
    d = rows - rows[:, :1]
    np.cumsum(d, axis=1, out=c[:, 1:])
    s = _trim(c[:, period:] - c[:, :block], n, period)
    np.cumsum(d * d, axis=1, out=c[:, 1:])
    return s, _trim(c[:, period:] - c[:, :block], n, period)


def _trim(s: np.ndarray, n: int, p: int) -> np.ndarray:
    out = s.reshape(-1)[:n]
    out[: p - 1] = np.nan
    return out


def sma(x: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average over the last ``period`` values."""
    _check_period(period)
    out = _rolling_sums(np.asarray(x, dtype=np.float64), period)[0]
    out /= period
    return out


def smas(x: np.ndarray, *periods: int) -> list[np.ndarray]:
    """Several simple moving averages of ``x`` (each exactly as :func:`sma` computes it)."""
    return [sma(x, p) for p in periods]


def rolling_std(x: np.ndarray, period: int) -> np.ndarray:
    """Population standard deviation over the last ``period`` values."""
    _check_period(period)
    s, s2 = _rolling_sums(np.asarray(x, dtype=np.float64), period, squares=True)
    assert s2 is not None
    mean = s / period  # deviation sums: the anchor cancels out of the variance
    var = s2 / period - mean * mean
    return np.sqrt(np.maximum(var, 0.0))


def rolling_max(x: np.ndarray, period: int) -> np.ndarray:
    """Highest value over the last ``period`` values."""
    return _rolling_extreme(x, period, np.maximum, -np.inf)


def rolling_min(x: np.ndarray, period: int) -> np.ndarray:
    """Lowest value over the last ``period`` values."""
    return _rolling_extreme(x, period, np.minimum, np.inf)


def _rolling_extreme(x: np.ndarray, period: int, op: np.ufunc, pad: float) -> np.ndarray:
    # van Herk / Gil-Werman: running extremes forwards and backwards inside blocks of ``period``
    # bars; any window is the tail of one block plus the head of the next. O(n) for any period.
    _check_period(period)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    out = np.full(n, np.nan)
    if n < period:
        return out
    blocks = np.full(-(-n // period) * period, pad)
    blocks[:n] = x
    head = blocks.reshape(-1, period)
    if period > 256:  # long rows: accumulate along them
        tail = op.accumulate(head[:, ::-1], axis=1)[:, ::-1]
        head = op.accumulate(head, axis=1)
    else:  # short rows: column by column, each step one vector op over all blocks (faster)
        tail = head.copy()
        for k in range(1, period):
            op(head[:, k - 1], head[:, k], out=head[:, k])
            j = period - 1 - k
            op(tail[:, j + 1], tail[:, j], out=tail[:, j])
    out[period - 1:] = op(tail.reshape(-1)[: n - period + 1], head.reshape(-1)[period - 1:n])
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
