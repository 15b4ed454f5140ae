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

Three paths produce identical trades: ``vectorised`` (signal arrays, no stops, no hooks: pure
numpy), ``events`` (signal arrays with stops or spiced hooks: a Python loop over decisions, never
over bars) and ``per_bar`` (a user strategy's ``next``: one tight loop over bars).
"""
from __future__ import annotations

import logging
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from engine.bars import Bars, ns_to_date
from engine.config import LOT_SIZE, BacktestConfig
from engine.progress import Progress, ProgressFn, Throttle
from engine.strategy import Strategy

#: exit_reason codes of :attr:`SimResult.exit_reason`
EXIT_REASONS: tuple[str, ...] = ("signal", "stop_loss", "take_profit")
SIGNAL, STOP, TARGET = 0, 1, 2
#: trades logged per run before a single summary line (a 1M-bar run must not flood the log)
LOG_TRADE_CAP = 500
CHUNK = 16_384

Sizer = Callable[[int, int, float, "float | None", float, Sequence[float]], float]


@dataclass(frozen=True)
class OpenTrade:
    """The position still open after the last bar (not counted as a closed trade)."""

    entry_bar: int
    side: int
    size: float
    entry_price: float
    commission: float
    stop_loss: float | None
    take_profit: float | None


@dataclass(frozen=True)
class SimResult:
    """Closed trades as parallel arrays, the open trade, equity per bar and hook outcomes.

    ``return_pct`` is a fraction like backtesting.py's ``pl_pct`` (0.01 = 1 %), net of commission.
    ``blocked_entries`` lists ``(bar, side)`` entries refused by ``allow_entry``;
    ``skipped_entries`` those the sizer sized to 0.
    """

    entry_bar: np.ndarray
    exit_bar: np.ndarray
    side: np.ndarray
    size: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    pnl: np.ndarray
    return_pct: np.ndarray
    commission: np.ndarray
    exit_reason: np.ndarray
    open_trade: OpenTrade | None
    equity: np.ndarray
    initial_balance: float
    warmup: int = 0
    path: str = "vectorised"
    blocked_entries: list[tuple[int, int]] = field(default_factory=list)
    skipped_entries: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_trades(self) -> int:
        return int(self.entry_bar.shape[0])


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
        self.log = _TradeLog(logger, config, bars)
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
                self.blocked.append((i, want))
                self.log.blocked(i, want)
            else:
                units = self.units
                if self.sizer is not None:
                    units = self._sized(i, want)
                    if units <= 0:
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


class _TradeLog:
    """INFO lines for fills, capped per run, with one summary line for the rest."""

    def __init__(self, logger: logging.Logger | None, config: BacktestConfig, bars: Bars) -> None:
        self.logger = logger if logger is not None and logger.isEnabledFor(logging.INFO) else None
        self.lots = config.size_unit == "lots"
        self.symbol = bars.symbol
        self.count = 0

    def _size(self, units: float) -> str:
        return f"{units / LOT_SIZE:g} lots" if self.lots else f"{units:g} units"

    def opened(self, bar: int, side: int, units: float, px: float) -> None:
        if self.logger is None:
            return
        self.count += 1
        if self.count <= LOG_TRADE_CAP:
            verb = "BUY" if side > 0 else "SELL"
            self.logger.info("Trade executed: %s %s %s @ %.5f (bar %d)", verb, self._size(units),
                             self.symbol, px, bar)

    def closed(self, bar: int, side: int, units: float, px: float, reason: int, pnl: float) -> None:
        if self.logger is None or self.count > LOG_TRADE_CAP:
            return
        verb = "SELL" if side > 0 else "BUY"
        self.logger.info("Trade closed: %s %s %s @ %.5f (%s, bar %d), PnL %.2f", verb, self._size(units),
                         self.symbol, px, EXIT_REASONS[reason], bar, pnl)

    def blocked(self, bar: int, side: int) -> None:
        if self.logger is not None and self.count <= LOG_TRADE_CAP:
            self.logger.info("Entry filtered: %s signal on bar %d blocked", "BUY" if side > 0 else "SELL", bar)

    def finish(self) -> None:
        if self.logger is not None and self.count > LOG_TRADE_CAP:
            self.logger.info("%d further trades not logged (log cap %d per run)",
                             self.count - LOG_TRADE_CAP, LOG_TRADE_CAP)


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
        result = _run_vectorised(bars, target, config, strategy.warmup, logger,
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
        # A vectorised run has already computed everything; report it chunk by chunk anyway so a
        # long run shows movement, then the final state.
        if result.path == "vectorised":
            for stop in range(CHUNK, self.n, CHUNK * 8):
                if self.throttle.ready():
                    k = int(np.searchsorted(result.exit_bar, stop))
                    self.report(stop, k, float(result.equity[stop - 1]) - self.balance)
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


def _run_vectorised(bars: Bars, target: np.ndarray, config: BacktestConfig, warmup: int,
                    logger: logging.Logger | None, sl: float | None = None,
                    tp: float | None = None) -> SimResult | None:
    """Trades from targets with numpy only; None when a stop exit could be followed by a re-entry
    on a repeated decision (then only the event loop knows the state)."""
    n = len(bars)
    ev = np.flatnonzero(~np.isnan(target[: max(n - 1, 0)]))
    vals = np.sign(target[ev])  # a side, whatever the magnitude
    prev = np.empty_like(vals)
    if vals.size:
        prev[0] = 0.0
        prev[1:] = vals[:-1]
    keep = vals != prev
    dec, sides = ev[keep], vals[keep]
    fills = dec + 1
    # Each non-flat side is one trade from its fill to the next change's fill (or the end).
    opens = np.flatnonzero(sides != 0)
    entry_bar, side = fills[opens], sides[opens]
    span_end = np.where(opens + 1 < fills.size, fills[np.minimum(opens + 1, fills.size - 1)], n) \
        if opens.size else np.zeros(0, dtype=np.int64)
    c = config.costs
    add = c.spread / 2 + c.slippage
    entry_price = bars.open[entry_bar] + side * add
    exit_bar, reason = span_end.copy(), np.zeros(entry_bar.size, dtype=np.int8)
    raw_exit = bars.open[np.minimum(exit_bar, n - 1)]
    stop = entry_price * (1 - side * sl / 100) if sl is not None else np.full(entry_bar.size, np.nan)
    target_px = entry_price * (1 + side * tp / 100) if tp is not None else np.full(entry_bar.size, np.nan)
    if (sl is not None or tp is not None) and entry_bar.size:
        hit = _first_hits(bars, entry_bar, span_end, side, stop, target_px)
        h = np.flatnonzero(hit >= 0)
        if np.any(np.searchsorted(ev, hit[h]) < np.searchsorted(ev, span_end[h] - 1)):
            return None
        exit_bar[h] = hit[h]
        raw_exit[h], reason[h] = _level_fills(bars, hit[h], side[h], stop[h], target_px[h])
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
    _log_arrays(logger, config, bars, arrays, open_trade)
    return SimResult(**arrays, open_trade=open_trade, equity=equity,
                     initial_balance=config.initial_balance, warmup=warmup, path="vectorised")


def _first_hits(bars: Bars, entry: np.ndarray, end: np.ndarray, side: np.ndarray, stop: np.ndarray,
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


def _level_fills(bars: Bars, s: np.ndarray, side: np.ndarray, stop: np.ndarray,
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


def _log_arrays(logger: logging.Logger | None, config: BacktestConfig, bars: Bars,
                arrays: dict[str, np.ndarray], open_trade: OpenTrade | None) -> None:
    log = _TradeLog(logger, config, bars)
    if log.logger is None:
        return
    m = min(arrays["entry_bar"].size, LOG_TRADE_CAP)
    for k in range(m):
        side, size = int(arrays["side"][k]), float(arrays["size"][k])
        log.opened(int(arrays["entry_bar"][k]), side, size, float(arrays["entry_price"][k]))
        log.closed(int(arrays["exit_bar"][k]), side, size, float(arrays["exit_price"][k]),
                   int(arrays["exit_reason"][k]), float(arrays["pnl"][k]))
    log.count = arrays["entry_bar"].size + (open_trade is not None)
    if open_trade is not None and log.count <= LOG_TRADE_CAP:
        log.count -= 1
        log.opened(open_trade.entry_bar, open_trade.side, open_trade.size, open_trade.entry_price)
    log.finish()


def equity_curve(close: np.ndarray, trades: dict[str, np.ndarray], open_trade: OpenTrade | None,
                 balance: float, commission_rate: float = 0.0) -> np.ndarray:
    """Equity per bar marked to close: balance + realised PnL + the open trade's unrealised PnL.

    A trade is marked from its entry bar up to (not including) its exit bar, where its PnL is
    realised; the entry commission counts from the entry bar on.
    """
    n = close.shape[0]
    entry, exit_ = trades["entry_bar"], trades["exit_bar"]
    pos = trades["side"].astype(np.float64) * trades["size"]
    e_price = trades["entry_price"]
    e_comm = trades["size"] * e_price * commission_rate
    # The account after each closed trade, summed in order from the balance (as a broker would)
    cash = np.cumsum(np.concatenate(([balance], trades["pnl"])))
    if open_trade is not None:
        entry = np.append(entry, open_trade.entry_bar)
        exit_ = np.append(exit_, n)
        pos = np.append(pos, open_trade.side * open_trade.size)
        e_price = np.append(e_price, open_trade.entry_price)
        e_comm = np.append(e_comm, open_trade.commission)
    # Alternate flat gaps and holding spans: equity = cash + position * (close - entry price) on
    # each, built with np.repeat so flat spans hold the cash exactly.
    m = entry.size
    starts = np.empty(2 * m + 1, dtype=np.int64)
    starts[0] = 0
    starts[1::2] = entry
    starts[2::2] = exit_
    lengths = np.diff(np.append(starts, n))
    level = np.empty(2 * m + 1)
    level[0::2] = cash[: m + 1] if cash.size > m else np.append(cash, np.nan)[: m + 1]
    level[1::2] = cash[:m] - e_comm
    slope = np.zeros(2 * m + 1)
    slope[1::2] = pos
    ref = np.zeros(2 * m + 1)
    ref[1::2] = e_price
    equity = close - np.repeat(ref, lengths)
    equity *= np.repeat(slope, lengths)
    equity += np.repeat(level, lengths)
    return equity


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
        out[k] = _first_hits(bars, entry_bar, end, side, stop, target)
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
