"""run_backtest: the backtest_complete shape, plain JSON, data loading, variants, equity transport."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.backtest import EQUITY_POINTS, equity_json, run_backtest
from engine.bars import ns_to_iso
from engine.config import parse_config
from engine.progress import Progress
from tests.test_engine_helpers import eurusd_bars, make_bars, random_bars

TOP = {"final_balance", "total_trades", "win_rate", "sharpe_ratio", "drawdown", "return_pct",
       "duration_seconds", "results"}
TRADE_KEYS = {"entry_bar", "exit_bar", "entry_time", "exit_time", "side", "size", "entry_price",
              "exit_price", "pnl", "return_pct", "exit_reason"}
METRICS = {"profit_factor", "expectancy", "sortino_ratio", "calmar_ratio", "exposure_pct",
           "best_trade_pct", "worst_trade_pct", "avg_trade_pct"}


def test_vanilla_result_shape_and_plain_json() -> None:
    bars = eurusd_bars()
    cfg = parse_config({"symbol": "EURUSD", "params": {"stop_loss_pct": 0.5}, "costs": {"spread": 0.0001}})
    out = run_backtest(cfg, bars=bars)
    assert set(out) == TOP
    json.dumps(out, allow_nan=False)  # NaN/inf never reach JSON
    res = out["results"]
    assert METRICS <= set(res["metrics"])
    assert res["trades"] and set(res["trades"][0]) == TRADE_KEYS
    t = res["trades"][0]
    assert t["entry_time"] == ns_to_iso(int(bars.time[t["entry_bar"]]))
    assert t["side"] in ("long", "short") and t["exit_reason"] in ("signal", "stop_loss", "take_profit")
    assert {r["exit_reason"] for r in res["trades"]} >= {"signal", "stop_loss"}
    assert res["data"] == {"symbol": "EURUSD", "timeframe": "H1", "synthetic": False, "source": "EURUSD_H1.csv",
                           "bars": 5000, "start": "2017-04-19T09:00:00.000Z", "end": "2018-02-07T15:00:00.000Z"}
    assert res["config"]["params"] == {"stop_loss_pct": 0.5}
    assert out["total_trades"] == len(res["trades"])
    assert len(res["equity"]["time"]) == len(res["equity"]["equity"]) == len(res["equity"]["drawdown_pct"]) <= 2000


def test_dates_cut_given_bars() -> None:
    cfg = parse_config({"symbol": "EURUSD", "start_date": "2017-06-01", "end_date": "2017-06-30"})
    out = run_backtest(cfg, bars=eurusd_bars())
    assert out["results"]["data"]["start"].startswith("2017-06-01")
    assert out["results"]["data"]["end"].startswith("2017-06-30")


def test_no_trades_keeps_spec_fields_numeric_and_metrics_null() -> None:
    out = run_backtest(parse_config({"symbol": "TEST"}), bars=make_bars([1.0] * 50))
    # The spec types win_rate / sharpe_ratio as numbers; "undefined" lives in results.metrics.
    assert out["total_trades"] == 0 and out["win_rate"] == 0.0 and out["sharpe_ratio"] == 0.0
    assert out["results"]["metrics"]["win_rate"] is None
    assert out["results"]["metrics"]["sharpe_ratio"] is None
    assert out["final_balance"] == 10_000.0 and out["drawdown"] == 0.0
    json.dumps(out, allow_nan=False)


def test_too_few_bars_is_a_clear_error() -> None:
    cfg = parse_config({"symbol": "EURUSD", "start_date": "2030-01-01"})
    with pytest.raises(ValueError, match="need at least 2 bars of EURUSD H1 in 2030-01-01 .. end"):
        run_backtest(cfg, bars=eurusd_bars())


def test_equity_downsampled_keeps_the_deepest_drawdown() -> None:
    bars = random_bars(50_000, seed=3)
    eq = 1000 + np.cumsum(np.random.default_rng(0).normal(0, 1, 50_000))
    out = equity_json(bars, eq)
    assert len(out["equity"]) <= EQUITY_POINTS
    full_dd = (1 - eq / np.maximum.accumulate(eq)) * 100
    assert max(out["drawdown_pct"]) == pytest.approx(full_dd.max())
    assert out["time"][0] == ns_to_iso(int(bars.time[0])) and out["time"][-1] == ns_to_iso(int(bars.time[-1]))


def test_loads_from_the_store_synthetic_and_reports_progress(tmp_path: Path) -> None:
    from engine.store import DataStore

    seen: list[Progress] = []
    cfg = parse_config({"symbol": "SYNTH", "timeframe": "H4", "start_date": "2023-01-01", "end_date": "2023-12-31"})
    out = run_backtest(cfg, store=DataStore(tmp_path), progress=seen.append)
    assert out["results"]["data"]["synthetic"] is True
    assert seen[0].bars_processed == 0 and seen[-1].bars_processed == seen[-1].total_bars > 1000
    assert seen[-1].trades_count == out["total_trades"]


def test_spiced_variant_adds_regime_analytics() -> None:
    cfg = parse_config({"symbol": "EURUSD", "variant": "spiced", "params": {"stop_loss_pct": 1.0}})
    out = run_backtest(cfg, bars=eurusd_bars())
    ra = out["results"]["regime_analytics"]
    assert {"bars_per_regime", "transitions", "filtered_trades"} <= set(ra)
    vanilla = run_backtest(parse_config({"symbol": "EURUSD", "params": {"stop_loss_pct": 1.0}}), bars=eurusd_bars())
    assert out["total_trades"] != vanilla["total_trades"] or out["final_balance"] != vanilla["final_balance"]
    json.dumps(out, allow_nan=False)
