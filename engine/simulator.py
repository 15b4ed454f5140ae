"""Turns a strategy's decisions into fills, trades and a per-bar equity curve.

Fill conventions (the README states them for users):

* a decision made on bar ``i`` (after its close) fills at bar ``i+1``'s open; a decision on the
  last bar never fills;
* a buy fills at price + spread/2 + slippage, a sell at price - spread/2 - slippage; commission is
  ``costs.commission`` times the traded notional, charged on every fill;
* stop-loss / take-profit levels are percentages of the entry fill price, active from the entry
  bar on and checked against each bar's low/high; when both are hit in one bar the stop wins; when
  the bar opens beyond a level the exit fills at that open;
* equity is marked to each bar's close.

Three paths produce identical trades: ``vectorised`` (signal arrays without spiced hooks, stops
included: pure numpy, :mod:`engine.vectorised`), ``events`` (signal arrays with spiced hooks, or
a re-entry after a stop: a Python loop over decisions, never over bars) and ``per_bar`` (a user
strategy's ``next``: one tight loop over bars). Trade records and the equity curve live in
:mod:`engine.fills`.
"""
from __future__ import annotations

import logging
from bisect import bisect_left
from typing import Callable, Sequence

import numpy as np

from engine.bars import Bars, ns_to_date
from engine.config import BacktestConfig
from engine.fills import (EXIT_REASONS, LOG_TRADE_CAP, SIGNAL, STOP, TARGET, OpenTrade, SimResult,
                          TradeLog, equity_curve, log_arrays)
from engine.progress import Progress, ProgressFn, Throttle
from engine.strategy import Strategy
from engine.vectorised import first_hits, run_vectorised

__all__ = ["simulate_strategy", "SimResult", "OpenTrade", "Sizer", "EXIT_REASONS", "LOG_TRADE_CAP",
           "equity_curve", "log_arrays"]

#: older name of :func:`engine.fills.log_arrays` (engine.walkforward imports it from here)
_log_arrays = log_arrays

CHUNK = 16_384

Sizer = Callable[[int, int, float, "float | None", float, Sequence[float]], float]


class _Book:
    """Fill arithmetic and trade recording shared by the event and per-bar paths."""

    def __init__(self, bars: Bars, config: BacktestConfig, strategy: Strategy,
                 allow_entry: np.ndarray | None, sizer: Sizer | None, logger: logging.Logger | None,
                 lists: bool = False) -> None:
        c = config.costs
        self.n = len(bars)
        # Lists index several times faster than arrays from Python, but building them costs a
        # pass over the data: only the per-bar path with stops reads prices on every bar.
        cols = (bars.open, bars.high, bars.low, bars.close)
        self.o: Sequence[float]
        self.h: Sequence[float]
        self.l: Sequence[float]
        self.c: Sequence[float]
        self.o, self.h, self.l, self.c = (a.tolist() for a in cols) if lists else cols  # type: ignore[assignment]
        self.buy_add = c.spread / 2 + c.slippage
        self.comm = c.commission
        self.units = config.units
        self.sl = strategy.stop_loss_pct
        self.tp = strategy.take_profit_pct
        self.allow = None if allow_entry is None else np.asarray(allow_entry, dtype=bool).tolist()
        self.sizer = sizer
        self.balance = config.initial_balance
        self.log = TradeLog(logger, config, bars)
        self.trades: list[tuple] = []
        self.pnls: list[float] = []
        self.realized = 0.0
        self.blocked: list[tuple[int, int]] = []
        self.skipped: list[tuple[int, int]] = []
        # the open position
        self.side = 0
        self.size = 0.0
        self.entry_bar = 0
        self.entry = 0.0
        self.entry_comm = 0.0
        self.stop: float | None = None
        self.target: float | None = None

    def decide(self, i: int, want: int) -> None:
        """Act on a decision after bar ``i`` (caller ensures ``want != side`` and ``i < n-1``)."""
        want = 1 if want > 0 else -1 if want < 0 else 0
        if want == self.side:
            return
        units = 0.0
        if want:
            if self.allow is not None and not self.allow[i]:
                self.blocked.append((i, want))  # the spiced layer logs why, with its regime
            else:
                units = self.units
                if self.sizer is not None:
                    units = self._sized(i, want)
                    if not units > 0:  # 0, negative or NaN: no entry
                        units = 0.0
                        self.skipped.append((i, want))
        if self.side:
            self.close(i + 1, float(self.o[i + 1]), SIGNAL)
        if units > 0:
            self.open(i + 1, want, units)

    def _sized(self, i: int, want: int) -> float:
        ref = float(self.c[i])
        stop = None if self.sl is None else ref * (1 - want * self.sl / 100)
        equity = self.balance + self.realized
        if self.side:
            equity += self.side * self.size * (ref - self.entry) - self.entry_comm
        return float(self.sizer(i, want, ref, stop, equity, self.pnls))  # type: ignore[misc]

    def open(self, f: int, side: int, units: float) -> None:
        px = float(self.o[f]) + side * self.buy_add
        self.side, self.size, self.entry_bar, self.entry = side, units, f, px
        self.entry_comm = units * px * self.comm
        self.stop = None if self.sl is None else px * (1 - side * self.sl / 100)
        self.target = None if self.tp is None else px * (1 + side * self.tp / 100)
        self.log.opened(f, side, units, px)

    def close(self, g: int, raw: float, reason: int) -> None:
        side, size, entry = self.side, self.size, self.entry
        px = raw - side * self.buy_add
        comm = self.entry_comm + size * px * self.comm
        pnl = side * size * (px - entry) - comm
        ret = side * (px / entry - 1) - comm / (size * entry)
        self.trades.append((self.entry_bar, g, side, size, entry, px, pnl, ret, comm, reason))
        self.pnls.append(pnl)
        self.realized += pnl
        self.side = 0
        self.log.closed(g, side, size, px, reason, pnl)

    def check_exit(self, s: int) -> bool:
        """Stop/target check of the open position on bar ``s``; closes it and returns True on a hit."""
        o, stop, target = float(self.o[s]), self.stop, self.target
        if self.side > 0:
            if stop is not None and o <= stop:
                self.close(s, o, STOP)
            elif target is not None and o >= target:
                self.close(s, o, TARGET)
            elif stop is not None and self.l[s] <= stop:
                self.close(s, stop, STOP)
            elif target is not None and self.h[s] >= target:
                self.close(s, target, TARGET)
            else:
                return False
            return True
        if stop is not None and o >= stop:
            self.close(s, o, STOP)
        elif target is not None and o <= target:
            self.close(s, o, TARGET)
        elif stop is not None and self.h[s] >= stop:
            self.close(s, stop, STOP)
        elif target is not None and self.l[s] <= target:
            self.close(s, target, TARGET)
        else:
            return False
        return True

    def open_trade(self) -> OpenTrade | None:
        if not self.side:
            return None
        return OpenTrade(self.entry_bar, self.side, self.size, self.entry, self.entry_comm,
                         self.stop, self.target)

    def trade_arrays(self) -> dict[str, np.ndarray]:
        cols = list(zip(*self.trades)) if self.trades else [()] * 10
        names = ("entry_bar", "exit_bar", "side", "size", "entry_price", "exit_price", "pnl",
                 "return_pct", "commission", "exit_reason")
        kinds = (np.int64, np.int64, np.int8, float, float, float, float, float, float, np.int8)
        return {k: np.asarray(v, dtype=t) for k, v, t in zip(names, cols, kinds)}


def simulate_strategy(bars: Bars, strategy: Strategy, config: BacktestConfig, *,
                      allow_entry: np.ndarray | None = None, sizer: Sizer | None = None,
                      progress: ProgressFn | None = None, logger: logging.Logger | None = None,
                      path: str = "auto") -> SimResult:
    """Run ``strategy`` over ``bars`` with ``config``'s balance, size and costs.

    Calls ``strategy.init(bars)``, then uses its ``signals`` fast path when it has one, else its
    per-bar ``next``. ``allow_entry`` (bool per bar) blocks entries decided on bars where it is
    False (a close or the closing half of a reversal still happens); ``sizer(i, side, close[i],
    stop or None, equity[i], closed_pnls) -> units`` sizes each entry (0 skips it). ``progress``
    gets :class:`Progress` reports (throttled, first at 0 bars and last at the end); a
    :class:`~engine.progress.Cancelled` it raises propagates. ``path`` forces ``"vectorised"``,
    ``"events"`` or ``"per_bar"`` (tests and benchmarks); ``"auto"`` picks the fastest that applies.
    """
    if path not in ("auto", "vectorised", "events", "per_bar"):
        raise ValueError(f"`path` must be one of ['auto', 'vectorised', 'events', 'per_bar'], got {path!r}")
    n = len(bars)
    if allow_entry is not None and np.shape(allow_entry) != (n,):
        raise ValueError(f"`allow_entry` must be a bool array of {n} bars, got shape {np.shape(allow_entry)}")
    _warn_odd_data(bars, logger)
    reporter = _Reporter(bars, config.initial_balance, progress)
    reporter.report(0, 0, 0.0)
    strategy.init(bars)
    signals = None if path == "per_bar" else strategy.signals(bars)
    if signals is None:
        strategy.prepare_next()
        if path in ("vectorised", "events"):
            raise ValueError(f"`path` {path!r} needs a strategy with signals(); {strategy.name!r} has none")
        result = _run_per_bar(bars, strategy, config, allow_entry, sizer, reporter, logger)
    else:
        result = _run_signals(bars, signals.target, strategy, config, allow_entry, sizer, reporter, logger, path)
    reporter.finish(result)
    return result


def _run_signals(bars: Bars, raw: np.ndarray, strategy: Strategy, config: BacktestConfig,
                 allow_entry: np.ndarray | None, sizer: Sizer | None, reporter: _Reporter,
                 logger: logging.Logger | None, path: str) -> SimResult:
    n = len(bars)
    target = np.asarray(raw, dtype=np.float64)
    if target.shape != (n,):
        raise ValueError(f"strategy {strategy.name!r} returned {target.shape} targets for {n} bars")
    hooks = allow_entry is not None or sizer is not None
    if path == "vectorised" and hooks:
        raise ValueError("`path` 'vectorised' cannot apply allow_entry or sizer; use 'events'")
    if path in ("auto", "vectorised") and not hooks:
        result = run_vectorised(bars, target, config, strategy.warmup, logger,
                                 strategy.stop_loss_pct, strategy.take_profit_pct)
        if result is not None:
            return result
    # hooks, a forced event loop, or a possible re-entry after a stop
    return _run_events(bars, target, strategy, config, allow_entry, sizer, reporter, logger)


class _Reporter:
    """Throttled progress reports in the spec's terms."""

    def __init__(self, bars: Bars, balance: float, progress: ProgressFn | None) -> None:
        self.fn = progress
        self.time = bars.time
        self.n = len(bars)
        self.balance = balance
        self.throttle = Throttle(0.1)

    def report(self, done: int, trades: int, pnl: float, final: bool = False) -> None:
        if self.fn is None or not self.throttle.ready(final=final):
            return
        date = ns_to_date(int(self.time[min(max(done - 1, 0), self.n - 1)])) if self.n else ""
        self.fn(Progress(bars_processed=done, total_bars=self.n, current_date=date,
                         trades_count=trades, current_pnl=round(pnl, 2)))

    def finish(self, result: SimResult) -> None:
        if self.fn is None:
            return
        # A vectorised run takes well under a second even on 1M bars: 0 % and 100 % suffice.
        pnl = float(result.equity[-1]) - self.balance if self.n else 0.0
        self.report(self.n, result.n_trades, pnl, final=True)


def _warn_odd_data(bars: Bars, logger: logging.Logger | None) -> None:
    if logger is None or len(bars) == 0:
        if logger is not None:
            logger.warning("No bars to backtest for %s", bars.label)
        return
    prices = (bars.open, bars.high, bars.low, bars.close)
    bad = int(sum(np.count_nonzero(~np.isfinite(p)) for p in prices))
    inverted = int(np.count_nonzero(bars.high < bars.low))
    outside = int(np.count_nonzero((bars.close > bars.high) | (bars.close < bars.low)
                                   | (bars.open > bars.high) | (bars.open < bars.low)))
    if bad:
        logger.warning("%s: %d non-finite prices in the data", bars.label, bad)
    if inverted:
        logger.warning("%s: %d bars with high < low", bars.label, inverted)
    if outside:
        logger.warning("%s: %d bars with open/close outside high..low", bars.label, outside)


def _next_change(vals: np.ndarray) -> np.ndarray:
    """For each event k, the index of the next event whose value differs from ``vals[k]``."""
    m = vals.size
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(vals[1:] != vals[:-1]) + 1
    run_end = np.append(starts, m)
    run_id = np.zeros(m, dtype=np.int64)
    run_id[starts] = 1
    return run_end[np.cumsum(run_id)]


def _natural_hits(bars: Bars, ev: np.ndarray, vals: np.ndarray, nxt: np.ndarray, book: _Book) -> list[int]:
    """Per event: the stop/target hit bar (-1: none) of a trade entered there when the event
    starts a run of equal non-flat decisions; -2 for every other event."""
    n, m = len(bars), ev.size
    out = np.full(m, -2, dtype=np.int64)
    first = np.ones(m, dtype=bool)
    first[1:] = vals[1:] != vals[:-1]
    k = np.flatnonzero(first & (vals != 0))
    if k.size:
        side = vals[k]
        entry_bar = ev[k] + 1
        end = np.where(nxt[k] < m, ev[np.minimum(nxt[k], m - 1)] + 1, n)
        px = bars.open[entry_bar] + side * book.buy_add
        nan = np.full(k.size, np.nan)
        stop = nan if book.sl is None else px * (1 - side * book.sl / 100)
        target = nan if book.tp is None else px * (1 + side * book.tp / 100)
        out[k] = first_hits(bars, entry_bar, end, side, stop, target)
    return out.tolist()


def _first_exit(bars: Bars, book: _Book, lo: int, hi: int) -> int:
    """First bar in ``[lo, hi)`` where the open position's stop or target is touched, or -1."""
    stop, target = book.stop, book.target
    hit = np.zeros(hi - lo, dtype=bool)
    if book.side > 0:
        if stop is not None:
            hit |= bars.low[lo:hi] <= stop
        if target is not None:
            hit |= bars.high[lo:hi] >= target
    else:
        if stop is not None:
            hit |= bars.high[lo:hi] >= stop
        if target is not None:
            hit |= bars.low[lo:hi] <= target
    j = int(hit.argmax()) if hit.size else 0
    return lo + j if hit.size and hit[j] else -1


def _run_events(bars: Bars, target: np.ndarray, strategy: Strategy, config: BacktestConfig,
                allow_entry: np.ndarray | None, sizer: Sizer | None, reporter: _Reporter,
                logger: logging.Logger | None) -> SimResult:
    n = len(bars)
    book = _Book(bars, config, strategy, allow_entry, sizer, logger)
    ev_arr = np.flatnonzero(~np.isnan(target[: max(n - 1, 0)]))
    vals_arr = np.sign(target[ev_arr])
    nxt_arr = _next_change(vals_arr)
    ev, vals, nxt = ev_arr.tolist(), vals_arr.astype(np.int64).tolist(), nxt_arr.tolist()
    stops = book.sl is not None or book.tp is not None
    # Stop/target hits of every trade entered where a run of equal decisions starts, found in one
    # vectorised pass; only re-entries inside a run (after a stop or a blocked entry) search alone.
    natural = _natural_hits(bars, ev_arr, vals_arr, nxt_arr, book) if stops else []
    k, m, count = 0, len(ev), 0
    while k < m:
        i, want = ev[k], vals[k]
        count += 1
        if not count & 255:
            reporter.report(i, len(book.trades), book.realized)
        if want == book.side:
            k = nxt[k]
            continue
        book.decide(i, want)
        if not book.side:
            k += 1  # blocked, skipped or closed: the next decision may act
            continue
        k2 = nxt[k]  # first later decision that would change this position
        if stops:
            s = natural[k]
            if s == -2:
                s = _first_exit(bars, book, i + 1, ev[k2] + 1 if k2 < m else n)
            if s >= 0:
                book.check_exit(s)
                k = bisect_left(ev, s)
                continue
        k = k2
    return _book_result(bars, book, config, strategy.warmup, "events")


def _book_result(bars: Bars, book: _Book, config: BacktestConfig, warmup: int, path: str) -> SimResult:
    book.log.finish()
    arrays = book.trade_arrays()
    open_trade = book.open_trade()
    equity = equity_curve(bars.close, arrays, open_trade, config.initial_balance, config.costs.commission)
    return SimResult(**arrays, open_trade=open_trade, equity=equity, initial_balance=config.initial_balance,
                     warmup=warmup, path=path, blocked_entries=book.blocked, skipped_entries=book.skipped)


def _run_per_bar(bars: Bars, strategy: Strategy, config: BacktestConfig, allow_entry: np.ndarray | None,
                 sizer: Sizer | None, reporter: _Reporter, logger: logging.Logger | None) -> SimResult:
    n = len(bars)
    stops = strategy.stop_loss_pct is not None or strategy.take_profit_pct is not None
    book = _Book(bars, config, strategy, allow_entry, sizer, logger, lists=stops)
    decide, check_exit, nxt = book.decide, book.check_exit, strategy.next
    last = n - 1
    start = max(0, int(strategy.warmup))
    for lo in range(start, n, CHUNK):
        reporter.report(lo, len(book.trades), book.realized)
        hi = min(lo + CHUNK, n)
        side = book.side
        # The tight loop: plain ints and floats; the book is touched only on decisions and hits.
        if stops:
            for i in range(lo, hi):
                if side:
                    if check_exit(i):
                        side = 0
                want = nxt(i, side)
                if want is not None and want != side and i < last:
                    decide(i, want)
                    side = book.side
        else:
            for i in range(lo, hi):
                want = nxt(i, side)
                if want is not None and want != side and i < last:
                    decide(i, want)
                    side = book.side
    return _book_result(bars, book, config, strategy.warmup, "per_bar")
