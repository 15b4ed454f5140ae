"""Parameter sweeps: expand a grid, run every valid combination, rank by an objective.

A grid maps parameter names to the values to try: a list (``[5, 10, 20]``), an inclusive range
string ``"a:b:step"`` (``"5:30:5"`` is 5, 10, ..., 30) or a single value. Combinations the
strategy rejects (e.g. ``fast >= slow`` for ``sma_cross``) are skipped and counted, not errors.

The objective is ``sharpe_ratio`` (default), ``return_pct``, ``profit_factor``, ``calmar_ratio``
or an expression of metric names with numbers, ``+ - * /``, unary minus, ``min``, ``max`` and
``abs``, e.g. ``"return_pct / max(drawdown, 1)"``. Higher is better; a combination whose
objective is undefined (None, division by zero) ranks last.
"""
from __future__ import annotations

import ast
import itertools
import json
import math
import operator
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

OBJECTIVES: tuple[str, ...] = ("sharpe_ratio", "return_pct", "profit_factor", "calmar_ratio")
#: The run every combination of a sweep gets. A ``_full`` variant is itself a sweep per window
#: (walk-forward), so it is a backtest variant (``POST /api/backtests``), not a sweep's.
SWEEP_VARIANTS: tuple[str, ...] = ("vanilla", "spiced")
#: Metric names an objective expression may use: the ``backtest_complete`` fields and every
#: statistic of ``results.metrics`` (see engine/metrics.py for their definitions).
METRIC_NAMES: tuple[str, ...] = (
    "final_balance", "total_trades", "win_rate", "sharpe_ratio", "drawdown", "return_pct",
    "equity_final", "equity_peak", "buy_hold_return_pct", "return_ann_pct", "volatility_ann_pct",
    "cagr_pct", "sortino_ratio", "calmar_ratio", "max_drawdown_pct", "avg_drawdown_pct",
    "max_drawdown_duration_days", "avg_drawdown_duration_days", "best_trade_pct", "worst_trade_pct",
    "avg_trade_pct", "max_trade_duration_days", "avg_trade_duration_days", "profit_factor",
    "expectancy", "expectancy_pnl", "sqn", "kelly_criterion", "exposure_pct", "commissions",
)
MAX_COMBINATIONS = 100_000

_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
}
_FUNCS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}


# ---------------------------------------------------------------------------------- grids
def _scalar(text: str) -> Any:
    """``"5"`` -> 5, ``"0.5"`` -> 0.5, anything else stays a string (e.g. ``reversal``)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _range(spec: str, name: str) -> list[Any]:
    parts = spec.split(":")
    nums = [_scalar(p.strip()) for p in parts]
    if len(parts) != 3 or not all(isinstance(v, (int, float)) for v in nums):
        raise ValueError(f"`grid.{name}` range must be 'start:stop:step' numbers, got {spec!r}")
    start, stop, step = nums
    if step <= 0 or stop < start:
        raise ValueError(f"`grid.{name}` range needs step > 0 and stop >= start, got {spec!r}")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    if count > MAX_COMBINATIONS:
        raise ValueError(f"`grid.{name}` range {spec!r} has {count} values; at most {MAX_COMBINATIONS}")
    if all(isinstance(v, int) for v in nums):
        return [start + i * step for i in range(count)]
    # Rounding keeps 0.1:0.3:0.1 at 0.1, 0.2, 0.3 instead of 0.30000000000000004.
    return [round(start + i * step, 10) for i in range(count)]


def _values(value: Any, name: str) -> list[Any]:
    if isinstance(value, str):
        if ":" in value:
            return _range(value, name)
        return [_scalar(v.strip()) for v in value.split(",") if v.strip()] or [value]
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"`grid.{name}` must not be an empty list")
        for v in value:
            if not isinstance(v, (int, float, str, bool)) or (isinstance(v, float) and not math.isfinite(v)):
                raise ValueError(f"`grid.{name}` values must be numbers, strings or booleans, got {v!r}")
        return list(value)
    if isinstance(value, (int, float, bool)):
        return [value]
    raise ValueError(f"`grid.{name}` must be a list of values or a 'start:stop:step' string, got {value!r}")


def normalize_grid(grid: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Expand a grid's values to lists; raises ``ValueError`` naming ``grid.<param>`` when invalid."""
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"`grid` must be a non-empty object of parameter -> values, got {grid!r}")
    out = {}
    for name, value in grid.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"`grid` parameter names must be identifiers, got {name!r}")
        out[name] = _values(value, name)
    total = math.prod(len(v) for v in out.values())
    if total > MAX_COMBINATIONS:
        raise ValueError(f"`grid` has {total} combinations; at most {MAX_COMBINATIONS}")
    return out


def parse_grid_args(items: Sequence[str]) -> dict[str, list[Any]]:
    """Parse CLI ``--grid`` items ``name=start:stop:step`` or ``name=v1,v2,...`` into a grid."""
    grid: dict[str, Any] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ValueError(f"`--grid` must be NAME=START:STOP:STEP or NAME=V1,V2,..., got {item!r}")
        grid[name.strip()] = spec.strip()
    return normalize_grid(grid)


def expand_grid(grid: Mapping[str, Sequence[Any]], base: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every combination of a normalised grid, each merged over ``base`` (fixed parameters)."""
    names = list(grid)
    return [{**(base or {}), **dict(zip(names, vals))} for vals in itertools.product(*grid.values())]


def split_grid(combos: Sequence[Mapping[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """Deal ``combos`` into ``n`` near-equal parts (round-robin, so slow corners spread out)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}")
    parts: list[list[dict[str, Any]]] = [[] for _ in range(min(n, max(1, len(combos))))]
    for i, combo in enumerate(combos):
        parts[i % len(parts)].append(dict(combo))
    return parts


# ------------------------------------------------------------------------------ objective
@dataclass(frozen=True)
class Objective:
    """A compiled objective: call it with a metrics dict to get a float (or None if undefined)."""

    expr: str
    names: tuple[str, ...]
    _tree: ast.Expression

    def __call__(self, metrics: Mapping[str, Any]) -> float | None:
        try:
            value = _eval(self._tree.body, metrics)
        except (ZeroDivisionError, TypeError, OverflowError):
            return None
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _eval(node: ast.AST, metrics: Mapping[str, Any]) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, (int, float))  # _check_node admits numbers only
        return float(node.value)
    if isinstance(node, ast.Name):
        value = metrics.get(node.id)
        if value is None:
            raise TypeError(node.id)
        return float(value)
    if isinstance(node, ast.UnaryOp):
        return -_eval(node.operand, metrics) if isinstance(node.op, ast.USub) else _eval(node.operand, metrics)
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, metrics), _eval(node.right, metrics))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return float(_FUNCS[node.func.id](*(_eval(a, metrics) for a in node.args)))


def _check_node(node: ast.AST, expr: str) -> None:
    bad = f"`objective` may use only metric names {list(METRIC_NAMES)}, numbers, + - * /, unary minus, min, max, abs"
    if isinstance(node, ast.Constant):
        ok = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    elif isinstance(node, ast.Name):
        if node.id not in METRIC_NAMES:
            raise ValueError(f"`objective` {expr!r}: unknown metric {node.id!r}; allowed: {list(METRIC_NAMES)}")
        ok = True
    elif isinstance(node, ast.UnaryOp):
        ok = isinstance(node.op, (ast.USub, ast.UAdd))
    elif isinstance(node, ast.BinOp):
        ok = type(node.op) in _BINOPS
    elif isinstance(node, ast.Call):
        ok = (isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords
              and len(node.args) >= (1 if node.func.id == "abs" else 2) and (node.func.id != "abs" or len(node.args) == 1))
        if ok:
            for arg in node.args:
                _check_node(arg, expr)
            return
    else:
        ok = False
    if not ok:
        raise ValueError(f"{bad}; got {expr!r}")
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.operator, ast.unaryop, ast.expr_context)):
            _check_node(child, expr)


def compile_objective(expr: object) -> Objective:
    """Compile an objective name or expression; ``ValueError`` names what is not allowed."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError(f"`objective` must be one of {list(OBJECTIVES)} or an expression of metrics, got {expr!r}")
    if len(expr) > 500:
        raise ValueError("`objective` expression must be at most 500 characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"`objective` {expr!r} is not a valid expression: {exc.msg}") from None
    _check_node(tree.body, expr)
    names = tuple(sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(_FUNCS)))
    return Objective(expr.strip(), names, tree)


# --------------------------------------------------------------------------------- running
def rank_rows(runs: Sequence[Mapping[str, Any]], objective: Objective) -> list[dict[str, Any]]:
    """Rows ``{rank, params, objective_value, metrics}`` best first; undefined objectives last.

    Ties keep the input order, so a sweep's ranking is deterministic.
    """
    scored = [(objective(r["metrics"]), i, r) for i, r in enumerate(runs)]
    scored.sort(key=lambda t: (t[0] is None, -(t[0] or 0.0), t[1]))
    return [{"rank": k + 1, "params": dict(r["params"]), "objective_value": v, "metrics": r["metrics"]}
            for k, (v, _, r) in enumerate(scored)]


def _combos(config: Any, grid: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[Any]] | None]:
    if isinstance(grid, Mapping):
        norm = normalize_grid(grid)
        return expand_grid(norm, base=config.params), norm
    if isinstance(grid, Sequence) and grid and all(isinstance(c, Mapping) for c in grid):
        return [{**config.params, **c} for c in grid], None
    raise ValueError(f"`grid` must be an object of parameter -> values or a non-empty list of parameter objects, got {grid!r}")


def sweep_errors(config: Any, grid: Mapping[str, Any]) -> dict[str, str]:
    """Field errors of a sweep request whose config and grid each parse on their own (empty when
    fine): a variant a sweep does not run, or a grid in which the strategy accepts no combination.
    A server calls it before queueing, so such a request is refused (400) rather than failing later.
    May import a user strategy file, like :func:`engine.config.parse_config`.
    """
    from engine.sweep_eval import split_valid  # noqa: PLC0415 - keeps parsing import-light

    if config.variant not in SWEEP_VARIANTS:
        return {"variant": f"a sweep runs one of {list(SWEEP_VARIANTS)} per combination, got "
                           f"{config.variant!r} (run {config.variant!r} as a backtest: it sweeps each "
                           "walk-forward window itself)"}
    try:
        combos, _ = _combos(config, grid)
        valid, skipped = split_valid(config.strategy, combos)
    except ValueError as exc:
        return {"grid": str(exc)}
    if not valid:
        return {"grid": _no_valid(config.strategy, skipped)}
    return {}


def _no_valid(strategy: str, skipped: Sequence[Mapping[str, Any]]) -> str:
    example = f"; e.g. {skipped[0]['params']}: {skipped[0]['error']}" if skipped else ""
    return f"`grid` has no valid combination for {strategy!r}{example}"


def run_sweep(config: Any, grid: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
              objective: str = "sharpe_ratio", store: Any = None, bars: Any = None,
              progress: Any = None) -> dict[str, Any]:
    """Evaluate ``config.strategy`` over ``grid`` on the config's bars and rank by ``objective``.

    ``grid`` is a grid object (``{"fast": "5:30:5", "slow": [20, 40]}``) or an explicit list of
    parameter objects (a part from :func:`split_grid`); grid values override ``config.params``.
    Bars come from ``bars`` (cut to the config's dates) or ``store`` (default: the local store).
    ``progress`` gets :class:`~engine.progress.Progress` across the whole grid (bars_processed
    counts bar evaluations: bars x combinations; ``trades_count`` the trades simulated so far;
    ``current_pnl`` the best PnL so far) and may raise ``Cancelled``.

    Returns ``{strategy, objective, grid, combinations, evaluated, skipped, skipped_examples,
    results: [{rank, params, objective_value, metrics}], best, data, elapsed_seconds}``.
    Raises ``ValueError`` for a bad grid/objective, a ``_full`` variant or when no combination is valid.
    """
    from engine.backtest import data_json, load_bars  # noqa: PLC0415 - keeps parsing import-light
    from engine.sweep_eval import Meter, evaluate, split_valid  # noqa: PLC0415

    started = time.perf_counter()
    obj = compile_objective(objective)
    if config.variant not in SWEEP_VARIANTS:
        raise ValueError(f"`variant` of a sweep must be one of {list(SWEEP_VARIANTS)}, got {config.variant!r}")
    combos, norm = _combos(config, grid)
    valid, skipped = split_valid(config.strategy, combos)
    if not valid:
        raise ValueError(_no_valid(config.strategy, skipped))
    bars = load_bars(config, bars, store)
    meter = Meter(progress, len(bars) * len(valid))
    meter.start(int(bars.time[0]))
    runs = evaluate(bars, config, valid, meter=meter, report_runs=True)
    rows = rank_rows([{"params": r.params, "metrics": r.metrics} for r in runs], obj)
    meter.finish()
    return {
        "strategy": config.strategy, "objective": obj.expr, "grid": norm, "combinations": len(combos),
        "evaluated": len(valid), "skipped": len(skipped), "skipped_examples": skipped[:5],
        "results": rows, "best": rows[0], "data": data_json(bars),
        "elapsed_seconds": round(time.perf_counter() - started, 4),
    }


def merge_sweeps(parts: Sequence[Mapping[str, Any]], objective: str = "sharpe_ratio",
                 order: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One ranked result from :func:`run_sweep` results over parts of a grid (e.g. one per worker).

    Counts are summed, ``elapsed_seconds`` is the slowest part (parts run in parallel) and
    ``cpu_seconds`` their sum. ``order`` (the combinations in grid order, e.g. before
    :func:`split_grid`) makes ties rank in grid order, exactly as one :func:`run_sweep` of the
    whole grid ranks them; without it ties keep the parts' order.
    """
    if not parts:
        raise ValueError("`parts` must hold at least one sweep result")
    obj = compile_objective(objective)
    runs = [r for p in parts for r in p["results"]]
    if order is not None:
        # Rows carry their parameters, not their grid position; JSON of the params is the key.
        position = {_key(c): i for i, c in enumerate(order)}
        runs.sort(key=lambda r: position.get(_key(r["params"]), len(position)))
    rows = rank_rows(runs, obj)
    first = parts[0]
    return {
        "strategy": first["strategy"], "objective": obj.expr, "grid": first.get("grid"),
        "combinations": sum(p["combinations"] for p in parts), "evaluated": sum(p["evaluated"] for p in parts),
        "skipped": sum(p["skipped"] for p in parts),
        "skipped_examples": [e for p in parts for e in p.get("skipped_examples", [])][:5],
        "results": rows, "best": rows[0] if rows else None, "data": first.get("data"),
        "elapsed_seconds": max(p["elapsed_seconds"] for p in parts),
        "cpu_seconds": round(sum(p["elapsed_seconds"] for p in parts), 4),
    }


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=repr)
