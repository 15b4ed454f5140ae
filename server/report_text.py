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


def _monte_carlo(mc: Mapping[str, Any]) -> list[str]:
    head = f"Monte Carlo ({mc.get('runs')} runs per method, seed {mc.get('seed')}, {mc.get('trades')} out-of-sample trades)"
    if not mc.get("trades"):
        return [head, "no out-of-sample trades to resample"]
    rows = []
    for method in ("bootstrap", "shuffle"):
        m = mc.get(method)
        if not m:
            continue
        for key, label in (("final_return_pct", "final return %"), ("max_drawdown_pct", "max drawdown %")):
            rows.append([f"{method} {label}", *(m[key][f"p{p}"] for p in (5, 25, 50, 75, 95))])
    lines = [head, table(["", "p5", "p25", "p50", "p75", "p95"], rows)]
    for method in ("bootstrap", "shuffle"):
        m = mc.get(method)
        if m:
            lines.append(f"{method}: P(loss) {fmt(m['prob_loss'] * 100, 1)} %, VaR 95 {fmt(m['var_95_pct'])} %, "
                         f"expected shortfall 95 {fmt(m['es_95_pct'])} % (losses positive)")
    return lines


def _pbo(pbo: Mapping[str, Any]) -> list[str]:
    if pbo.get("pbo") is None:
        return [f"PBO: not computed ({pbo.get('reason', 'unknown')})"]
    return [f"PBO (CSCV, {pbo['blocks']} blocks, {pbo['splits']} splits, {pbo['configs']} configs, "
            f"{pbo['periods']} {pbo.get('period', 'period')}s): {fmt(pbo['pbo'], 3)}; "
            f"degradation slope {fmt(pbo.get('degradation_slope'), 3)}; "
            f"P(OOS Sharpe < 0) {fmt(pbo.get('prob_oos_loss'), 3)}"]


def format_full_report(result: Mapping[str, Any]) -> str:
    """The terminal report of a ``vanilla_full`` / ``spiced_full`` result (``backtest_complete`` data).

    Headline metrics of the stitched out-of-sample run, the walk-forward table, Monte Carlo
    percentiles, PBO and the verdict with its reasons.
    """
    res = result.get("results") or {}
    data = res.get("data") or {}
    label = f"{data.get('symbol', '?')} {data.get('timeframe', '')}" + (" [SYNTHETIC]" if data.get("synthetic") else "")
    cfg = res.get("config") or {}
    lines = [f"{cfg.get('variant', 'full')} {cfg.get('strategy', '')} on {label}, {data.get('start', '?')} .. "
             f"{data.get('end', '?')} ({data.get('bars', '?')} bars)",
             "Stitched out-of-sample result:",
             table([h for _, h in _HEADLINE], [[result.get(k) for k, _ in _HEADLINE]]), ""]
    if res.get("walk_forward"):
        lines += _walk_forward(res["walk_forward"]) + [""]
    if res.get("monte_carlo"):
        lines += _monte_carlo(res["monte_carlo"]) + [""]
    if res.get("pbo"):
        lines += _pbo(res["pbo"]) + [""]
    verdict = res.get("verdict")
    if verdict:
        lines.append(f"VERDICT: {str(verdict.get('verdict', '?')).upper()}")
        lines += [f"  - {r}" for r in verdict.get("reasons", [])]
    return "\n".join(lines)
