"""Built-in strategies: every path agrees, no look-ahead, validation, registry, user files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.config import ConfigError, parse_config
from engine.simulator import simulate_strategy
from engine.strategies import BUILTINS, describe_strategies, load_strategy, make_strategy, validate_strategy
from tests.conftest import REPO
from tests.test_engine_helpers import config, eurusd_bars, make_bars, random_bars

EXAMPLE = REPO / "scripts" / "examples_strategy.py"
PARAMS: dict[str, dict[str, Any]] = {
    "sma_cross": {"fast": 10, "slow": 30},
    "rsi_reversion": {"period": 14},
    "donchian_breakout": {"period": 20, "exit_period": 10},
    "bollinger_reversion": {"period": 20, "k": 2.0},
}
RISK = {"stop_loss_pct": 0.3, "take_profit_pct": 0.6}


def _same(a: Any, b: Any) -> None:
    assert np.array_equal(a.entry_bar, b.entry_bar)
    assert np.array_equal(a.exit_bar, b.exit_bar)
    assert np.array_equal(a.side, b.side)
    assert np.array_equal(a.exit_reason, b.exit_reason)
    assert np.allclose(a.pnl, b.pnl, rtol=0, atol=1e-9)
    assert np.allclose(a.equity, b.equity, rtol=0, atol=1e-6)
    assert (a.open_trade is None) == (b.open_trade is None)


@pytest.fixture(scope="module")
def eurusd() -> Any:
    return eurusd_bars()


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_runs_and_paths_agree(name: str, eurusd: Any) -> None:
    plain = [simulate_strategy(eurusd, make_strategy(name, PARAMS[name]), config(), path=p)
             for p in ("vectorised", "events", "per_bar")]
    assert plain[0].n_trades > 10
    for r in plain[1:]:
        _same(plain[0], r)
    risky = [simulate_strategy(eurusd, make_strategy(name, {**PARAMS[name], **RISK}), config(), path=p)
             for p in ("vectorised", "events", "per_bar")]
    assert set(risky[0].exit_reason.tolist()) >= {1, 2}  # stops and targets both happen
    for r in risky[1:]:
        _same(risky[0], r)


def test_sma_cross_long_only_never_shorts(eurusd: Any) -> None:
    r = simulate_strategy(eurusd, make_strategy("sma_cross", {"mode": "long_only"}), config())
    assert r.n_trades > 10 and set(r.side.tolist()) == {1}
    # long_only is flat between a down-cross and the next up-cross
    assert np.all(r.entry_bar[1:] > r.exit_bar[:-1])


def test_user_strategy_from_file_matches_builtin(eurusd: Any) -> None:
    cls = load_strategy(f"{EXAMPLE}:UserSmaCross")
    user = simulate_strategy(eurusd, cls(fast=10, slow=30), config())
    builtin = simulate_strategy(eurusd, make_strategy("sma_cross", {"fast": 10, "slow": 30}), config())
    assert user.path == "per_bar" and builtin.path == "vectorised"
    _same(user, builtin)
    other = load_strategy(f"{EXAMPLE}:TrendRsiPullback")
    assert simulate_strategy(eurusd, other(trend=100), config()).n_trades > 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cut=st.integers(40, 250), name=st.sampled_from(sorted(BUILTINS)),
       risky=st.booleans())
def test_no_look_ahead(seed: int, cut: int, name: str, risky: bool) -> None:
    """Changing bars after bar i never changes a decision at or before i."""
    n = 300
    a = random_bars(n, seed)
    b0 = random_bars(n, seed + 1)
    mix = lambda x, y: np.concatenate([x[: cut + 1], y[cut + 1:] * (x[cut] / y[cut])])  # noqa: E731
    b = make_bars(mix(a.open, b0.open), mix(a.high, b0.high), mix(a.low, b0.low), mix(a.close, b0.close))
    params = {**PARAMS[name], **(RISK if risky else {})}
    sa, sb = make_strategy(name, params), make_strategy(name, params)
    sa.init(a)
    sb.init(b)
    sa.prepare_next()
    sb.prepare_next()
    ta, tb = sa.signals(a).target[: cut + 1], sb.signals(b).target[: cut + 1]
    assert np.array_equal(ta, tb, equal_nan=True)
    assert [sa.next(i, 0) for i in range(sa.warmup, cut + 1)] == [sb.next(i, 0) for i in range(sb.warmup, cut + 1)]
    ra, rb = (simulate_strategy(x, make_strategy(name, params), config()) for x in (a, b))
    def entries(r: Any) -> list[int]:  # entries decided on bars <= cut, the open trade's too
        bars_ = r.entry_bar.tolist() + ([r.open_trade.entry_bar] if r.open_trade else [])
        return [e for e in bars_ if e <= cut + 1]

    exits = lambda r: r.exit_bar[r.exit_bar <= cut].tolist()  # noqa: E731
    assert entries(ra) == entries(rb) and exits(ra) == exits(rb)


def test_validation_names_fields_and_allowed_values() -> None:
    assert validate_strategy("sma_cross", {"fast": 10, "slow": 20}) == {}
    assert validate_strategy("sma_cross", {"fast": 20, "slow": 20}) == {"params.fast": "must be < slow (20), got 20"}
    err = validate_strategy("sma_cross", {"fats": 3})
    assert "allowed: ['fast', 'mode', 'slow', 'stop_loss_pct', 'take_profit_pct']" in err["params.fats"]
    assert "one of ['reversal', 'long_only']" in validate_strategy("sma_cross", {"mode": "x"})["params.mode"]
    assert "an integer" in validate_strategy("sma_cross", {"fast": 2.5})["params.fast"]
    assert "an integer" in validate_strategy("sma_cross", {"fast": True})["params.fast"]
    assert "or null" in validate_strategy("rsi_reversion", {"stop_loss_pct": -1})["params.stop_loss_pct"]
    assert "between lower" in validate_strategy("rsi_reversion", {"exit_level": 80.0})["params.exit_level"]
    assert "sma_cross" in validate_strategy("nope", {})["strategy"]
    assert "not found" in validate_strategy("missing/file.py:X", {})["strategy"]
    with pytest.raises(ConfigError) as info:
        parse_config({"symbol": "EURUSD", "params": {"slow": 1}})
    assert info.value.errors == {"params.slow": "must be an integer in [2, 100000], got 1"}


def test_user_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert "RuntimeError: boom" in validate_strategy(f"{bad}:X", {})["strategy"]
    assert "TrendRsiPullback" in validate_strategy(f"{EXAMPLE}:Nope", {})["strategy"]
    assert validate_strategy(f"{EXAMPLE}:UserSmaCross", {"fast": 5}) == {}


def test_describe_strategies_lists_every_param() -> None:
    described = {d["name"]: d for d in describe_strategies()}
    assert set(described) == set(BUILTINS)
    for d in described.values():
        assert d["doc"]
        for p in d["params"]:
            assert {"name", "default", "type", "doc"} <= set(p)
    fast = next(p for p in described["sma_cross"]["params"] if p["name"] == "fast")
    assert fast["default"] == 10 and fast["type"] == "int" and fast["min"] == 1
    mode = next(p for p in described["sma_cross"]["params"] if p["name"] == "mode")
    assert mode["choices"] == ["reversal", "long_only"]


def test_indicators_warm_up_and_short_input() -> None:
    from engine.indicators import rolling_max, rsi, sma

    x = np.arange(1.0, 6.0)
    assert np.isnan(sma(x, 3)[:2]).all() and sma(x, 3)[2:].tolist() == pytest.approx([2, 3, 4])
    assert np.isnan(sma(x, 10)).all() and np.isnan(rsi(x, 10)).all()
    assert rolling_max(x, 2)[1:].tolist() == [2, 3, 4, 5]
    assert rsi(x, 2)[2:].tolist() == [100.0, 100.0, 100.0]
    with pytest.raises(ValueError, match="`period` must be an integer >= 1"):
        sma(x, 0)
    bars = make_bars([1.0] * 5)
    assert simulate_strategy(bars, make_strategy("sma_cross", {}), config()).n_trades == 0


def test_user_file_is_loaded_once_until_it_changes(tmp_path: Path) -> None:
    f = tmp_path / "counted.py"
    body = ("from engine.strategy import Strategy, Param\n"
            "LOADS = globals().get('LOADS', 0) + 1\n"
            "class S(Strategy):\n"
            "    name = 's'\n"
            "    params = (Param({p!r}, 1, int, 'x'),)\n"
            "    def next(self, i, position):\n"
            "        return None\n")
    f.write_text(body.format(p="period"))
    a, b = load_strategy(f"{f}:S"), load_strategy(f"{f}:S")
    assert a is b
    f.write_text(body.format(p="next"))  # a changed file is loaded again ...
    import os
    os.utime(f, ns=(f.stat().st_mtime_ns + 10**9,) * 2)
    c = load_strategy(f"{f}:S")
    assert c is not a
    # ... and a parameter that would hide the strategy API is refused
    assert "clashes with the Strategy API" in validate_strategy(f"{f}:S", {})["params.next"]


def test_indicators_stay_precise_on_long_drifting_series() -> None:
    import pandas as pd

    from engine.indicators import rolling_std, sma, smas

    close = random_bars(200_000, seed=11).close * np.linspace(1, 3, 200_000)  # a strong drift
    ref = pd.Series(close)
    for n in (2, 20, 5000):
        assert np.allclose(sma(close, n), ref.rolling(n).mean(), rtol=0, atol=1e-11, equal_nan=True)
    assert np.allclose(rolling_std(close, 20), ref.rolling(20).std(ddof=0), rtol=0, atol=1e-9, equal_nan=True)
    # a moving average is bit-identical however it is requested (ties between averages stay ties)
    f, s = smas(close, 10, 20)
    assert np.array_equal(f, sma(close, 10), equal_nan=True) and np.array_equal(s, sma(close, 20), equal_nan=True)


def test_rolling_extremes_match_pandas() -> None:
    import pandas as pd

    from engine.indicators import rolling_max, rolling_min

    x = random_bars(10_007, seed=4).close
    for n in (1, 2, 7, 20, 256, 257, 2000):
        assert np.array_equal(rolling_max(x, n), pd.Series(x).rolling(n).max(), equal_nan=True)
        assert np.array_equal(rolling_min(x, n), pd.Series(x).rolling(n).min(), equal_nan=True)
