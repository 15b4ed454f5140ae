"""Parameter sweeps: identical to single backtests, skipped counting, ranking, progress, fan-out."""
from __future__ import annotations

import numpy as np
import pytest

from engine.bars import Bars
from engine.backtest import run_backtest
from engine.config import BacktestConfig, parse_config
from engine.importers import read_bars
from engine.progress import Cancelled, Progress
from engine.simulator import simulate_strategy
from engine.strategies import make_strategy
from engine.sweep import expand_grid, merge_sweeps, normalize_grid, run_sweep, split_grid, sweep_errors
from engine.sweep_eval import SmaCache, simulate_params
from tests.conftest import SHARED_DATA

GRID = {"fast": "5:25:5", "slow": "10:60:5"}
BASE = {"symbol": "EURUSD", "size": 100_000, "initial_balance": 1_000_000}


@pytest.fixture(scope="module")
def eurusd() -> Bars:
    return read_bars(SHARED_DATA / "EURUSD_H1.csv", "EURUSD", "H1")


@pytest.fixture(scope="module")
def sweep(eurusd: Bars) -> dict:
    return run_sweep(parse_config(BASE), GRID, bars=eurusd)


def test_sweep_counts_valid_and_skipped_combinations(sweep: dict) -> None:
    assert sweep["combinations"] == 5 * 11
    assert sweep["evaluated"] == 45 and sweep["skipped"] == 10  # fast >= slow
    assert "must be < slow" in sweep["skipped_examples"][0]["error"]
    assert [r["rank"] for r in sweep["results"]] == list(range(1, 46))
    values = [r["objective_value"] for r in sweep["results"]]
    assert values == sorted(values, reverse=True)
    assert sweep["best"] == sweep["results"][0]
    assert sweep["data"]["bars"] == 5000 and not sweep["data"]["synthetic"]


def test_every_sweep_row_equals_a_single_backtest(eurusd: Bars, sweep: dict) -> None:
    for row in sweep["results"]:
        single = run_backtest(parse_config({**BASE, "params": row["params"]}), bars=eurusd)
        assert row["metrics"] == {**single["results"]["metrics"], "final_balance": single["final_balance"],
                                  "drawdown": single["drawdown"]}


@pytest.mark.parametrize("mode", ["reversal", "long_only"])
def test_shared_sma_path_makes_the_engines_exact_trades(eurusd: Bars, mode: str) -> None:
    cfg = BacktestConfig(symbol="EURUSD", size=100_000, initial_balance=1_000_000)
    cache = SmaCache(eurusd)
    for params in expand_grid(normalize_grid(GRID), base={"mode": mode}):
        if params["fast"] >= params["slow"]:
            continue
        fast, _ = simulate_params(eurusd, cfg, params, cache=cache)
        plain = simulate_strategy(eurusd, make_strategy("sma_cross", params), cfg)
        for name in ("entry_bar", "exit_bar", "side", "entry_price", "exit_price", "pnl", "equity"):
            assert np.array_equal(getattr(fast, name), getattr(plain, name)), (params, name)
        assert fast.open_trade == plain.open_trade and fast.warmup == plain.warmup


def test_objectives_rank_by_their_value(eurusd: Bars) -> None:
    cfg = parse_config(BASE)
    by_return = run_sweep(cfg, {"fast": [5, 10], "slow": [20, 40]}, objective="return_pct", bars=eurusd)
    returns = [r["metrics"]["return_pct"] for r in by_return["results"]]
    assert returns == sorted(returns, reverse=True)
    custom = run_sweep(cfg, {"fast": [5, 10], "slow": [20, 40]}, objective="-drawdown", bars=eurusd)
    dds = [r["metrics"]["drawdown"] for r in custom["results"]]
    assert dds == sorted(dds) and custom["objective"] == "-drawdown"


def test_progress_covers_the_whole_grid_once(eurusd: Bars, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.sweep_eval.Throttle.ready", lambda self, final=False: True)
    seen: list[Progress] = []
    run_sweep(parse_config(BASE), {"fast": [5, 10, 15], "slow": [20, 30]}, bars=eurusd, progress=seen.append)
    done = [p.bars_processed for p in seen]
    assert done[0] == 0 and done[-1] == seen[-1].total_bars == 6 * 5000
    assert done == sorted(done) and len(set(done)) == 7
    assert {p.total_bars for p in seen} == {30_000}
    trades = [p.trades_count for p in seen]
    assert trades == sorted(trades) and trades[-1] > 0


def test_cancel_propagates(eurusd: Bars) -> None:
    def cancel(p: Progress) -> None:
        if p.bars_processed > 0:
            raise Cancelled()

    with pytest.raises(Cancelled):
        run_sweep(parse_config(BASE), GRID, bars=eurusd, progress=cancel)


def test_split_and_merge_rank_like_one_sweep(eurusd: Bars, sweep: dict) -> None:
    combos = [r["params"] for r in sweep["results"]]
    parts = [run_sweep(parse_config(BASE), part, bars=eurusd) for part in split_grid(combos, 3)]
    merged = merge_sweeps(parts, "sharpe_ratio")
    assert merged["evaluated"] == 45
    assert [r["params"] for r in merged["results"]] == [r["params"] for r in sweep["results"]]
    assert merged["cpu_seconds"] >= merged["elapsed_seconds"]


def test_merged_ties_keep_grid_order_given_the_order(eurusd: Bars) -> None:
    grid = {"fast": [5, 10, 15], "slow": [20, 40]}
    one = run_sweep(parse_config(BASE), grid, objective="total_trades * 0", bars=eurusd)  # every row ties
    combos = expand_grid(normalize_grid(grid))
    parts = [run_sweep(parse_config(BASE), part, objective="total_trades * 0", bars=eurusd)
             for part in split_grid(combos, 2)]
    merged = merge_sweeps(parts, "total_trades * 0", order=combos)
    assert [r["params"] for r in merged["results"]] == [r["params"] for r in one["results"]] == combos


def test_bad_sweeps_fail_clearly(eurusd: Bars) -> None:
    cfg = parse_config(BASE)
    with pytest.raises(ValueError, match="no valid combination"):
        run_sweep(cfg, {"fast": [50], "slow": [10]}, bars=eurusd)
    with pytest.raises(ValueError, match="unknown metric 'profit'"):
        run_sweep(cfg, GRID, objective="profit * 2", bars=eurusd)
    with pytest.raises(ValueError, match="`grid`"):
        run_sweep(cfg, [], bars=eurusd)
    with pytest.raises(ValueError, match="grid.fast"):
        run_sweep(cfg, {"fast": "9:1:1"}, bars=eurusd)
    full = parse_config({**BASE, "variant": "vanilla_full"})
    with pytest.raises(ValueError, match=r"`variant` of a sweep must be one of \['vanilla', 'spiced'\]"):
        run_sweep(full, GRID, bars=eurusd)
    # What a server checks before queueing a sweep (field -> message):
    assert sweep_errors(cfg, GRID) == {}
    assert set(sweep_errors(full, GRID)) == {"variant"}
    assert "no valid combination" in sweep_errors(cfg, {"fast": [50], "slow": [10]})["grid"]
    assert "unknown parameter" in sweep_errors(cfg, {"nope": [1]})["grid"]
