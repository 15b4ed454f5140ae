"""Grid parsing, objective expressions, walk-forward windows, robustness options and the verdict."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.robustness import resolve_options, robustness_verdict, validate_robustness_options
from engine.sweep import compile_objective, expand_grid, normalize_grid, parse_grid_args, split_grid
from engine.walkforward import make_windows


def test_grid_ranges_are_inclusive_and_lists_pass_through() -> None:
    grid = parse_grid_args(["fast=5:30:5", "slow=20:100:10", "mode=reversal,long_only"])
    assert grid == {"fast": [5, 10, 15, 20, 25, 30], "slow": list(range(20, 101, 10)),
                    "mode": ["reversal", "long_only"]}
    assert normalize_grid({"x": "0.1:0.3:0.1", "y": [1, 2], "z": 3}) == {"x": [0.1, 0.2, 0.3], "y": [1, 2], "z": [3]}
    combos = expand_grid({"fast": [5, 10], "slow": [20]}, base={"mode": "long_only", "fast": 1})
    assert combos == [{"mode": "long_only", "fast": 5, "slow": 20}, {"mode": "long_only", "fast": 10, "slow": 20}]


@pytest.mark.parametrize("grid, match", [
    ({"fast": "5:1:1"}, "grid.fast"), ({"fast": "a:b:c"}, "grid.fast"), ({"fast": []}, "grid.fast"),
    ({"fast": {"a": 1}}, "grid.fast"), ({}, "`grid`"), ({"fast": "1:10:0"}, "grid.fast"),
    ({"a": "1:1000:1", "b": "1:1000:1"}, "at most"),
])
def test_bad_grids_name_the_parameter(grid: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalize_grid(grid)


def test_bad_grid_cli_item() -> None:
    with pytest.raises(ValueError, match="--grid"):
        parse_grid_args(["fast"])


def test_split_grid_deals_every_combo_once() -> None:
    combos = expand_grid({"a": list(range(7)), "b": [1, 2]})
    parts = split_grid(combos, 3)
    assert len(parts) == 3 and sorted(len(p) for p in parts) == [4, 5, 5]
    assert sorted(map(str, (c for p in parts for c in p))) == sorted(map(str, combos))
    assert len(split_grid(combos[:2], 8)) == 2
    with pytest.raises(ValueError, match="`n`"):
        split_grid(combos, 0)


def test_objective_expressions() -> None:
    m = {"return_pct": 12.0, "drawdown": 4.0, "sharpe_ratio": 1.5, "profit_factor": None}
    assert compile_objective("sharpe_ratio")(m) == 1.5
    assert compile_objective("return_pct / max(drawdown, 1) - -abs(-2)")(m) == 5.0
    assert compile_objective("profit_factor * 2")(m) is None
    assert compile_objective("return_pct / (drawdown - 4)")(m) is None


@pytest.mark.parametrize("expr, match", [
    ("__import__('os')", "only metric names"), ("sharpe_ratio ** 2", "only metric names"),
    ("foo + 1", "unknown metric 'foo'"), ("sharpe_ratio.real", "only metric names"),
    ("", "must be one of"), ("1 +", "not a valid expression"), ("max(1)", "only metric names"),
    ("min", "unknown metric"), ("lambda: 1", "only metric names"), ("'a'", "only metric names"),
])
def test_unsafe_or_wrong_objectives_are_rejected(expr: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compile_objective(expr)


def test_windows_rolling_and_anchored() -> None:
    rolling = make_windows(1000, in_sample=300, out_of_sample=200, gap=10)
    assert [(w.is_start, w.is_end, w.oos_start, w.oos_end) for w in rolling] == [
        (0, 300, 310, 510), (200, 500, 510, 710), (400, 700, 710, 1000)]
    anchored = make_windows(1000, mode="anchored", in_sample=0.3, out_of_sample=0.2)
    assert all(w.is_start == 0 for w in anchored)
    assert [w.oos_start for w in anchored] == [300, 500, 700] and anchored[-1].oos_end == 1000
    for ws in (rolling, anchored):  # out-of-sample parts tile without overlap, after their in-sample
        assert all(a.oos_end == b.oos_start for a, b in zip(ws, ws[1:]))
        assert all(w.is_end <= w.oos_start for w in ws)


@pytest.mark.parametrize("kwargs, match", [
    ({"in_sample": 50}, r"`in_sample` must give at least 100 bars per window, got 50"),
    ({"out_of_sample": 0.01}, r"`out_of_sample` must give at least 100 bars per window, got 10"),
    ({"in_sample": 800, "out_of_sample": 300}, r"exceeds the 1000 bars"),
    ({"gap": -1}, "`gap`"), ({"in_sample": 1.5}, "`in_sample`"), ({"mode": "sliding"}, "`wf_mode`"),
])
def test_bad_windows_name_the_option(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_windows(1000, **kwargs)


def test_robustness_options() -> None:
    assert validate_robustness_options({}) == {}
    good = {"grid": {"fast": "5:20:5", "slow": [30, 40]}, "objective": "return_pct / max(drawdown, 1)",
            "wf_mode": "anchored", "in_sample": 0.4, "out_of_sample": 500, "gap": 0.01, "mc_runs": 200,
            "mc_seed": 3, "pbo_blocks": 8}
    assert validate_robustness_options(good) == {}
    errors = validate_robustness_options({"grid": {"fast": "1:x:2"}, "objective": "os.system", "wf_mode": "x",
                                          "in_sample": "big", "mc_runs": 0, "pbo_blocks": 7, "seed": 1,
                                          "mc_seed": "a", "gap": -2, "out_of_sample": 2.0})
    assert set(errors) == {"grid", "objective", "wf_mode", "in_sample", "mc_runs", "pbo_blocks", "seed",
                           "mc_seed", "gap", "out_of_sample"}
    assert "rolling" in errors["wf_mode"] and "allowed" in errors["seed"]
    opts = resolve_options({}, "sma_cross", seed=9)
    assert opts["mc_seed"] == 9 and opts["grid"]["fast"] == [5, 10, 15, 20, 25]
    assert resolve_options({}, "my.py:Thing", seed=1)["grid"] == {}


def test_verdict_rule() -> None:
    robust = robustness_verdict(0.8, 0.05, 3.0, 0.1)
    assert robust["verdict"] == "robust" and len(robust["reasons"]) == 3
    assert robustness_verdict(0.8, 0.05, 3.0, 0.7)["verdict"] == "overfit"
    assert robustness_verdict(-0.2, 0.05, 3.0, 0.1)["verdict"] == "overfit"
    no_edge = robustness_verdict(None, 0.05, 3.0, 0.1)
    assert no_edge["verdict"] == "fragile" and no_edge["checks"]["wf_efficiency"]["grade"] == "bad"
    assert robustness_verdict(0.3, 0.05, 3.0, 0.1)["verdict"] == "fragile"
    assert robustness_verdict(0.8, 0.35, 3.0, None)["verdict"] == "fragile"
    tail = robustness_verdict(0.8, 0.1, -25.0, 0.1)
    assert tail["verdict"] == "fragile" and "5th percentile" in tail["reasons"][-1]
    assert robustness_verdict(0.8, 0.1, 1.0, None)["checks"]["pbo"]["grade"] == "unknown"


def test_every_built_in_has_a_usable_default_grid() -> None:
    from engine.robustness import DEFAULT_GRIDS
    from engine.strategies import BUILTINS
    from engine.sweep_eval import split_valid

    assert set(DEFAULT_GRIDS) == set(BUILTINS)
    for name, grid in DEFAULT_GRIDS.items():
        valid, _ = split_valid(name, expand_grid(normalize_grid(grid)))
        assert len(valid) >= 4, name


@settings(max_examples=60, deadline=None)
@given(n=st.integers(100, 20_000), is_n=st.integers(50, 5_000), oos_n=st.integers(50, 3_000),
       gap=st.integers(0, 300), mode=st.sampled_from(["rolling", "anchored"]))
def test_windows_tile_the_data_or_fail_clearly(n: int, is_n: int, oos_n: int, gap: int, mode: str) -> None:
    try:
        ws = make_windows(n, mode=mode, in_sample=is_n, out_of_sample=oos_n, gap=gap)
    except ValueError as exc:
        assert any(f"`{name}`" in str(exc) for name in ("in_sample", "out_of_sample", "gap"))
        assert is_n < 100 or oos_n < 100 or is_n + gap + oos_n > n
        return
    assert ws[-1].oos_end == n and ws[-1].oos_end - ws[-1].oos_start < 2 * oos_n
    for w in ws:
        assert w.is_end - w.is_start >= 100 and w.oos_end - w.oos_start >= 100
        assert w.oos_start == w.is_end + gap and (w.is_start == 0 if mode == "anchored" else True)
    assert all(a.oos_end == b.oos_start for a, b in zip(ws, ws[1:]))


_TOKENS = ["sharpe_ratio", "drawdown", "return_pct", "1", "2.5", "+", "-", "*", "/", "**", "(", ")", ",", "max",
           "min", "abs", "x", ".", "[", "]", "'", "__class__", " ", "lambda", ":", "=="]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=12))
def test_objective_parser_only_compiles_safe_arithmetic(tokens: list[str]) -> None:
    expr = "".join(tokens)
    try:
        obj = compile_objective(expr)
    except ValueError:
        return  # refused with a clear message; nothing else may escape
    value = obj({"sharpe_ratio": 1.5, "drawdown": 0.0, "return_pct": -3.0})
    assert value is None or isinstance(value, float)
    assert set(obj.names) <= {"sharpe_ratio", "drawdown", "return_pct"}
