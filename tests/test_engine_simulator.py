"""Fill conventions on tiny hand-made bars, hooks for the spiced layer, progress and logging."""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from engine.bars import Bars
from engine.config import Costs
from engine.progress import Cancelled, Progress
from engine.simulator import LOG_TRADE_CAP, simulate_strategy
from engine.strategy import RISK_PARAMS, Signals, Strategy
from tests.test_engine_helpers import config, make_bars, random_bars

PATHS = ("vectorised", "events", "per_bar")
HOOK_PATHS = ("events", "per_bar")


class Scripted(Strategy):
    """Targets given per bar (NaN = keep); both the fast path and per-bar next."""

    name = "scripted"
    params = RISK_PARAMS

    def __init__(self, targets: Sequence[float], **kw: Any) -> None:
        super().__init__(**kw)
        self.targets = np.asarray(targets, dtype=np.float64)

    def signals(self, bars: Bars) -> Signals:
        return Signals(self.targets.copy())

    def next(self, i: int, position: int) -> int | None:
        t = self.targets[i]
        return None if math.isnan(t) else int(t)


def run(bars: Bars, targets: Sequence[float], path: str = "auto", **kw: Any) -> Any:
    cfg_kw = {k: kw.pop(k) for k in ("costs", "size", "size_unit", "initial_balance") if k in kw}
    hooks = {k: kw.pop(k) for k in ("allow_entry", "sizer", "progress", "logger") if k in kw}
    return simulate_strategy(bars, Scripted(targets, **kw), config(**cfg_kw), path=path, **hooks)


N = float("nan")


@pytest.mark.parametrize("path", PATHS)
def test_decision_fills_at_next_open_and_equity_marks_to_close(path: str) -> None:
    bars = make_bars([1.0, 1.1, 1.2, 1.3, 1.4], close=[1.05, 1.15, 1.25, 1.35, 1.45])
    r = run(bars, [1, N, 0, N, N], path, size=10)
    assert r.entry_bar.tolist() == [1] and r.exit_bar.tolist() == [3]
    assert r.entry_price.tolist() == [1.1] and r.exit_price.tolist() == [1.3]
    assert r.pnl[0] == pytest.approx(10 * 0.2)
    assert r.return_pct[0] == pytest.approx(1.3 / 1.1 - 1)
    assert r.equity.tolist() == pytest.approx([1e6, 1e6 + 10 * 0.05, 1e6 + 10 * 0.15, 1e6 + 2, 1e6 + 2])
    assert r.open_trade is None


@pytest.mark.parametrize("path", PATHS)
def test_decision_on_last_bar_never_fills(path: str) -> None:
    r = run(make_bars([1.0, 1.0, 1.0]), [N, N, 1], path)
    assert r.n_trades == 0 and r.open_trade is None


@pytest.mark.parametrize("path", PATHS)
def test_costs_arithmetic(path: str) -> None:
    bars = make_bars([1.0, 1.2, 1.5, 1.4])
    costs = Costs(spread=0.02, commission=0.001, slippage=0.005)
    r = run(bars, [-1, 1, N, N], path, size=100, costs=costs)
    # short: sell at 1.2 - 0.01 - 0.005, buy back at 1.5 + 0.015; then long from 1.515
    assert r.entry_price[0] == pytest.approx(1.185) and r.exit_price[0] == pytest.approx(1.515)
    comm = 100 * 0.001 * (1.185 + 1.515)
    assert r.commission[0] == pytest.approx(comm)
    assert r.pnl[0] == pytest.approx(-100 * (1.515 - 1.185) - comm)
    assert r.return_pct[0] == pytest.approx(-(1.515 / 1.185 - 1) - comm / (100 * 1.185))
    assert r.open_trade is not None and r.open_trade.entry_price == pytest.approx(1.515)
    # equity on the last bar: realised short PnL + open long marked at close minus its entry commission
    entry_comm = 100 * 1.515 * 0.001
    assert r.equity[-1] == pytest.approx(1e6 + r.pnl[0] + 100 * (1.4 - 1.515) - entry_comm)


@pytest.mark.parametrize("path", PATHS)
def test_stop_loss_on_low_from_entry_bar(path: str) -> None:
    # long fills at 100 on bar 1; bar 1's low touches the 2 % stop at 98
    bars = make_bars([100, 100, 99, 99], high=[100, 101, 99, 99], low=[100, 97.5, 99, 99])
    r = run(bars, [1, N, N, N], path, stop_loss_pct=2.0, size=1)
    assert r.exit_bar.tolist() == [1] and r.exit_price[0] == pytest.approx(98.0)
    assert r.exit_reason.tolist() == [1]


@pytest.mark.parametrize("path", PATHS)
def test_take_profit_on_high_and_short_levels(path: str) -> None:
    bars = make_bars([100, 100, 100, 96], high=[100, 100.5, 100, 96], low=[100, 99, 94.9, 96])
    r = run(bars, [-1, N, N, N], path, stop_loss_pct=1.0, take_profit_pct=5.0, size=1)
    assert r.exit_bar.tolist() == [2] and r.exit_price[0] == pytest.approx(95.0)
    assert r.exit_reason.tolist() == [2] and r.side.tolist() == [-1]


@pytest.mark.parametrize("path", PATHS)
def test_stop_wins_when_both_levels_hit_in_one_bar(path: str) -> None:
    bars = make_bars([100, 100, 100], high=[100, 100, 110], low=[100, 100, 90])
    r = run(bars, [1, N, N], path, stop_loss_pct=5.0, take_profit_pct=5.0, size=1)
    assert r.exit_reason.tolist() == [1] and r.exit_price[0] == pytest.approx(95.0)


@pytest.mark.parametrize("path", PATHS)
def test_gap_through_a_level_fills_at_the_open(path: str) -> None:
    bars = make_bars([100, 100, 90, 120], high=[100, 100, 91, 121], low=[100, 100, 89, 119])
    r = run(bars, [1, N, N, N], path, stop_loss_pct=5.0, size=1)
    assert r.exit_bar.tolist() == [2] and r.exit_price[0] == pytest.approx(90.0)
    bars = make_bars([100, 100, 120], high=[100, 100, 121], low=[100, 100, 119])
    r = run(bars, [1, N, N], path, take_profit_pct=5.0, size=1)
    assert r.exit_price[0] == pytest.approx(120.0) and r.exit_reason.tolist() == [2]


@pytest.mark.parametrize("path", PATHS)
def test_after_a_stop_flat_until_a_new_decision(path: str) -> None:
    bars = make_bars([100, 100, 100, 100, 100, 100], low=[100, 90, 100, 100, 100, 100])
    r = run(bars, [1, N, N, 1, N, N], path, stop_loss_pct=5.0, size=1)
    assert r.entry_bar.tolist() == [1] and r.exit_bar.tolist() == [1]
    assert r.open_trade is not None and r.open_trade.entry_bar == 4
    assert r.path == ("per_bar" if path == "per_bar" else "events")  # a re-entry needs the event loop


def test_lots_convert_at_100000_units() -> None:
    r = run(make_bars([1.0, 1.0, 1.1]), [1, N, N], size=0.1, size_unit="lots")
    assert r.open_trade is not None and r.open_trade.size == 10_000


@pytest.mark.parametrize("path", HOOK_PATHS)
def test_allow_entry_blocks_entries_but_not_the_close(path: str) -> None:
    bars = make_bars([1.0] * 6)
    allow = np.array([True, True, False, True, True, True])
    r = run(bars, [1, N, -1, N, 1, N], path, allow_entry=allow)
    assert r.entry_bar.tolist() == [1] and r.exit_bar.tolist() == [3]  # reversal closed, short blocked
    assert r.blocked_entries == [(2, -1)]
    assert r.open_trade is not None and r.open_trade.entry_bar == 5


@pytest.mark.parametrize("path", HOOK_PATHS)
def test_sizer_gets_decision_context_and_zero_skips(path: str) -> None:
    bars = make_bars([1.0, 1.0, 1.2, 1.2, 1.2], close=[1.0, 1.1, 1.2, 1.2, 1.2])
    calls: list[tuple] = []

    def sizer(i: int, side: int, ref: float, stop: float | None, equity: float, pnls: Sequence[float]) -> float:
        calls.append((i, side, ref, stop, equity, list(pnls)))
        return 0.0 if len(calls) == 3 else 1000.0

    r = run(bars, [1, N, -1, 1, N], path, sizer=sizer, stop_loss_pct=10.0)
    assert calls[0] == (0, 1, 1.0, pytest.approx(0.9), 1e6, [])
    i, side, ref, stop, equity, pnls = calls[1]
    assert (i, side, ref) == (2, -1, 1.2) and stop == pytest.approx(1.32)
    assert equity == pytest.approx(1e6 + 1000 * 0.2)  # open long marked at close[2]
    assert pnls == []
    assert calls[2][5] == [pytest.approx(200.0)]
    assert r.skipped_entries == [(3, 1)]
    assert r.size.tolist() == [1000.0, 1000.0]


def test_progress_first_at_zero_last_at_end_and_throttled() -> None:
    bars = random_bars(200_000)
    reports: list[tuple[float, Progress]] = []
    import time

    def progress(p: Progress) -> None:
        reports.append((time.monotonic(), p))

    class Slow(Strategy):
        name = "slow"

        def next(self, i: int, position: int) -> int | None:
            time.sleep(0) if i % 64 == 0 else None  # slow enough (~0.5 s) for several reports
            return 1 if i % 1000 == 0 else (-1 if i % 1000 == 500 else None)

    simulate_strategy(bars, Slow(), config(), progress=progress)
    assert reports[0][1].bars_processed == 0
    last = reports[-1][1]
    assert last.bars_processed == last.total_bars == 200_000 and last.trades_count == 399
    assert len(reports) >= 3
    stamps = [t for t, _ in reports[:-1]]  # the final report always passes the throttle
    assert all(b - a >= 0.099 for a, b in zip(stamps, stamps[1:]))
    assert [p.bars_processed for _, p in reports] == sorted(p.bars_processed for _, p in reports)


@pytest.mark.parametrize("path", PATHS)
def test_cancelled_propagates(path: str) -> None:
    def cancel(p: Progress) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled):
        run(random_bars(1000), [1] + [N] * 999, path, progress=cancel)


def test_trade_log_lines_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    n = 2 * LOG_TRADE_CAP + 10
    targets = np.where(np.arange(4 * n) % 2 == 0, 1.0, -1.0)
    logger = logging.getLogger("backtest.test-cap")
    with caplog.at_level(logging.INFO, logger="backtest.test-cap"):
        run(random_bars(4 * n), targets, "events", logger=logger)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("Trade executed: BUY 100000 units EURUSD @ ") or \
        lines[0].startswith("Trade executed: BUY 100000 units TEST @ ")
    assert sum(m.startswith("Trade executed") for m in lines) == LOG_TRADE_CAP
    assert "further trades not logged" in lines[-1]
    assert len(lines) <= 2 * LOG_TRADE_CAP + 1


def test_odd_data_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    bars = make_bars([1.0, 1.0, 1.0], high=[1.0, 0.5, 1.0])
    with caplog.at_level(logging.WARNING, logger="backtest.odd"):
        run(bars, [N, N, N], logger=logging.getLogger("backtest.odd"))
    assert any("high < low" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="`path` must be one of"):
        run(make_bars([1.0, 1.0]), [N, N], "fastest")
    with pytest.raises(ValueError, match="`path` 'vectorised' cannot apply allow_entry or sizer"):
        run(make_bars([1.0, 1.0]), [N, N], "vectorised", allow_entry=np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="`allow_entry` must be a bool array of 2 bars"):
        run(make_bars([1.0, 1.0]), [N, N], allow_entry=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="stop_loss_pct"):
        Scripted([N], stop_loss_pct=-1.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), density=st.floats(0.02, 0.5), sl=st.one_of(st.none(), st.floats(0.05, 2.0)),
       tp=st.one_of(st.none(), st.floats(0.05, 3.0)), spread=st.sampled_from([0.0, 0.0002]),
       repeats=st.booleans())
def test_paths_agree_on_random_decisions(seed: int, density: float, sl: float | None, tp: float | None,
                                         spread: float, repeats: bool) -> None:
    """The vectorised, event-loop and per-bar simulators make identical trades from the same decisions."""
    rng = np.random.default_rng(seed)
    n = 400
    targets = np.where(rng.random(n) < density, rng.choice([-1.0, 0.0, 1.0], n), np.nan)
    if not repeats:  # only changes of side, like crosses: the vectorised path handles stops itself
        ev = np.flatnonzero(~np.isnan(targets))
        targets[ev[1:][targets[ev[1:]] == targets[ev[:-1]]]] = np.nan
    bars = random_bars(n, seed)
    costs = Costs(spread=spread, commission=0.0001)
    runs = [run(bars, targets, p, stop_loss_pct=sl, take_profit_pct=tp, costs=costs) for p in PATHS]
    if not repeats:
        assert runs[0].path == "vectorised"
    for r in runs[1:]:
        assert r.entry_bar.tolist() == runs[0].entry_bar.tolist()
        assert r.exit_bar.tolist() == runs[0].exit_bar.tolist()
        assert r.exit_reason.tolist() == runs[0].exit_reason.tolist()
        assert np.allclose(r.exit_price, runs[0].exit_price, rtol=0, atol=1e-12)
        assert np.allclose(r.equity, runs[0].equity, rtol=0, atol=1e-6)
        assert (r.open_trade is None) == (runs[0].open_trade is None)
