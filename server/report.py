"""Self-contained HTML report of one backtest: one file, inline CSS and SVG, no external URLs.

``render_report(run)`` takes either a stored run as ``GET /api/backtests/{id}`` returns it
(``{backtest_id, status, config, metrics, results, ...}``) or the dict ``engine.run_backtest``
returns (``{final_balance, ..., results}``), so the daemon, the CLI and a notebook share it.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from html import escape
from typing import Any, Mapping, Sequence

#: The spec's headline fields, in the order a reader expects them.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("final_balance", "Final balance"),
    ("return_pct", "Return [%]"),
    ("total_trades", "Trades"),
    ("win_rate", "Win rate [%]"),
    ("sharpe_ratio", "Sharpe ratio"),
    ("drawdown", "Max drawdown [%]"),
    ("duration_seconds", "Run time [s]"),
)
MAX_TRADE_ROWS = 5000
#: Rows shown of any other list in a result section (regime transitions can number thousands).
MAX_SECTION_ROWS = 200
TRADE_COLUMNS: tuple[str, ...] = (
    "entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "pnl", "return_pct",
    "exit_reason",
)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d9df;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.sub{color:#5a6472}.synthetic{background:#b3261e;color:#fff;font-weight:700;padding:10px 14px;border-radius:6px;margin:12px 0;letter-spacing:.03em}
.verdict{border-left:5px solid #2b6cb0;background:#fff;padding:10px 14px;margin:8px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:8px 10px}
.card b{display:block;font-size:18px}.card span{color:#5a6472;font-size:12px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:4px 0 8px}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eef1f4;text-align:left}td.t{text-align:left}
.pos{color:#17803d}.neg{color:#b3261e}.scroll{max-height:520px;max-width:100%;overflow:auto;display:inline-block}
svg{background:#fff;border:1px solid #dde1e6;border-radius:6px;max-width:100%;height:auto}
footer{color:#5a6472;font-size:12px;margin-top:32px}
"""


def _scale(values: Sequence[float], lo: float, hi: float, top: float, bottom: float) -> list[float]:
    span = (hi - lo) or 1.0
    return [bottom - (v - lo) / span * (bottom - top) for v in values]


def equity_svg(equity: Mapping[str, Any], width: int = 1040, height: int = 420) -> str:
    """Inline SVG: the equity curve on top and the drawdown (percent, downwards) beneath it."""
    eq = [float(v) for v in equity.get("equity") or [] if v is not None]
    dd = [abs(float(v or 0.0)) for v in equity.get("drawdown_pct") or []][: len(eq)]
    times = list(equity.get("time") or [])
    if len(eq) < 2:
        return "<p>Not enough equity points to draw.</p>"
    left, right, gap = 70, width - 10, 24
    eq_top, eq_bot = 10, int(height * 0.68)
    dd_top, dd_bot = eq_bot + gap, height - 22
    xs = [left + i * (right - left) / (len(eq) - 1) for i in range(len(eq))]
    lo, hi = min(eq), max(eq)
    ys = _scale(eq, lo, hi, eq_top, eq_bot)
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    dd_max = max(dd) if dd else 0.0
    dys = _scale([-v for v in dd], -(dd_max or 1.0), 0.0, dd_top, dd_bot)
    area = f"{left},{dd_top} " + " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, dys)) + f" {xs[len(dys) - 1]:.1f},{dd_top}"
    t0 = escape(str(times[0])[:10]) if times else ""
    t1 = escape(str(times[-1])[:10]) if times else ""
    return (
        f'<svg class="equity-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="equity curve and drawdown">'
        f'<line x1="{left}" y1="{eq_bot}" x2="{right}" y2="{eq_bot}" stroke="#ccd"/>'
        f'<polyline class="equity" fill="none" stroke="#2b6cb0" stroke-width="1.5" points="{line}"/>'
        f'<polygon class="drawdown" fill="#e5a4a0" stroke="#b3261e" stroke-width="0.8" points="{area}"/>'
        f'<text x="4" y="{eq_top + 10}" font-size="11">{escape(fmt(hi))}</text>'
        f'<text x="4" y="{eq_bot}" font-size="11">{escape(fmt(lo))}</text>'
        f'<text x="4" y="{dd_top + 10}" font-size="11">0%</text>'
        f'<text x="4" y="{dd_bot}" font-size="11">-{escape(fmt(dd_max))}%</text>'
        f'<text x="{left}" y="{height - 6}" font-size="11">{t0}</text>'
        f'<text x="{right}" y="{height - 6}" font-size="11" text-anchor="end">{t1}</text>'
        f'<text x="{right}" y="{eq_top + 10}" font-size="11" text-anchor="end">equity</text>'
        f'<text x="{right}" y="{dd_top + 10}" font-size="11" text-anchor="end">drawdown</text></svg>'
    )


def fmt(value: Any) -> str:
    """A number or value as a reader wants to see it (thousands separators, 4 significant places)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.4g}"
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}" if abs(value) < 1 else f"{value:,.3f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)[:200]
    return str(value)


_SIGNED = ("pnl", "return", "profit", "expectancy", "sharpe")
#: Of a nested record with many fields (a walk-forward window's metrics), the ones a table shows.
KEY_METRICS: tuple[str, ...] = ("return_pct", "sharpe_ratio", "total_trades", "win_rate", "drawdown")


def _cell(value: Any, key: str = "") -> str:
    cls = ' class="t"' if isinstance(value, str) else ""
    signed = any(s in key.lower() for s in _SIGNED)
    if signed and isinstance(value, (int, float)) and not isinstance(value, bool) and value:
        cls = ' class="pos"' if value > 0 else ' class="neg"'
    # Prices keep their pips (1.08777, not 1.088).
    text = f"{value:.6g}" if "price" in key and isinstance(value, float) else fmt(value)
    return f"<td{cls}>{escape(text)}</td>"


def _flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One level of nesting becomes ``key.sub`` columns (big records keep only KEY_METRICS), so
    a table never holds a JSON blob."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            subs = [k for k in KEY_METRICS if k in value] if len(value) > 6 else list(value)
            out.update({f"{key}.{sub}": value[sub] for sub in subs})
        else:
            out[key] = value
    return out


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of dict rows; columns default to the union of keys in first-seen order."""
    rows = [_flat_row(r) for r in rows]
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update({k: None for k in row})
        columns = list(seen)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c), str(c)) for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(items: Mapping[str, Any]) -> str:
    """A two-column name/value table."""
    body = "".join(f'<tr><th>{escape(str(k))}</th>{_cell(v, str(k))}</tr>' for k, v in items.items())
    return f"<table><tbody>{body}</tbody></table>"


def render_value(value: Any, depth: int = 0) -> str:
    """Render any JSON result section readably: scalars, records, tables of records, nesting."""
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            note = (f'<p class="sub">First {MAX_SECTION_ROWS} of {len(value):,} rows.</p>'
                    if len(value) > MAX_SECTION_ROWS else "")
            return f'<div class="scroll">{table(value[:MAX_SECTION_ROWS])}</div>{note}'
        return f"<p>{escape(', '.join(fmt(v) for v in value[:200]))}</p>"
    if not isinstance(value, Mapping):
        return f"<p>{escape(fmt(value))}</p>"
    scalars = {k: v for k, v in value.items() if not isinstance(v, (Mapping, list))}
    nested = {k: v for k, v in value.items() if isinstance(v, (Mapping, list)) and v}
    parts = [kv_table(scalars)] if scalars else []
    flat = {k: v for k, v in nested.items()
            if isinstance(v, Mapping) and all(not isinstance(x, (Mapping, list)) for x in v.values())}
    # Sibling records with the same fields read best as one table (e.g. percentiles per measure).
    grid = {k: v for k, v in flat.items() if sum(list(w) == list(v) for w in flat.values()) >= 2}
    if len(grid) >= 2:  # e.g. {final_return_pct: {p5..p95}, max_drawdown_pct: {p5..p95}}
        parts.append(table([{"": k, **v} for k, v in grid.items()]))
        nested = {k: v for k, v in nested.items() if k not in grid}
    tag = "h3" if depth == 0 else "h4"
    for key, sub in nested.items():
        parts.append(f"<{tag}>{escape(str(key).replace('_', ' '))}</{tag}>{render_value(sub, depth + 1)}")
    return "".join(parts)


def _parts(run: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(headline, results, data, config) from either a stored run or an engine result."""
    results = dict(run.get("results") or {})
    headline = {k: run.get(k) for k, _ in HEADLINE if k in run}
    if isinstance(run.get("metrics"), Mapping):
        headline = {**dict(run["metrics"]), **headline}
    data = dict(results.get("data") or {})
    config = dict(run.get("config") or results.get("config") or {})
    return headline, results, data, config


def is_synthetic(run: Mapping[str, Any]) -> bool:
    """True when the run's data was generated, not market data."""
    _, _, data, config = _parts(run)
    return bool(data.get("synthetic")) or str(config.get("symbol", "")).upper() == "SYNTH"


def _header(run: Mapping[str, Any], data: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    symbol = data.get("symbol") or config.get("symbol") or "?"
    tf = data.get("timeframe") or config.get("timeframe") or "?"
    variant = config.get("variant", "vanilla")
    start = data.get("start") or config.get("start_date") or "first bar"
    end = data.get("end") or config.get("end_date") or "last bar"
    strat = config.get("strategy", "?")
    params = config.get("params") or {}
    ptxt = ", ".join(f"{k}={v}" for k, v in params.items())
    out = [f"<h1>Backtest {escape(symbol)} {escape(tf)} · {escape(str(variant))}</h1>",
           f'<div class="sub">{escape(str(strat))}({escape(ptxt)}) · {escape(str(start))} → {escape(str(end))}'
           f' · {escape(fmt(data.get("bars")))} bars · id {escape(str(run.get("backtest_id", "–")))}</div>']
    if is_synthetic(run):
        out.append('<div class="synthetic">SYNTHETIC DATA: these results come from generated prices, '
                   'not market data. They say nothing about real trading.</div>')
    return "".join(out)


def _stats(headline: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    cards = "".join(f'<div class="card"><b>{escape(fmt(headline.get(k)))}</b><span>{label}</span></div>'
                    for k, label in HEADLINE if k in headline)
    more = {k: v for k, v in metrics.items() if k not in headline and not isinstance(v, (Mapping, list))}
    return f'<h2>Statistics</h2><div class="cards">{cards}</div>' + (kv_table(more) if more else "")


def _trades(results: Mapping[str, Any]) -> str:
    trades = list(results.get("trades") or [])
    note = ""
    if len(trades) > MAX_TRADE_ROWS:
        note = f"<p class=sub>Showing the first {MAX_TRADE_ROWS:,} of {len(trades):,} trades.</p>"
        trades = trades[:MAX_TRADE_ROWS]
    if not trades:
        return "<h2>Trades</h2><p>No trades.</p>"
    cols = [c for c in TRADE_COLUMNS if any(c in t for t in trades)]
    open_trade = results.get("open_trade")
    extra = f"<h3>Open at the end</h3>{kv_table(open_trade)}" if isinstance(open_trade, Mapping) else ""
    return (f"<h2>Trades ({len(results.get('trades') or []):,})</h2>{note}"
            f'<div class="scroll">{table(trades, cols)}</div>{extra}')


def _verdict(results: Mapping[str, Any]) -> str:
    parts = []
    verdict = results.get("verdict")
    if isinstance(verdict, str):
        parts.append(f'<h2>Verdict</h2><div class="verdict"><b>{escape(verdict)}</b></div>')
    elif isinstance(verdict, Mapping):
        reasons = "".join(f"<li>{escape(str(r))}</li>" for r in verdict.get("reasons") or [])
        rest = {k: v for k, v in verdict.items() if k not in ("verdict", "reasons")}
        parts.append(f'<h2>Verdict</h2><div class="verdict"><b>{escape(str(verdict.get("verdict", "")))}</b>'
                     f"<ul>{reasons}</ul></div>{render_value(rest) if rest else ''}")
    return "".join(parts)


def _robustness(results: Mapping[str, Any]) -> str:
    parts = []
    for key, title in (("walk_forward", "Walk-forward optimisation"), ("monte_carlo", "Monte Carlo"),
                       ("pbo", "Probability of backtest overfitting")):
        if results.get(key) is not None:
            parts.append(f"<h2>{title}</h2>{render_value(results[key])}")
    return "".join(parts)


def render_report(run: Mapping[str, Any]) -> str:
    """The whole report as one HTML document (UTF-8, no scripts, no external resources)."""
    if not isinstance(run, Mapping):
        raise TypeError(f"`run` must be a dict (a stored run or an engine result), got {type(run).__name__}")
    headline, results, data, config = _parts(run)
    metrics = dict(results.get("metrics") or {})
    equity = results.get("equity") or {}
    sections = [_header(run, data, config), _stats(headline, metrics), _verdict(results)]
    if equity.get("equity"):
        sections.append("<h2>Equity and drawdown</h2>" + equity_svg(equity, width=1040, height=420))
    if results.get("regime_analytics") is not None:
        sections.append("<h2>Regime analytics</h2>" + render_value(results["regime_analytics"]))
    sections.append(_robustness(results))
    sections.append(_trades(results))
    if config:
        sections.append("<h2>Configuration</h2>" + render_value(config))
    title = f"QuantMindX report {data.get('symbol') or config.get('symbol', '')} {run.get('backtest_id', '')}"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tag = " [SYNTHETIC DATA]" if is_synthetic(run) else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title.strip() + tag)}</title><style>{_CSS}</style></head><body><main>"
            + "".join(sections)
            + f"<footer>Generated by QuantMindX on {stamp}.</footer></main></body></html>\n")
