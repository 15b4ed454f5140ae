"""Risk-based sizing formulas (engine/sizing.py) checked against hand-computed numbers."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.sizing import (KellyStats, SizingParams, fixed_fractional_units, kelly_fraction,
                           kelly_multiplier, size_entry, sizing_atr)


def test_fixed_fractional_risks_the_fraction_at_the_stop() -> None:
    # 1% of 10,000 = 100 at risk over a 0.0050 stop: 20,000 units.
    assert fixed_fractional_units(10_000, 0.01, 1.1000, 1.0950) == pytest.approx(20_000)
    assert fixed_fractional_units(10_000, 0.01, 1.0950, 1.1000) == pytest.approx(20_000)  # short
    assert fixed_fractional_units(10_000, 0.01, 1.1, 1.1) == 0.0


def test_kelly_fraction_hand_numbers() -> None:
    # 12 wins of 20 averaging 150, 8 losses averaging 100: W = 0.6, R = 1.5, f = 0.6 - 0.4/1.5.
    assert kelly_fraction(12, 8, 20, 12 * 150.0, 8 * 100.0) == pytest.approx(0.6 - 0.4 / 1.5)
    # W = 0.5, R = 1.2: f = 0.5 - 0.5/1.2 = 0.083333
    assert kelly_fraction(10, 10, 20, 1200.0, 1000.0) == pytest.approx(1 / 12)
    # A losing edge is negative; no wins at all is -1; no losses is W.
    assert kelly_fraction(5, 15, 20, 500.0, 1500.0) == pytest.approx(0.25 - 0.75 / 1.0)  # R = 1
    assert kelly_fraction(0, 20, 20, 0.0, 200.0) == -1.0
    assert kelly_fraction(18, 0, 20, 90.0, 0.0) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="`n`"):
        kelly_fraction(0, 0, 0, 0.0, 0.0)


def test_kelly_multiplier_is_capped_scaled_and_floored() -> None:
    assert kelly_multiplier(None, 0.25, 0.2) == 1.0
    assert kelly_multiplier(0.4, 0.25, 0.2) == 1.0            # above the cap: full size
    assert kelly_multiplier(1 / 12, 0.25, 0.0) == pytest.approx(1 / 3)
    assert kelly_multiplier(-0.3, 0.25, 0.0) == 0.0           # never negative
    assert kelly_multiplier(-0.3, 0.25, 0.2) == 0.2           # the floor keeps it trading


def test_kelly_stats_are_incremental_and_restart_on_a_new_run() -> None:
    stats = KellyStats()
    pnls: list[float] = [150.0, -100.0, 0.0]
    stats.update(pnls)
    assert stats.fraction(5) is None
    pnls += [150.0, -100.0]
    stats.update(pnls)
    # 2 wins of 5 (break-even counts in n), R = 1.5: f = 0.4 - 0.6/1.5 = 0.0
    assert stats.fraction(5) == pytest.approx(0.0)
    stats.update([50.0])
    assert (stats.seen, stats.wins, stats.losses) == (1, 1, 0)


def test_size_entry_fixed_fractional_then_kelly_then_step() -> None:
    p = SizingParams(kelly_floor=0.0)
    d = size_entry(p, equity=10_000, ref_price=1.1, stop_price=1.095, atr_value=0.001, kelly_f=None)
    assert (d.units, d.virtual_stop, d.multiplier) == (20_000, False, 1.0)
    d = size_entry(p, equity=10_000, ref_price=1.1, stop_price=1.095, atr_value=0.001, kelly_f=1 / 12)
    assert d.units == 6_666  # 20,000 * (1/12)/0.25, rounded down to whole units
    coarse = SizingParams(size_step=1000.0)
    d = size_entry(coarse, equity=10_000, ref_price=1.1, stop_price=1.095, atr_value=0.001, kelly_f=None)
    assert d.units == 20_000


def test_size_entry_virtual_stop_uses_atr_multiple() -> None:
    p = SizingParams(atr_stop_mult=2.0)
    d = size_entry(p, equity=10_000, ref_price=1.1, stop_price=None, atr_value=0.002, kelly_f=None)
    assert d.virtual_stop and d.stop_distance == pytest.approx(0.004)
    assert d.units == 25_000  # 100 / 0.004


def test_size_entry_leverage_cap() -> None:
    # 100 at risk over a 0.01 stop would be 10,000 units (1,000,000 notional); 10x of 10,000 caps
    # the notional at 100,000 = 1,000 units at 100.
    d = size_entry(SizingParams(), equity=10_000, ref_price=100.0, stop_price=99.99,
                   atr_value=1.0, kelly_f=None)
    assert d.units == 1_000 and d.leverage_capped


@pytest.mark.parametrize("kwargs, reason", [
    ({"equity": -5.0}, "equity"),
    ({"stop_price": 1.1}, "stop distance is zero"),
    ({"kelly_f": -0.2}, "no edge"),
    ({"equity": 0.1}, "rounds to 0"),  # 0.2 units
])
def test_size_entry_skips_with_a_reason(kwargs: dict, reason: str) -> None:
    args = {"equity": 10_000.0, "ref_price": 1.1, "stop_price": 1.095, "atr_value": 0.001,
            "kelly_f": None, **kwargs}
    d = size_entry(SizingParams(kelly_floor=0.0), **args)
    assert d.units == 0 and reason in d.reason


def test_sizing_atr_expands_then_rolls() -> None:
    high = np.array([2.0, 3.0, 3.0, 5.0])
    low = np.array([1.0, 1.0, 2.0, 4.0])
    close = np.array([1.5, 2.5, 2.5, 4.5])
    # true ranges: 1, 2, 1, max(1, 2.5, 1.5) = 2.5
    assert np.allclose(sizing_atr(high, low, close, 2), [1.0, 1.5, 1.5, 1.75])


@settings(max_examples=200, deadline=None)
@given(equity=st.floats(1.0, 1e9), price=st.floats(0.01, 1e5), stop_frac=st.floats(0.0001, 0.5),
       risk=st.floats(0.0001, 0.1), lev=st.floats(0.1, 100.0), f=st.one_of(st.none(), st.floats(-1, 1)))
def test_size_is_never_negative_never_over_risk_or_leverage(equity: float, price: float, stop_frac: float,
                                                             risk: float, lev: float, f: float | None) -> None:
    p = SizingParams(risk_per_trade=risk, max_leverage=lev, kelly_floor=0.0, size_step=1e-6)
    d = size_entry(p, equity=equity, ref_price=price, stop_price=price * (1 - stop_frac),
                   atr_value=1.0, kelly_f=f)
    assert d.units >= 0
    assert d.units * price <= lev * equity * (1 + 1e-9)
    assert d.units * price * stop_frac <= risk * equity * (1 + 1e-9)  # loss at the stop
