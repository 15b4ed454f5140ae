"""Example user strategies for QuantMindX: copy this file and edit it.

Run one with::

    qmx backtest --symbol SYNTH --strategy scripts/examples_strategy.py:UserSmaCross --param fast=10 --param slow=30

A strategy declares its parameters, computes indicators once in ``init`` (vectorised numpy) and
decides per bar in ``next(i, position)``: return 1 (be long), -1 (be short), 0 (be flat) or None
(keep the position). The decision fills at the next bar's open. Converting arrays to lists with
``.tolist()`` in ``init`` makes the per-bar loop several times faster than indexing numpy arrays.
"""
from __future__ import annotations

from typing import Any, Mapping

from engine.bars import Bars
from engine.indicators import rsi, sma
from engine.strategy import RISK_PARAMS, Param, Strategy


class UserSmaCross(Strategy):
    """SMA crossover written as a plain per-bar strategy (the same trades as built-in sma_cross
    in reversal mode): long after the fast SMA crosses above the slow one, short after it crosses
    below."""

    name = "user_sma_cross"
    params = (
        Param("fast", 10, int, "fast SMA period", min=1),
        Param("slow", 20, int, "slow SMA period", min=2),
        *RISK_PARAMS,  # stop_loss_pct / take_profit_pct, handled by the simulator
    )

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> dict[str, str]:
        if values["fast"] >= values["slow"]:
            return {"params.fast": f"must be < slow ({values['slow']}), got {values['fast']}"}
        return {}

    def init(self, bars: Bars) -> None:
        self.warmup = self.slow  # next() is first called on this bar
        self.f = sma(bars.close, self.fast).tolist()
        self.s = sma(bars.close, self.slow).tolist()

    def next(self, i: int, position: int) -> int | None:
        f, s = self.f, self.s
        if f[i - 1] < s[i - 1] and f[i] > s[i]:
            return 1
        if f[i - 1] > s[i - 1] and f[i] < s[i]:
            return -1
        return None


class TrendRsiPullback(Strategy):
    """Buys RSI dips while the close is above a long SMA; exits when RSI recovers. Long only."""

    name = "trend_rsi_pullback"
    regime_style = "trend"  # tells the spiced variant which regimes are hostile
    params = (
        Param("trend", 200, int, "trend SMA period", min=2),
        Param("rsi_period", 14, int, "RSI period", min=2),
        Param("dip", 35.0, float, "buy when RSI falls below this", min=0, max=100),
        Param("recover", 55.0, float, "sell when RSI rises above this", min=0, max=100),
        *RISK_PARAMS,
    )

    def init(self, bars: Bars) -> None:
        self.warmup = self.trend
        self.close = bars.close.tolist()
        self.ma = sma(bars.close, self.trend).tolist()
        self.r = rsi(bars.close, self.rsi_period).tolist()

    def next(self, i: int, position: int) -> int | None:
        if position == 0 and self.close[i] > self.ma[i] and self.r[i] < self.dip:
            return 1
        if position > 0 and self.r[i] > self.recover:
            return 0
        return None
