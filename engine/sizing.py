"""Risk-based position sizing for the spiced variant: fixed fractional on the stop, scaled by capped Kelly.

For an entry decided on bar ``i`` at reference price ``P`` with equity ``E``:

1. **Stop distance** ``D = |P - stop|`` for the strategy's stop; a strategy without a stop gets a
   virtual stop ``D = atr_stop_mult * ATR[i]`` (ATR as in :mod:`engine.regime`; over the first bars,
   before ``atr_period`` bars exist, the mean true range of the bars so far).
2. **Fixed fractional**: ``units = E * risk_per_trade / D``, so hitting the stop loses
   ``risk_per_trade`` of equity.
3. **Capped Kelly** from the closed trades so far, once there are at least ``kelly_min_trades``:
   win rate ``W`` (share of trades with PnL > 0), win/loss ratio ``R = mean(win) / mean(|loss|)``,
   ``f = W - (1 - W) / R`` (``f = W`` when there are no losses). The multiplier is
   ``m = max(kelly_floor, min(max(f, 0), kelly_cap) / kelly_cap)``: full size at or above
   ``kelly_cap``, proportionally less below, never below ``kelly_floor``. Before
   ``kelly_min_trades`` closed trades ``m = 1``. ``units *= m``.
4. **Leverage cap**: ``units <= max_leverage * E / P``.
5. Units are rounded down to a multiple of ``size_step``; 0 units skips the entry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.regime import true_range


@dataclass(frozen=True)
class SizingParams:
    """Sizing options (see the module docstring for the formulas)."""

    risk_per_trade: float = 0.01
    kelly_cap: float = 0.25
    kelly_min_trades: int = 20
    kelly_floor: float = 0.2
    atr_period: int = 14
    atr_stop_mult: float = 2.0
    max_leverage: float = 10.0
    size_step: float = 1.0


@dataclass(frozen=True)
class SizeDecision:
    """How one entry was sized; ``units == 0`` means skipped, with ``reason`` saying why."""

    units: float
    stop_distance: float
    virtual_stop: bool
    kelly_f: float | None
    multiplier: float
    leverage_capped: bool
    reason: str = ""


def fixed_fractional_units(equity: float, risk_fraction: float, ref_price: float,
                           stop_price: float) -> float:
    """Units whose loss at ``stop_price`` is ``risk_fraction`` of ``equity`` (0 if the stop is at the price)."""
    distance = abs(ref_price - stop_price)
    return 0.0 if distance <= 0 else equity * risk_fraction / distance


def kelly_fraction(wins: int, losses: int, n: int, win_sum: float, loss_sum: float) -> float:
    """Kelly ``f = W - (1 - W) / R`` from trade stats; ``loss_sum`` is the sum of |losing PnL|.

    ``n`` counts every closed trade (break-even ones too). No wins returns ``-1.0`` (no edge at
    all); no losses returns ``f = W`` (the ratio is unbounded).
    """
    if n <= 0:
        raise ValueError(f"`n` must be >= 1 closed trade, got {n!r}")
    w = wins / n
    if wins == 0:
        return -1.0
    if losses == 0 or loss_sum <= 0:
        return w
    ratio = (win_sum / wins) / (loss_sum / losses)
    return w - (1.0 - w) / ratio


def kelly_multiplier(f: float | None, cap: float, floor: float) -> float:
    """Scale factor for the fixed-fractional size: ``max(floor, clip(f, 0, cap) / cap)``; 1 when ``f`` is None."""
    if f is None:
        return 1.0
    return max(floor, min(max(f, 0.0), cap) / cap)


class KellyStats:
    """Running win/loss stats over an append-only list of closed-trade PnLs (incremental, O(new))."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every trade seen."""
        self.seen = self.wins = self.losses = 0
        self.win_sum = self.loss_sum = 0.0

    def update(self, closed_pnls: Sequence[float]) -> None:
        """Fold in PnLs appended since the last call (a shorter list means a new run: start over)."""
        if len(closed_pnls) < self.seen:
            self.reset()
        for pnl in closed_pnls[self.seen:]:
            if pnl > 0:
                self.wins += 1
                self.win_sum += float(pnl)
            elif pnl < 0:
                self.losses += 1
                self.loss_sum -= float(pnl)
        self.seen = len(closed_pnls)

    def fraction(self, min_trades: int) -> float | None:
        """Kelly fraction once ``min_trades`` trades have closed, else None."""
        if self.seen < max(1, min_trades):
            return None
        return kelly_fraction(self.wins, self.losses, self.seen, self.win_sum, self.loss_sum)


def sizing_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """ATR for virtual stops: the ``period``-bar mean true range, the mean so far before that."""
    tr = true_range(np.asarray(high, float), np.asarray(low, float), np.asarray(close, float))
    cs = np.cumsum(tr)
    out = cs / np.arange(1, tr.shape[0] + 1)
    if tr.shape[0] > period:
        out[period:] = (cs[period:] - cs[:-period]) / period
    return out


def size_entry(p: SizingParams, *, equity: float, ref_price: float, stop_price: float | None,
               atr_value: float, kelly_f: float | None) -> SizeDecision:
    """Units for one entry by the module's formulas; ``units == 0`` with a reason when it must skip."""
    virtual = stop_price is None
    distance = p.atr_stop_mult * atr_value if virtual else abs(ref_price - float(stop_price))  # type: ignore[arg-type]
    mult = kelly_multiplier(kelly_f, p.kelly_cap, p.kelly_floor)

    def skip(reason: str) -> SizeDecision:
        return SizeDecision(0.0, distance, virtual, kelly_f, mult, False, reason)

    if not (equity > 0 and math.isfinite(equity)):
        return skip(f"equity {equity:.2f} is not positive")
    if not (ref_price > 0 and math.isfinite(ref_price)):
        return skip(f"reference price {ref_price!r} is not positive")
    if not (distance > 0 and math.isfinite(distance)):
        return skip("stop distance is zero" if distance == 0 else f"stop distance {distance!r} undefined")
    if mult <= 0:
        return skip(f"kelly fraction {kelly_f:.3f} shows no edge")
    units = equity * p.risk_per_trade / distance * mult
    cap = p.max_leverage * equity / ref_price
    capped = units > cap
    units = min(units, cap)
    units = math.floor(units / p.size_step + 1e-9) * p.size_step
    if units <= 0:
        return SizeDecision(0.0, distance, virtual, kelly_f, mult, capped,
                            f"size rounds to 0 at size_step {p.size_step:g}")
    return SizeDecision(units, distance, virtual, kelly_f, mult, capped)
