"""Trade records, the equity curve and trade logging shared by every simulator path."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from engine.bars import Bars
from engine.config import LOT_SIZE, BacktestConfig

#: exit_reason codes of :attr:`SimResult.exit_reason`
EXIT_REASONS: tuple[str, ...] = ("signal", "stop_loss", "take_profit")
SIGNAL, STOP, TARGET = 0, 1, 2
#: trades logged per run before a single summary line (a 1M-bar run must not flood the log)
LOG_TRADE_CAP = 500

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


class TradeLog:
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

    def finish(self) -> None:
        if self.logger is not None and self.count > LOG_TRADE_CAP:
            self.logger.info("%d further trades not logged (log cap %d per run)",
                             self.count - LOG_TRADE_CAP, LOG_TRADE_CAP)


def log_arrays(logger: logging.Logger | None, config: BacktestConfig, bars: Bars,
                arrays: dict[str, np.ndarray], open_trade: OpenTrade | None) -> None:
    log = TradeLog(logger, config, bars)
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
