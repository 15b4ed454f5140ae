"""The ``vanilla_full`` / ``spiced_full`` variants: walk-forward + Monte Carlo + PBO + a verdict.

Options live in ``config.robustness`` (every one optional):

=============== =========================================================== =====================
option          meaning                                                     default
=============== =========================================================== =====================
grid            parameter -> list of values or ``"start:stop:step"``         per strategy (below)
objective       ranking objective (see :mod:`engine.sweep`)                 ``sharpe_ratio``
wf_mode         ``rolling`` or ``anchored``                                 ``rolling``
in_sample       in-sample bars (int) or fraction of the data (float)        ``0.3``
out_of_sample   out-of-sample bars (int) or fraction                        ``0.1``
gap             bars skipped between in-sample and out-of-sample            ``0``
mc_runs         Monte Carlo runs per method                                 ``1000``
mc_seed         Monte Carlo seed (int or null for fresh randomness)         the config's ``seed``
pbo_blocks      CSCV blocks, even, 2..24                                    ``16``
=============== =========================================================== =====================
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from engine.montecarlo import DEFAULT_RUNS, run_monte_carlo, trade_account_returns
from engine.pbo import DEFAULT_BLOCKS, check_blocks, compute_pbo
from engine.sweep import compile_objective, expand_grid, normalize_grid
from engine.walkforward import (DEFAULT_IN_SAMPLE, DEFAULT_OUT_OF_SAMPLE, WF_MODES, check_size, log_trades,
                                make_windows, run_walk_forward, work_units)

#: Grid used when a ``_full`` run names none, per built-in strategy.
DEFAULT_GRIDS: dict[str, dict[str, str]] = {
    "sma_cross": {"fast": "5:25:5", "slow": "10:60:10"},
    "rsi_reversion": {"period": "7:21:7", "lower": "20:35:5", "upper": "65:80:5"},
    "donchian_breakout": {"period": "10:60:10", "exit_period": "5:20:5"},
    "bollinger_reversion": {"period": "10:40:10", "k": "1.5:2.5:0.5"},
}

DEFAULTS: dict[str, Any] = {
    "objective": "sharpe_ratio", "wf_mode": "rolling", "in_sample": DEFAULT_IN_SAMPLE,
    "out_of_sample": DEFAULT_OUT_OF_SAMPLE, "gap": 0, "mc_runs": DEFAULT_RUNS, "mc_seed": None,
    "pbo_blocks": DEFAULT_BLOCKS,
}
OPTIONS: tuple[str, ...] = ("grid", *DEFAULTS)


def validate_robustness_options(robustness: Mapping[str, Any], strategy: str | None = None,
                                params: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Check ``config.robustness``; returns ``{option: message}`` (empty when all is well).

    With the (valid) ``strategy`` and its fixed ``params``, a ``grid`` of which the strategy
    accepts no combination is an error here, at submission, rather than a failed run later.
    """
    errors: dict[str, str] = {}
    for key in robustness:
        if key not in OPTIONS:
            errors[str(key)] = f"unknown option; allowed: {list(OPTIONS)}"
    checks = {
        "grid": lambda v: normalize_grid(v),
        "objective": lambda v: compile_objective(v),
        "in_sample": lambda v: check_size(v, "in_sample"),
        "out_of_sample": lambda v: check_size(v, "out_of_sample"),
        "gap": lambda v: check_size(v, "gap", allow_zero=True),
        "pbo_blocks": lambda v: check_blocks(v),
    }
    for key, check in checks.items():
        if key in robustness:
            try:
                check(robustness[key])
            except ValueError as exc:
                errors[key] = str(exc)
    if "wf_mode" in robustness and robustness["wf_mode"] not in WF_MODES:
        errors["wf_mode"] = f"must be one of {list(WF_MODES)}, got {robustness['wf_mode']!r}"
    runs = robustness.get("mc_runs", DEFAULT_RUNS)
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= 100_000:
        errors["mc_runs"] = f"must be an integer from 1 to 100000, got {runs!r}"
    seed = robustness.get("mc_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        errors["mc_seed"] = f"must be an integer or null, got {seed!r}"
    if strategy is not None and "grid" in robustness and "grid" not in errors:
        from engine.sweep_eval import split_valid  # noqa: PLC0415 - it imports the strategy registry

        valid, skipped = split_valid(strategy, expand_grid(normalize_grid(robustness["grid"]), base=params or {}))
        if not valid:
            errors["grid"] = (f"no valid combination for {strategy!r}"
                              + (f"; e.g. {skipped[0]['params']}: {skipped[0]['error']}" if skipped else ""))
    return errors


def resolve_options(robustness: Mapping[str, Any], strategy: str, seed: int) -> dict[str, Any]:
    """Options with defaults filled in; ``grid`` normalised (``{}`` when none is known)."""
    opts = {**DEFAULTS, **dict(robustness)}
    if opts["mc_seed"] is None and "mc_seed" not in robustness:
        opts["mc_seed"] = seed
    grid = robustness.get("grid") or DEFAULT_GRIDS.get(strategy) or {}
    opts["grid"] = normalize_grid(grid) if grid else {}
    return opts


# -------------------------------------------------------------------------------- verdict
#: Thresholds of the verdict rule (see :func:`robustness_verdict`).
PBO_GOOD, PBO_BAD = 0.2, 0.5
WFE_GOOD, WFE_BAD = 0.5, 0.0
LOSS_GOOD, LOSS_BAD = 0.2, 0.5


def _grade(value: float | None, good: float, bad: float, higher_is_better: bool) -> str:
    if value is None:
        return "unknown"
    if higher_is_better:
        return "good" if value >= good else ("bad" if value <= bad else "warn")
    return "good" if value <= good else ("bad" if value >= bad else "warn")


def robustness_verdict(wf_efficiency: float | None, mc_prob_loss: float | None,
                       mc_p5_return_pct: float | None, pbo: float | None) -> dict[str, Any]:
    """Combine the three tests into ``{"verdict", "reasons", "checks"}``.

    Each test is graded good / warn / bad:

    - walk-forward efficiency (annualised OOS return / annualised IS return): good >= 0.5,
      bad <= 0 (out-of-sample lost money, or in-sample never made any: reported as None -> bad);
    - Monte Carlo probability of loss (bootstrap): good <= 0.2, bad >= 0.5;
    - PBO: good <= 0.2, bad >= 0.5 (unknown when the grid has fewer than 2 combinations).

    Verdict: ``overfit`` if PBO is bad or the efficiency is <= 0 while in-sample made money (the
    in-sample choice does not carry out of sample); otherwise ``robust`` if every known test is
    good and the Monte Carlo 5th percentile of the final return is above -10 %; otherwise
    ``fragile`` (this includes in-sample winners that lost money: no edge to overfit).
    """
    checks: dict[str, dict[str, Any]] = {
        "wf_efficiency": {"value": wf_efficiency, "grade": _grade(wf_efficiency, WFE_GOOD, WFE_BAD, True)},
        "mc_prob_loss": {"value": mc_prob_loss, "grade": _grade(mc_prob_loss, LOSS_GOOD, LOSS_BAD, False)},
        "pbo": {"value": pbo, "grade": _grade(pbo, PBO_GOOD, PBO_BAD, False)},
    }
    if wf_efficiency is None:
        checks["wf_efficiency"]["grade"] = "bad"
    reasons = [_reason(name, c["value"], c["grade"]) for name, c in checks.items()]
    if checks["pbo"]["grade"] == "bad" or (wf_efficiency is not None and wf_efficiency <= WFE_BAD):
        verdict = "overfit"
    elif all(c["grade"] in ("good", "unknown") for c in checks.values()) and (
            mc_p5_return_pct is None or mc_p5_return_pct > -10.0):
        verdict = "robust"
    else:
        verdict = "fragile"
        if mc_p5_return_pct is not None and mc_p5_return_pct <= -10.0:
            reasons.append(f"Monte Carlo 5th percentile of the final return is {mc_p5_return_pct:.1f}% (<= -10%)")
    return {"verdict": verdict, "reasons": reasons, "checks": checks}


def _reason(name: str, value: float | None, grade: str) -> str:
    label = {"wf_efficiency": "walk-forward efficiency", "mc_prob_loss": "Monte Carlo probability of loss",
             "pbo": "probability of backtest overfitting"}[name]
    if value is None:
        why = {"wf_efficiency": "undefined (in-sample winners did not make money)",
               "mc_prob_loss": "unknown (no out-of-sample trades)",
               "pbo": "unknown (fewer than 2 grid combinations)"}[name]
        return f"{label} {why} [{grade}]"
    return f"{label} {value:.2f} [{grade}]"


# -------------------------------------------------------------------------------- running
def window_problem(config: Any, n_bars: int) -> str | None:
    """Why a ``_full`` run of ``config`` cannot lay walk-forward windows over ``n_bars`` bars
    (the message names the option and the numbers), or None when it can. Lets a daemon refuse
    the request at once instead of failing the run in a worker."""
    opts = resolve_options(config.robustness, config.strategy, config.seed)
    try:
        make_windows(n_bars, mode=opts["wf_mode"], in_sample=opts["in_sample"],
                     out_of_sample=opts["out_of_sample"], gap=opts["gap"])
    except ValueError as exc:
        return str(exc)
    return None


def run_full(config: Any, bars: Any, *, progress: Any = None, logger: logging.Logger | None = None) -> dict[str, Any]:
    """Run a ``vanilla_full`` / ``spiced_full`` config on ``bars``: the ``backtest_complete`` data
    (minus ``backtest_id``/``timestamp``; ``duration_seconds`` left at 0 for the caller).

    Top-level metrics, ``results.trades``/``equity``/``metrics`` are those of the stitched
    out-of-sample run; ``results`` adds ``walk_forward``, ``monte_carlo``, ``pbo``, ``verdict``
    (and ``regime_analytics`` of the stitched run for ``spiced_full``). Progress runs once from 0
    to the total across every window, the PBO sweep and Monte Carlo.
    """
    from engine.backtest import summarise, to_json  # noqa: PLC0415 - backtest imports us lazily
    from engine.sweep_eval import Meter, split_valid  # noqa: PLC0415

    opts = resolve_options(config.robustness, config.strategy, config.seed)
    objective = compile_objective(opts["objective"])
    combos = expand_grid(opts["grid"], base=config.params) if opts["grid"] else [dict(config.params)]
    valid, skipped = split_valid(config.strategy, combos)
    if not valid:
        raise ValueError(f"`robustness.grid` has no valid combination for {config.strategy!r}; "
                         f"e.g. {skipped[0]['params']}: {skipped[0]['error']}")
    windows = make_windows(len(bars), mode=opts["wf_mode"], in_sample=opts["in_sample"],
                           out_of_sample=opts["out_of_sample"], gap=opts["gap"])
    pbo_units = len(bars) * len(valid) if len(valid) > 1 else 0
    meter = Meter(progress, work_units(windows, len(valid)) + pbo_units)
    meter.start(int(bars.time[0]))
    wf = run_walk_forward(bars, config, valid, objective, windows, meter, logger)
    log_trades(logger, config, wf)
    pbo = _pbo(bars, config, valid, opts["pbo_blocks"], meter)
    mc = run_monte_carlo(trade_account_returns(wf.sim.pnl, config.initial_balance),
                         runs=opts["mc_runs"], seed=opts["mc_seed"])
    out = summarise(wf.bars, wf.sim, config)
    res = out["results"]
    for k in wf.window_end:
        res["trades"][k]["exit_reason"] = "window_end"
    boot = mc.get("bootstrap") or {}
    res["walk_forward"] = to_json({**_setup_json(opts, windows, objective.expr),
                                   "combinations": len(combos), "evaluated": len(valid), "skipped": len(skipped),
                                   "windows": wf.rows, **wf.summary})
    res["monte_carlo"] = to_json(mc)
    res["pbo"] = to_json(pbo)
    res["verdict"] = to_json(robustness_verdict(
        wf.summary["efficiency"], boot.get("prob_loss"), (boot.get("final_return_pct") or {}).get("p5"), pbo.get("pbo")))
    if logger is not None:
        logger.info("Robustness verdict: %s (%s)", res["verdict"]["verdict"], "; ".join(res["verdict"]["reasons"]))
    if config.variant == "spiced_full":
        res["regime_analytics"] = _stitched_regimes(wf, config)
    meter.finish(wf.sim.n_trades, float(wf.sim.equity[-1]) - config.initial_balance)
    return out


def _setup_json(opts: Mapping[str, Any], windows: Any, objective: str) -> dict[str, Any]:
    """The walk-forward set-up as it ran (sizes in bars)."""
    w = windows[0]
    return {"mode": opts["wf_mode"], "in_sample_bars": w.is_end - w.is_start,
            "out_of_sample_bars": w.oos_end - w.oos_start, "gap_bars": w.oos_start - w.is_end,
            "objective": objective, "grid": opts["grid"],
            "warmup": "out-of-sample runs start at the in-sample start for indicator warm-up; "
                      "entries only inside the out-of-sample part; open positions closed at its end"}


def _pbo(bars: Any, config: Any, combos: list[dict[str, Any]], blocks: int, meter: Any) -> dict[str, Any]:
    """CSCV over every valid combination's returns on the whole range (daily; per bar if few days)."""
    from engine.sweep_eval import evaluate  # noqa: PLC0415

    if len(combos) < 2:
        return {"pbo": None, "reason": "fewer than 2 grid combinations"}
    day_count = len(np.unique(np.asarray(bars.time) // 86_400_000_000_000))
    period = "day" if day_count >= 4 * blocks else "bar"
    runs = evaluate(bars, config, combos, meter=meter, keep_returns=period)
    matrix = np.column_stack([np.asarray(r.returns) for r in runs])
    try:
        out = compute_pbo(matrix, blocks=blocks)
    except ValueError as exc:
        return {"pbo": None, "reason": str(exc)}
    out["period"] = period
    return out


def _stitched_regimes(wf: Any, config: Any) -> Any:
    """Regime analytics over the stitched out-of-sample bars and trades (sizing stats per window
    are not merged; ``sizing`` describes a fresh plan)."""
    from engine.backtest import to_json  # noqa: PLC0415
    from engine.spiced import prepare_spiced  # noqa: PLC0415
    from engine.strategies import make_strategy  # noqa: PLC0415

    params = wf.rows[-1]["params"]
    # No logger: the per-window runs and log_trades have said all of this already.
    plan = prepare_spiced(wf.bars, make_strategy(config.strategy, params), config, None)
    return to_json(plan.analytics(wf.sim))
