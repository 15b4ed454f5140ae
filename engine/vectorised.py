"""The all-numpy simulator path: decisions as arrays in, trades and equity out, no Python loop.

Used for signal arrays without spiced hooks, with or without stops and targets; it hands back
None when a stop exit could be followed by a re-entry inside a run of equal decisions, which
only the event loop (engine.simulator) can follow.
"""
from __future__ import annotations

import logging

import numpy as np

from engine.bars import Bars
from engine.config import BacktestConfig
from engine.fills import STOP, TARGET, OpenTrade, SimResult, equity_curve, log_arrays

def run_vectorised(bars: Bars, target: np.ndarray, config: BacktestConfig, warmup: int,
                    logger: logging.Logger | None, sl: float | None = None,
                    tp: float | None = None) -> SimResult | None:
    """Trades from targets with numpy only; None when a stop exit could be followed by a re-entry
    on a repeated decision (then only the event loop knows the state)."""
    n = len(bars)
    ev = np.flatnonzero(~np.isnan(target[: max(n - 1, 0)]))
    entry_bar, side, span_end = _spans(ev, np.sign(target[ev]), n)  # sign: a side, whatever the size
    c = config.costs
    add = c.spread / 2 + c.slippage
    entry_price = bars.open[entry_bar] + side * add
    exit_bar, reason = span_end.copy(), np.zeros(entry_bar.size, dtype=np.int8)
    raw_exit = bars.open[np.minimum(exit_bar, n - 1)]
    stop = entry_price * (1 - side * sl / 100) if sl is not None else np.full(entry_bar.size, np.nan)
    target_px = entry_price * (1 + side * tp / 100) if tp is not None else np.full(entry_bar.size, np.nan)
    if (sl is not None or tp is not None) and entry_bar.size:
        hit = first_hits(bars, entry_bar, span_end, side, stop, target_px)
        h = np.flatnonzero(hit >= 0)
        if np.any(np.searchsorted(ev, hit[h]) < np.searchsorted(ev, span_end[h] - 1)):
            return None
        exit_bar[h] = hit[h]
        raw_exit[h], reason[h] = level_fills(bars, hit[h], side[h], stop[h], target_px[h])
    closed = exit_bar < n
    units = config.units
    xs, ep, xb = side[closed], entry_price[closed], exit_bar[closed]
    exit_price = raw_exit[closed] - xs * add
    comm = units * c.commission * (ep + exit_price)
    pnl = xs * units * (exit_price - ep) - comm
    ret = xs * (exit_price / ep - 1) - comm / (units * ep)
    open_trade = None
    if closed.size and not closed[-1]:
        px = float(entry_price[-1])
        open_trade = OpenTrade(int(entry_bar[-1]), int(side[-1]), units, px, units * px * c.commission,
                               None if sl is None else float(stop[-1]), None if tp is None else float(target_px[-1]))
    arrays = {"entry_bar": entry_bar[closed].astype(np.int64), "exit_bar": xb.astype(np.int64),
              "side": xs.astype(np.int8), "size": np.full(xs.size, float(units)), "entry_price": ep,
              "exit_price": exit_price, "pnl": pnl, "return_pct": ret, "commission": comm,
              "exit_reason": reason[closed]}
    equity = equity_curve(bars.close, arrays, open_trade, config.initial_balance, c.commission)
    log_arrays(logger, config, bars, arrays, open_trade)
    return SimResult(**arrays, open_trade=open_trade, equity=equity,
                     initial_balance=config.initial_balance, warmup=warmup, path="vectorised")


def _spans(ev: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entry bar, side, end bar) of each trade the decisions open, ignoring stops: a trade runs
    from the fill of a change to a non-flat side to the fill of the next change (or ``n``)."""
    prev = np.empty_like(vals)
    if vals.size:
        prev[0] = 0.0
        prev[1:] = vals[:-1]
    keep = vals != prev
    sides = vals[keep]
    fills = ev[keep] + 1
    opens = np.flatnonzero(sides != 0)
    if not opens.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64)
    end = np.where(opens + 1 < fills.size, fills[np.minimum(opens + 1, fills.size - 1)], n)
    return fills[opens], sides[opens], end


def first_hits(bars: Bars, entry: np.ndarray, end: np.ndarray, side: np.ndarray, stop: np.ndarray,
                target: np.ndarray) -> np.ndarray:
    """Per trade, the first bar in ``[entry, end)`` touching its stop or target, else -1.

    The spans are disjoint, so one pass over the concatenated bars with per-bar levels and a
    segmented minimum finds every first hit (NaN levels never compare true)."""
    n = len(bars)
    lengths = end - entry
    seg = np.cumsum(lengths) - lengths
    idx = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(seg - entry, lengths)
    long_ = side > 0
    at_low = np.repeat(np.where(long_, stop, target), lengths)    # levels a falling low touches
    at_high = np.repeat(np.where(long_, target, stop), lengths)   # levels a rising high touches
    with np.errstate(invalid="ignore"):
        hit = (bars.low[idx] <= at_low) | (bars.high[idx] >= at_high)
    first = np.minimum.reduceat(np.where(hit, idx, n), seg)
    return np.where(first < n, first, -1)


def level_fills(bars: Bars, s: np.ndarray, side: np.ndarray, stop: np.ndarray,
                 target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw exit price and reason at hit bars ``s``: gaps fill at the open; the stop wins ties."""
    o = bars.open[s]
    long_ = side > 0
    with np.errstate(invalid="ignore"):
        gap_stop = np.where(long_, o <= stop, o >= stop)
        gap_target = np.where(long_, o >= target, o <= target)
        touch_stop = np.where(long_, bars.low[s] <= stop, bars.high[s] >= stop)
    price = np.where(gap_stop | gap_target, o, np.where(touch_stop, stop, target))
    reason = np.where(gap_stop, STOP, np.where(gap_target, TARGET, np.where(touch_stop, STOP, TARGET)))
    return price, reason.astype(np.int8)
