"""Monte Carlo resampling and CSCV probability of backtest overfitting."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.montecarlo import equity_paths, run_monte_carlo, trade_account_returns
from engine.pbo import compute_pbo


def test_account_returns_compound_to_the_final_balance() -> None:
    pnls = [100.0, -50.0, 200.0, -300.0]
    r = trade_account_returns(pnls, 1000.0)
    assert r.tolist() == pytest.approx([0.1, -50 / 1100, 200 / 1050, -300 / 1250])
    final, dd = equity_paths(r[None, :])
    assert final[0] == pytest.approx((1000 + sum(pnls)) / 1000 * 100 - 100)
    assert dd[0] == pytest.approx(300 / 1250 * 100)


def test_drawdown_counts_from_the_starting_balance() -> None:
    final, dd = equity_paths(np.array([[-0.1, 0.5]]))
    assert dd[0] == pytest.approx(10.0)
    assert final[0] == pytest.approx(35.0)


def test_shuffle_keeps_final_return_but_changes_drawdown_bootstrap_changes_both() -> None:
    r = trade_account_returns(np.random.default_rng(3).normal(10, 80, 200), 10_000.0)
    mc = run_monte_carlo(r, runs=500, seed=7)
    sh, bs = mc["shuffle"], mc["bootstrap"]
    orig = mc["original"]["final_return_pct"]
    assert sh["final_return_pct"]["p5"] == pytest.approx(orig, abs=1e-8)
    assert sh["final_return_pct"]["p95"] == pytest.approx(orig, abs=1e-8)
    assert sh["max_drawdown_pct"]["p95"] > sh["max_drawdown_pct"]["p5"] + 0.5
    assert bs["final_return_pct"]["p95"] > bs["final_return_pct"]["p5"] + 1.0
    assert bs["max_drawdown_pct"]["p95"] > bs["max_drawdown_pct"]["p5"]
    pcts = list(bs["final_return_pct"].values())
    assert pcts == sorted(pcts)
    assert bs["var_95_pct"] == pytest.approx(-bs["final_return_pct"]["p5"])
    assert bs["es_95_pct"] >= bs["var_95_pct"]
    assert 0.0 <= bs["prob_loss"] <= 1.0
    assert run_monte_carlo(r, runs=500, seed=7) == mc  # seeded: reproducible


def test_losing_trades_give_high_probability_of_loss() -> None:
    r = np.random.default_rng(1).normal(-0.002, 0.01, 300)
    mc = run_monte_carlo(r, runs=400, seed=1)
    assert mc["bootstrap"]["prob_loss"] > 0.8
    assert mc["bootstrap"]["var_95_pct"] > 0


def test_monte_carlo_without_trades_and_bad_runs() -> None:
    mc = run_monte_carlo([], runs=10)
    assert mc["trades"] == 0 and mc["bootstrap"] is None and mc["shuffle"] is None
    with pytest.raises(ValueError, match="mc_runs"):
        run_monte_carlo([0.01], runs=0)


def test_pbo_of_pure_noise_is_near_one_half() -> None:
    # One noise draw can land anywhere (the splits share data), so judge the mean over seeds.
    runs = [compute_pbo(np.random.default_rng(s).normal(0.0, 0.01, (800, 16))) for s in range(16)]
    assert all(r["splits"] == 12870 and r["configs"] == 16 for r in runs)
    assert 0.35 <= float(np.mean([r["pbo"] for r in runs])) <= 0.65
    assert 0.35 <= float(np.mean([compute_pbo(np.random.default_rng(100 + s).normal(0, 0.01, (600, 12)),
                                              blocks=10)["pbo"] for s in range(16)])) <= 0.65


def test_pbo_of_a_truly_dominant_config_is_near_zero() -> None:
    m = np.random.default_rng(5).normal(0.0, 0.01, (1000, 20))
    m[:, 7] += 0.003
    res = compute_pbo(m)
    assert res["pbo"] < 0.1
    assert res["splits"] == 12870
    assert res["prob_oos_loss"] < 0.1


def test_pbo_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="pbo_blocks"):
        compute_pbo(np.zeros((100, 3)), blocks=5)
    with pytest.raises(ValueError, match=">= 2 configurations"):
        compute_pbo(np.zeros((100, 1)))
    with pytest.raises(ValueError, match="number of return periods"):
        compute_pbo(np.zeros((10, 3)), blocks=16)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-0.2, 0.3, allow_nan=False), min_size=1, max_size=60), st.integers(0, 2**31))
def test_shuffle_never_changes_the_final_return(returns: list[float], seed: int) -> None:
    mc = run_monte_carlo(returns, runs=50, seed=seed)
    final = mc["original"]["final_return_pct"]
    for p in mc["shuffle"]["final_return_pct"].values():
        assert p == pytest.approx(final, rel=1e-9, abs=1e-9)
    dd = mc["shuffle"]["max_drawdown_pct"]
    assert 0.0 <= dd["p5"] <= dd["p95"] <= 100.0
