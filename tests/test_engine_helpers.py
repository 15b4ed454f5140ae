"""Helpers for the engine tests: real EURUSD bars, hand-made bars and configs (no tests here)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from engine.bars import Bars
from engine.config import BacktestConfig, Costs
from tests.conftest import SHARED_DATA

H1_NS = 3600 * 1_000_000_000
T0 = 1_700_000_000 * 1_000_000_000 // H1_NS * H1_NS  # an hour boundary in 2023


def eurusd_frame() -> pd.DataFrame:
    """../shared/data/EURUSD_H1.csv as backtesting.py reads it."""
    return pd.read_csv(SHARED_DATA / "EURUSD_H1.csv", index_col=0, parse_dates=True)


def bars_from_frame(df: pd.DataFrame, symbol: str = "EURUSD", timeframe: str = "H1") -> Bars:
    t = df.index.values.astype("datetime64[ns]").astype(np.int64)
    cols = (df[c].to_numpy(dtype=np.float64) for c in ("Open", "High", "Low", "Close", "Volume"))
    return Bars(symbol, timeframe, t, *cols, source="EURUSD_H1.csv")


def eurusd_bars() -> Bars:
    return bars_from_frame(eurusd_frame())


def make_bars(open_: Sequence[float], high: Sequence[float] | None = None,
              low: Sequence[float] | None = None, close: Sequence[float] | None = None) -> Bars:
    """Hourly bars from price lists; missing high/low/close default to the open."""
    o = np.asarray(open_, dtype=np.float64)
    h = o.copy() if high is None else np.asarray(high, dtype=np.float64)
    lo = o.copy() if low is None else np.asarray(low, dtype=np.float64)
    c = o.copy() if close is None else np.asarray(close, dtype=np.float64)
    t = T0 + np.arange(o.size, dtype=np.int64) * H1_NS
    return Bars("TEST", "H1", t, o, h, lo, c, np.ones(o.size), source="hand-made")


def random_bars(n: int, seed: int = 1) -> Bars:
    """A seeded random walk with consistent OHLC."""
    rng = np.random.default_rng(seed)
    c = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    o = np.empty(n)
    o[0] = 1.1
    o[1:] = c[:-1] * np.exp(rng.normal(0, 0.0005, n - 1))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.001, n)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.001, n)))
    return make_bars(o, h, lo, c)


def config(**kw: Any) -> BacktestConfig:
    costs = kw.pop("costs", Costs())
    base: dict[str, Any] = dict(symbol="EURUSD", initial_balance=1_000_000.0, size=100_000.0)
    base.update(kw)
    return BacktestConfig(costs=costs, **base)
