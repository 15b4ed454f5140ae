"""QuantMindX's sma_cross and metrics against backtesting.py 0.6.6 on the same real data."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy as BtStrategy
from backtesting.lib import crossover

from engine.backtest import run_backtest
from engine.simulator import simulate_strategy
from engine.strategies import SmaCross
from tests.test_engine_helpers import bars_from_frame, config, eurusd_frame


def _pandas_sma(values: np.ndarray, n: int) -> np.ndarray:
    return pd.Series(values).rolling(n).mean().to_numpy()


class BtSmaCross(BtStrategy):
    fast = 10
    slow = 20

    def init(self) -> None:
        self.a = self.I(_pandas_sma, self.data.Close, self.fast)
        self.b = self.I(_pandas_sma, self.data.Close, self.slow)

    def next(self) -> None:
        if crossover(self.a, self.b):
            self.position.close()
            self.buy(size=100_000)
        elif crossover(self.b, self.a):
            self.position.close()
            self.sell(size=100_000)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return eurusd_frame()


@pytest.fixture(scope="module")
def reference(frame: pd.DataFrame) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backtesting.py warns that the last trade stays open
        return Backtest(frame, BtSmaCross, cash=1_000_000, commission=0).run()


def test_sma_cross_matches_backtesting_py(frame: pd.DataFrame, reference: pd.Series) -> None:
    out = run_backtest(config(params={"fast": 10, "slow": 20, "mode": "reversal"}), bars=bars_from_frame(frame))
    ref_trades = reference["_trades"]
    trades = out["results"]["trades"]
    assert [t["entry_bar"] for t in trades] == ref_trades["EntryBar"].tolist()
    assert [t["exit_bar"] for t in trades] == ref_trades["ExitBar"].tolist()
    assert [t["side"] == "long" for t in trades] == (ref_trades["Size"] > 0).tolist()
    assert out["total_trades"] == reference["# Trades"] > 100
    assert round(out["final_balance"], 2) == round(reference["Equity Final [$]"], 2)
    assert out["drawdown"] == pytest.approx(-reference["Max. Drawdown [%]"], abs=1e-6)
    assert out["win_rate"] == pytest.approx(reference["Win Rate [%]"], abs=1e-6)
    assert out["sharpe_ratio"] == pytest.approx(reference["Sharpe Ratio"], abs=1e-6)
    assert out["return_pct"] == pytest.approx(reference["Return [%]"], abs=1e-6)
    m = out["results"]["metrics"]
    pairs = {"sortino_ratio": "Sortino Ratio", "calmar_ratio": "Calmar Ratio",
             "exposure_pct": "Exposure Time [%]", "best_trade_pct": "Best Trade [%]",
             "worst_trade_pct": "Worst Trade [%]", "avg_trade_pct": "Avg. Trade [%]",
             "profit_factor": "Profit Factor", "expectancy": "Expectancy [%]", "sqn": "SQN",
             "kelly_criterion": "Kelly Criterion", "return_ann_pct": "Return (Ann.) [%]",
             "volatility_ann_pct": "Volatility (Ann.) [%]", "cagr_pct": "CAGR [%]",
             "equity_peak": "Equity Peak [$]", "buy_hold_return_pct": "Buy & Hold Return [%]"}
    for ours, theirs in pairs.items():
        assert m[ours] == pytest.approx(reference[theirs], rel=1e-9, abs=1e-6), ours
    assert m["avg_drawdown_pct"] == pytest.approx(-reference["Avg. Drawdown [%]"], abs=1e-6)
    assert m["max_drawdown_duration_days"] * 86400 == pytest.approx(
        reference["Max. Drawdown Duration"].total_seconds(), abs=3600)
    pnl = np.array([t["pnl"] for t in trades])
    assert np.allclose(pnl, ref_trades["PnL"].to_numpy(), atol=1e-6)
    assert out["results"]["open_trade"] is not None  # the last position stays open, as in backtesting.py


def test_equity_curve_matches_backtesting_py(frame: pd.DataFrame, reference: pd.Series) -> None:
    sim = simulate_strategy(bars_from_frame(frame), SmaCross(fast=10, slow=20), config())
    assert np.allclose(sim.equity, reference["_equity_curve"]["Equity"].to_numpy(), rtol=0, atol=1e-6)


def test_every_path_gives_identical_trades(frame: pd.DataFrame) -> None:
    bars = bars_from_frame(frame)
    runs = [simulate_strategy(bars, SmaCross(fast=10, slow=20), config(), path=p)
            for p in ("vectorised", "events", "per_bar")]
    assert [r.path for r in runs] == ["vectorised", "events", "per_bar"]
    for r in runs[1:]:
        assert np.array_equal(r.entry_bar, runs[0].entry_bar)
        assert np.array_equal(r.exit_bar, runs[0].exit_bar)
        assert np.array_equal(r.side, runs[0].side)
        assert np.allclose(r.pnl, runs[0].pnl, atol=1e-9)
        assert np.allclose(r.equity, runs[0].equity, atol=1e-6)


class BtSmaCrossTen(BtSmaCross):
    """The same crossover trading 10 shares (daily GOOG)."""

    def next(self) -> None:
        if crossover(self.a, self.b):
            self.position.close()
            self.buy(size=10)
        elif crossover(self.b, self.a):
            self.position.close()
            self.sell(size=10)


def test_daily_bars_match_backtesting_py() -> None:
    """GOOG D1: the daily (252-day) annualisation path and a different size and balance."""
    from tests.conftest import SHARED_DATA

    df = pd.read_csv(SHARED_DATA / "GOOG_D1.csv", index_col=0, parse_dates=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Backtest(df, BtSmaCrossTen, cash=100_000, commission=0).run()
    out = run_backtest(config(symbol="GOOG", timeframe="D1", size=10, initial_balance=100_000),
                       bars=bars_from_frame(df, "GOOG", "D1"))
    assert [t["entry_bar"] for t in out["results"]["trades"]] == ref["_trades"]["EntryBar"].tolist()
    assert round(out["final_balance"], 2) == round(ref["Equity Final [$]"], 2)
    for ours, theirs in ((out["sharpe_ratio"], ref["Sharpe Ratio"]), (out["drawdown"], -ref["Max. Drawdown [%]"]),
                         (out["win_rate"], ref["Win Rate [%]"]),
                         (out["results"]["metrics"]["sortino_ratio"], ref["Sortino Ratio"]),
                         (out["results"]["metrics"]["cagr_pct"], ref["CAGR [%]"])):
        assert ours == pytest.approx(theirs, abs=1e-6)
