"""Walk-forward optimisation and the vanilla_full / spiced_full variants end to end."""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from engine.backtest import run_backtest
from engine.bars import Bars
from engine.config import ConfigError, parse_config
from engine.importers import read_bars
from engine.progress import Progress
from engine.sweep import compile_objective, expand_grid, normalize_grid
from engine.sweep_eval import Meter
from engine.walkforward import make_windows, run_walk_forward
from server.report_text import format_full_report, format_robustness
from tests.conftest import SHARED_DATA

BASE = {"symbol": "EURUSD", "size": 100_000, "initial_balance": 1_000_000}
SMALL = {"grid": {"fast": [5, 10, 20], "slow": [30, 60]}, "in_sample": 1000, "out_of_sample": 800,
         "mc_runs": 300, "pbo_blocks": 8}


@pytest.fixture(scope="module")
def eurusd() -> Bars:
    return read_bars(SHARED_DATA / "EURUSD_H1.csv", "EURUSD", "H1")


@pytest.fixture(scope="module")
def full(eurusd: Bars) -> dict:
    return run_backtest(parse_config({**BASE, "variant": "vanilla_full", "robustness": SMALL}), bars=eurusd)


def _choices(bars: Bars, windows: list) -> list[dict]:
    cfg = parse_config(BASE)
    combos = expand_grid(normalize_grid(SMALL["grid"]))
    wf = run_walk_forward(bars, cfg, combos, compile_objective("sharpe_ratio"), windows, Meter(None, 1))
    return [r["params"] for r in wf.rows]


def _scrambled(bars: Bars, start: int) -> Bars:
    """Bars from ``start`` on replaced by a wild, unrelated random walk."""
    rng = np.random.default_rng(99)
    n = len(bars) - start
    close = bars.close.copy()
    close[start:] = close[start - 1] * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    opn = bars.open.copy()
    opn[start:] = close[start:] * (1 + rng.normal(0, 0.01, n))
    hi, lo = np.maximum(opn, close) * 1.01, np.minimum(opn, close) * 0.99
    return replace(bars, open=opn, high=hi, low=lo, close=close)


def test_no_out_of_sample_bar_influences_the_choice(eurusd: Bars) -> None:
    windows = make_windows(len(eurusd), in_sample=1000, out_of_sample=800)
    original = _choices(eurusd, windows)
    assert len(original) == 5
    for k in (0, 2):
        # Everything after window k's in-sample end changes; choices up to window k must not.
        changed = _choices(_scrambled(eurusd, windows[k].is_end), windows)
        assert changed[: k + 1] == original[: k + 1]
    assert changed != original  # the scramble is wild enough to move later choices


def test_full_result_shape_and_stitched_compounding(full: dict) -> None:
    res = full["results"]
    wf = res["walk_forward"]
    assert [w["window"] for w in wf["windows"]] == list(range(5))
    for w in wf["windows"]:
        assert w["is_end"] < w["oos_start"] <= w["oos_end"]
        assert set(w["params"]) >= {"fast", "slow"} and w["is_bars"] == 1000
        assert w["is_metrics"]["sharpe_ratio"] is not None and "return_pct" in w["oos_metrics"]
    # OOS windows compound: stitched final balance = start + every stitched trade's PnL
    assert full["final_balance"] == pytest.approx(1_000_000 + sum(t["pnl"] for t in res["trades"]), abs=1e-6)
    assert full["total_trades"] == len(res["trades"]) == sum(w["oos_metrics"]["total_trades"] for w in wf["windows"])
    assert res["data"]["bars"] == 5000 - 1000 and res["data"]["start"] == wf["windows"][0]["oos_start"]
    assert all(t["entry_bar"] >= 0 and t["exit_bar"] < 4000 for t in res["trades"])
    assert wf["efficiency"] is None or isinstance(wf["efficiency"], float)
    mc = res["monte_carlo"]
    assert mc["runs"] == 300 and mc["trades"] == full["total_trades"]
    assert set(mc["bootstrap"]["final_return_pct"]) == {"p5", "p25", "p50", "p75", "p95"}
    assert res["pbo"]["configs"] == 6 and res["pbo"]["blocks"] == 8 and 0 <= res["pbo"]["pbo"] <= 1
    assert res["verdict"]["verdict"] in ("robust", "fragile", "overfit") and res["verdict"]["reasons"]
    text = format_full_report(full)
    assert "Walk-forward (rolling" in text and "VERDICT:" in text and "p95" in text and "PBO (CSCV" in text


def test_progress_is_monotonic_across_the_whole_run(eurusd: Bars, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.sweep_eval.Throttle.ready", lambda self, final=False: True)
    seen: list[Progress] = []
    opts = {**SMALL, "wf_mode": "anchored", "gap": 24}
    run_backtest(parse_config({**BASE, "variant": "vanilla_full", "robustness": opts}), bars=eurusd,
                 progress=seen.append)
    done = [p.bars_processed for p in seen]
    assert done[0] == 0 and done[-1] == seen[-1].total_bars
    assert all(a <= b for a, b in zip(done, done[1:]))  # never restarts per window
    trades = [p.trades_count for p in seen]  # the stitched out-of-sample run's trades so far
    assert trades == sorted(trades) and trades[-1] > 0
    assert len({p.total_bars for p in seen}) == 1 and len(seen) > 30
    dates = [p.current_date for p in seen[1:]]
    assert dates[-1] == "2018-02-07"


def test_spiced_full_adds_regime_analytics(eurusd: Bars) -> None:
    cfg = parse_config({**BASE, "variant": "spiced_full", "robustness": {**SMALL, "grid": {"fast": [5, 10], "slow": [30]}}})
    out = run_backtest(cfg, bars=eurusd)
    res = out["results"]
    assert "bars_per_regime" in res["regime_analytics"]
    assert res["pbo"]["configs"] == 2 and res["verdict"]["verdict"] in ("robust", "fragile", "overfit")


def test_bad_robustness_options_are_field_errors(eurusd: Bars) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "variant": "vanilla_full", "robustness": {"wf_mode": "sliding", "pbo_blocks": 3}})
    assert set(err.value.errors) == {"robustness.wf_mode", "robustness.pbo_blocks"}
    with pytest.raises(ConfigError) as err:  # refused when submitted, not a failed run later
        parse_config({**BASE, "variant": "vanilla_full", "robustness": {"grid": {"fast": [50], "slow": [10, 20]}}})
    assert err.value.errors == {"robustness.grid": "no valid combination for 'sma_cross'; e.g. {'fast': 50, "
                                                   "'slow': 10}: params.fast: must be < slow (10), got 50"}
    too_small = parse_config({**BASE, "variant": "vanilla_full", "robustness": {"in_sample": 60}})
    with pytest.raises(ValueError, match=r"`in_sample` must give at least 100 bars per window, got 60"):
        run_backtest(too_small, bars=eurusd)
    too_big = parse_config({**BASE, "variant": "vanilla_full", "robustness": {"in_sample": 0.9, "out_of_sample": 0.2}})
    with pytest.raises(ValueError, match="exceeds the 5000 bars"):
        run_backtest(too_big, bars=eurusd)


def test_full_run_logs_windows_trades_and_verdict_not_warmup(eurusd: Bars, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("backtest.robust-test")
    with caplog.at_level(logging.INFO, logger="backtest.robust-test"):
        out = run_backtest(parse_config({**BASE, "variant": "vanilla_full", "robustness": {**SMALL, "mc_runs": 50}}),
                           bars=eurusd, logger=logger)
    messages = [r.getMessage() for r in caplog.records if r.name == "backtest.robust-test"]
    assert sum(m.startswith("Walk-forward window") for m in messages) == 5
    assert sum(m.startswith("Trade closed") for m in messages) == out["total_trades"]
    assert not any(m.startswith("Entry filtered") for m in messages)  # warm-up bars are not news
    assert messages[-1].startswith(f"Robustness verdict: {out['results']['verdict']['verdict']}")


def test_monte_carlo_report_says_loss_or_gain_in_words() -> None:
    def method(var: float, es: float) -> dict:
        pct = {f"p{p}": -var + p for p in (5, 25, 50, 75, 95)}
        return {"final_return_pct": pct, "max_drawdown_pct": pct, "prob_loss": 0.145, "var_95_pct": var, "es_95_pct": es}

    text = format_robustness({"monte_carlo": {"runs": 10, "seed": 1, "trades": 3, "original": {},
                                              "bootstrap": method(7.01, 11.2), "shuffle": method(-21.42, -21.42)}})
    assert "bootstrap: probability of loss 14.5 %" in text
    assert "95 % value at risk: 7.01 % loss (1 run in 20 ends at -7.01 % or worse)" in text
    assert "expected shortfall: 11.20 % loss" in text
    # A negative VaR is a gain in the bad tail: said so, never printed as a bare "-21.42 %" loss.
    assert "95 % value at risk: no loss (even the worst 1 run in 20 ends at +21.42 %)" in text
    assert "expected shortfall: no loss (those worst runs average +21.42 %)" in text
