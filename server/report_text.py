"""Plain-text terminal reports of sweeps and ``_full`` (walk-forward / Monte Carlo / PBO) runs."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

_HEADLINE = (("return_pct", "Return %"), ("sharpe_ratio", "Sharpe"), ("drawdown", "Max DD %"),
             ("win_rate", "Win %"), ("total_trades", "Trades"), ("final_balance", "Final balance"))


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals, ints as is, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned first column, right-aligned others, columns sized to fit."""
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _params(p: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in p.items())


def format_sweep(result: Mapping[str, Any], top: int | None = 20) -> str:
    """Ranked table of a :func:`engine.run_sweep` result (best first, ``top`` rows)."""
    rows = result.get("results", [])[:top] if top else result.get("results", [])
    obj = result.get("objective", "sharpe_ratio")
    body = table(["#", "params", obj, "return %", "sharpe", "max dd %", "trades", "win %", "PF"], [
        [str(r["rank"]), _params(r["params"]), r.get("objective_value"), r["metrics"].get("return_pct"),
         r["metrics"].get("sharpe_ratio"), r["metrics"].get("drawdown"), r["metrics"].get("total_trades"),
         r["metrics"].get("win_rate"), r["metrics"].get("profit_factor")] for r in rows])
    data = result.get("data") or {}
    label = f"{data.get('symbol', '?')} {data.get('timeframe', '')}" + (" [SYNTHETIC]" if data.get("synthetic") else "")
    head = (f"Sweep of {result.get('strategy')} on {label} ({data.get('start', '?')} .. {data.get('end', '?')}, "
            f"{data.get('bars', '?')} bars): {result.get('evaluated')} combinations evaluated, "
            f"{result.get('skipped')} skipped, ranked by {obj}, {fmt(result.get('elapsed_seconds'), 3)} s")
    lines = [head, "", body]
    if result.get("skipped_examples"):
        ex = result["skipped_examples"][0]
        lines += ["", f"skipped e.g. {_params(ex['params'])}: {ex['error']}"]
    return "\n".join(lines)


def _walk_forward(wf: Mapping[str, Any]) -> list[str]:
    rows = [[str(w["window"]), f"{w['is_start'][:10]}..{w['is_end'][:10]}", f"{w['oos_start'][:10]}..{w['oos_end'][:10]}",
             _params(w["params"]), w["is_metrics"].get("return_pct"), w["is_metrics"].get("sharpe_ratio"),
             w["oos_metrics"].get("return_pct"), w["oos_metrics"].get("sharpe_ratio"), w["oos_metrics"].get("total_trades")]
            for w in wf.get("windows", [])]
    return [f"Walk-forward ({wf.get('mode')}, in-sample {wf.get('in_sample_bars')} bars, gap {wf.get('gap_bars')}, "
            f"out-of-sample {wf.get('out_of_sample_bars')} bars, objective {wf.get('objective')})",
            table(["win", "in-sample", "out-of-sample", "chosen params", "IS ret %", "IS sharpe",
                   "OOS ret %", "OOS sharpe", "OOS trades"], rows),
            f"Annualised return: in-sample {fmt(wf.get('is_annual_return_pct'))} %, out-of-sample "
            f"{fmt(wf.get('oos_annual_return_pct'))} %; walk-forward efficiency {fmt(wf.get('efficiency'))}"]


def _risk(method: str, m: Mapping[str, Any]) -> list[str]:
    """Probability of loss, VaR and expected shortfall of one method, in words.

    The data keep VaR/ES as losses (positive = money lost); printed bare, a negative VaR reads as
    a loss to most people when it means the bad tail still gains, so the report says which it is.
    """
    var, es = m.get("var_95_pct"), m.get("es_95_pct")
    lines = [f"{method}: probability of loss {fmt(m['prob_loss'] * 100, 1)} %"]
    if var is not None:
        lines.append(f"  95 % value at risk: {fmt(var)} % loss (1 run in 20 ends at {-var:+,.2f} % or worse)" if var > 0
                     else f"  95 % value at risk: no loss (even the worst 1 run in 20 ends at {-var:+,.2f} %)")
    if es is not None:
        lines.append(f"  expected shortfall: {fmt(es)} % loss (the average of those worst runs)" if es > 0
                     else f"  expected shortfall: no loss (those worst runs average {-es:+,.2f} %)")
    return lines


def _monte_carlo(mc: Mapping[str, Any]) -> list[str]:
    head = (f"Monte Carlo: the {mc.get('trades')} out-of-sample trades resampled {mc.get('runs')} times per "
            f"method (seed {mc.get('seed')}), each run a full equity path from the starting balance")
    if not mc.get("trades"):
        return [head, "no out-of-sample trades to resample"]
    rows = []
    for method in ("bootstrap", "shuffle"):
        m = mc.get(method)
        if not m:
            continue
        for key, label in (("final_return_pct", "final return %"), ("max_drawdown_pct", "max drawdown %")):
            rows.append([f"{method} {label}", *(m[key][f"p{p}"] for p in (5, 25, 50, 75, 95))])
    orig = mc.get("original") or {}
    lines = [head, table(["percentile", "p5", "p25", "p50", "p75", "p95"], rows),
             f"actual order: final return {fmt(orig.get('final_return_pct'))} %, max drawdown "
             f"{fmt(orig.get('max_drawdown_pct'))} % (Monte Carlo paths move at trade closes only)",
             "bootstrap draws as many trades with replacement; shuffle keeps every trade in a new order "
             "(the same final return in every run: only the drawdown varies)"]
    for method in ("bootstrap", "shuffle"):
        if mc.get(method):
            lines += _risk(method, mc[method])
    return lines


def _pbo(pbo: Mapping[str, Any]) -> list[str]:
    if pbo.get("pbo") is None:
        return [f"PBO: not computed ({pbo.get('reason', 'unknown')})"]
    return [f"PBO (CSCV, {pbo['blocks']} blocks, {pbo['splits']} splits, {pbo['configs']} configs, "
            f"{pbo['periods']} {pbo.get('period', 'period')}s): {fmt(pbo['pbo'], 3)}; "
            f"degradation slope {fmt(pbo.get('degradation_slope'), 3)}; "
            f"P(OOS Sharpe < 0) {fmt(pbo.get('prob_oos_loss'), 3)}",
            "  (PBO: how often the in-sample best lands below the out-of-sample median; about 0.5 means "
            "the choice is noise, near 0 that the best is truly best; a negative slope: the better a "
            "choice looked in sample, the worse it did out of sample)"]


def _span(wf: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """"data A .. B (N bars), out of sample C .. D (M bars)" from the walk-forward set-up."""
    wins = wf.get("windows") or []
    if not wins:
        return f"{data.get('start', '?')} .. {data.get('end', '?')} ({data.get('bars', '?')} bars)"
    # The first in-sample part starts at the first bar in both modes, and the out-of-sample parts
    # tile the rest, so the whole range is in-sample + gap + the stitched out-of-sample bars.
    total = sum(int(wf.get(k) or 0) for k in ("in_sample_bars", "gap_bars")) + int(data.get("bars") or 0)
    return (f"data {wins[0]['is_start'][:10]} .. {wins[-1]['oos_end'][:10]} ({total} bars); stitched out of "
            f"sample {wins[0]['oos_start'][:10]} .. {wins[-1]['oos_end'][:10]} ({data.get('bars', '?')} bars)")


def format_robustness(results: Mapping[str, Any]) -> str:
    """The walk-forward table, Monte Carlo percentiles, PBO and the verdict of a ``_full`` run's
    ``results`` (what :func:`format_full_report` prints below the headline metrics)."""
    lines: list[str] = []
    if results.get("walk_forward"):
        lines += _walk_forward(results["walk_forward"]) + [""]
    if results.get("monte_carlo"):
        lines += _monte_carlo(results["monte_carlo"]) + [""]
    if results.get("pbo"):
        lines += _pbo(results["pbo"]) + [""]
    verdict = results.get("verdict")
    if verdict:
        lines.append(f"VERDICT: {str(verdict.get('verdict', '?')).upper()}")
        lines += [f"  - {r}" for r in verdict.get("reasons", [])]
    return "\n".join(lines)


def format_full_report(result: Mapping[str, Any]) -> str:
    """The terminal report of a ``vanilla_full`` / ``spiced_full`` result (``backtest_complete`` data).

    Headline metrics of the stitched out-of-sample run, the walk-forward table, Monte Carlo
    percentiles, PBO and the verdict with its reasons.
    """
    res = result.get("results") or {}
    data = res.get("data") or {}
    label = f"{data.get('symbol', '?')} {data.get('timeframe', '')}" + (" [SYNTHETIC]" if data.get("synthetic") else "")
    cfg = res.get("config") or {}
    params = _params(cfg.get("params") or {})
    lines = [f"{cfg.get('variant', 'full')} {cfg.get('strategy', '')}{' ' + params if params else ''} on {label}: "
             f"{_span(res.get('walk_forward') or {}, data)}",
             "Stitched out-of-sample result (what trading each window's choice earned):",
             table([h for _, h in _HEADLINE], [[result.get(k) for k, _ in _HEADLINE]]), "",
             format_robustness(res)]
    return "\n".join(lines)
