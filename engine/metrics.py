"""Performance statistics, defined exactly as backtesting.py 0.6.6 defines them (numpy only).

Differences in presentation only: drawdowns are positive percents, durations are in days, and
undefined values (no trades, no losses, ...) are NaN here and ``None`` in JSON.

* Daily returns: equity at the last bar of each UTC calendar day that has bars, as percent change.
* Annualisation: 252 trading days, or 365 when more than 60 % of a 7-day week's share of bars fall
  on weekends (crypto); the Sharpe ratio is annualised return / annualised volatility with
  backtesting.py's compounding formulas; Sortino uses downside deviation; Calmar is annualised
  return / maximum drawdown.
* Per-trade statistics use each trade's return in percent of its entry price, net of commission;
  the average trade is their geometric mean; profit factor is the sum of winning returns over the
  absolute sum of losing returns; expectancy is the mean trade return in percent.
* Exposure is the share of bars from each closed trade's entry bar to its exit bar inclusive.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

NS_PER_DAY = 86_400 * 1_000_000_000


def _geometric_mean(r: np.ndarray) -> float:
    if r.size == 0:
        return math.nan
    g = np.nan_to_num(r, nan=0.0) + 1
    if np.any(g <= 0):
        return 0.0
    return float(np.exp(np.log(g).sum() / r.size) - 1)


def _day_starts(time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTC day number, index of its first bar) of every calendar day that has bars.

    Binary search per day instead of dividing every timestamp: O(days log bars)."""
    first, last = int(time[0]) // NS_PER_DAY, int(time[-1]) // NS_PER_DAY
    days = np.arange(first, last + 1, dtype=np.int64)
    idx = np.searchsorted(time, days * NS_PER_DAY, "left")
    keep = np.diff(np.append(idx, time.size)) > 0
    return days[keep], idx[keep]


def _annual_days(time: np.ndarray, days: np.ndarray, starts: np.ndarray) -> int:
    tail = time[-100:]
    freq_days = int(np.median(np.diff(tail)) // NS_PER_DAY) if tail.size > 1 else 0
    if freq_days == 7:
        return 52
    if freq_days == 31:
        return 12
    if freq_days == 365:
        return 1
    # share of bars on Saturday/Sunday; 1970-01-01 was a Thursday (Monday = 0)
    per_day = np.diff(np.append(starts, time.size))
    weekend = (days + 3) % 7 >= 5
    have_weekends = per_day[weekend].sum() / time.size > 2 / 7 * 0.6
    return 365 if have_weekends else 252


def daily_returns(time: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """Percent change (as fractions) of equity at the last bar of each calendar day with bars."""
    if time.size == 0:
        return np.zeros(0)
    _, starts = _day_starts(time)
    return _daily_returns(equity, starts)


def _daily_returns(equity: np.ndarray, starts: np.ndarray) -> np.ndarray:
    eq = equity[np.append(starts[1:] - 1, equity.size - 1)]
    return eq[1:] / eq[:-1] - 1 if eq.size > 1 else np.zeros(0)


def _drawdown_periods(dd: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(durations in days, peak drawdowns) of each drawdown period, as backtesting.py finds them."""
    n = dd.size
    iloc = np.flatnonzero(dd == 0)  # sorted already: no np.unique (a sort) needed
    if iloc.size == 0 or iloc[-1] != n - 1:
        iloc = np.append(iloc, n - 1)
    prev, cur = iloc[:-1], iloc[1:]
    sel = cur > prev + 1
    prev, cur = prev[sel], cur[sel]
    if prev.size == 0:
        return np.zeros(0), np.zeros(0)
    durations = (time[cur] - time[prev]) / NS_PER_DAY
    peaks = _segment_max(dd, prev, cur)
    return durations, peaks


def _segment_max(dd: np.ndarray, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    # Segments [prev, cur] are disjoint apart from shared zero end points, so reduceat over the
    # half-open spans plus the end point gives each inclusive maximum.
    bounds = np.empty(2 * prev.size, dtype=np.int64)
    bounds[0::2] = prev
    bounds[1::2] = cur
    red = np.maximum.reduceat(dd, bounds)[0::2]
    return np.maximum(red, dd[cur])


def compute_metrics(time: np.ndarray, close: np.ndarray, equity: np.ndarray, *, pnl: np.ndarray,
                    return_pct: np.ndarray, entry_bar: np.ndarray, exit_bar: np.ndarray,
                    commission: np.ndarray | None = None, warmup: int = 0) -> dict[str, Any]:
    """All statistics of one run; ``return_pct`` are per-trade fractions (0.01 = 1 %)."""
    n = equity.size
    if n == 0:
        raise ValueError("`equity` must have at least one bar")
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = 1 - equity / peak
    max_dd = float(np.nan_to_num(dd.max()))
    dd_dur, dd_peaks = _drawdown_periods(dd, time)
    s: dict[str, Any] = {}
    s["equity_final"] = float(equity[-1])
    s["equity_peak"] = float(equity.max())
    s["return_pct"] = float((equity[-1] - equity[0]) / equity[0] * 100)
    # backtesting.py measures buy & hold from the last warm-up bar (its indicators' NaN count)
    w = min(max(int(warmup) - 1, 0), n - 1)
    s["buy_hold_return_pct"] = float((close[-1] - close[w]) / close[w] * 100)
    s.update(_annualised(time, equity, max_dd))
    s["max_drawdown_pct"] = max_dd * 100
    s["avg_drawdown_pct"] = float(dd_peaks.mean()) * 100 if dd_peaks.size else math.nan
    s["max_drawdown_duration_days"] = float(dd_dur.max()) if dd_dur.size else math.nan
    s["avg_drawdown_duration_days"] = float(dd_dur.mean()) if dd_dur.size else math.nan
    s.update(_trade_stats(time, pnl, return_pct, entry_bar, exit_bar, n))
    if commission is not None:
        s["commissions"] = float(commission.sum())
    return s


def _annualised(time: np.ndarray, equity: np.ndarray, max_dd: float) -> dict[str, float]:
    day_numbers, starts = _day_starts(time)
    days = _annual_days(time, day_numbers, starts)
    dr = _daily_returns(equity, starts)
    g = np.float64(_geometric_mean(dr))
    # numpy floats overflow to inf (then None in JSON) where Python floats would raise
    with np.errstate(all="ignore"):
        ann = float((1 + g) ** days - 1)
        var = np.float64(np.var(dr, ddof=1)) if dr.size > 1 else np.float64(np.nan)
        vol = float(np.sqrt((var + (1 + g) ** 2) ** days - (1 + g) ** (2 * days))) * 100
        years = (int(time[-1]) - int(time[0])) / NS_PER_DAY / 365.25
        cagr = float((np.float64(equity[-1]) / equity[0]) ** (1 / years) - 1) * 100 if years else math.nan
        downside = float(np.sqrt(np.mean(np.minimum(dr, 0) ** 2)) * np.sqrt(days)) if dr.size else math.nan
        sortino = float(np.float64(ann) / np.float64(downside))
    return {"return_ann_pct": ann * 100, "volatility_ann_pct": vol, "cagr_pct": cagr,
            "sharpe_ratio": ann * 100 / (vol or math.nan), "sortino_ratio": sortino,
            "calmar_ratio": ann / (max_dd or math.nan)}


def _trade_stats(time: np.ndarray, pnl: np.ndarray, ret: np.ndarray, entry_bar: np.ndarray,
                 exit_bar: np.ndarray, n: int) -> dict[str, Any]:
    s: dict[str, Any] = {}
    k = int(pnl.size)
    s["total_trades"] = k
    win = float(np.mean(pnl > 0)) if k else math.nan
    s["win_rate"] = win * 100
    s["best_trade_pct"] = float(ret.max()) * 100 if k else math.nan
    s["worst_trade_pct"] = float(ret.min()) * 100 if k else math.nan
    s["avg_trade_pct"] = _geometric_mean(ret) * 100
    dur = (time[exit_bar] - time[entry_bar]) / NS_PER_DAY if k else np.zeros(0)
    s["max_trade_duration_days"] = float(dur.max()) if k else math.nan
    s["avg_trade_duration_days"] = float(dur.mean()) if k else math.nan
    losses = abs(float(ret[ret < 0].sum()))
    s["profit_factor"] = float(ret[ret > 0].sum()) / (losses or math.nan) if k else math.nan
    s["expectancy"] = float(ret.mean()) * 100 if k else math.nan
    s["expectancy_pnl"] = float(pnl.mean()) if k else math.nan
    sd = float(np.std(pnl, ddof=1)) if k > 1 else math.nan
    s["sqn"] = math.sqrt(k) * float(pnl.mean()) / (sd or math.nan) if k else math.nan
    avg_win = float(pnl[pnl > 0].mean()) if np.any(pnl > 0) else math.nan
    avg_loss = -float(pnl[pnl < 0].mean()) if np.any(pnl < 0) else math.nan
    s["kelly_criterion"] = win - (1 - win) / (avg_win / avg_loss) if k else math.nan
    # Exposure as backtesting.py counts it: closed trades only, entry to exit bar inclusive.
    # Trades are sorted and never nest, so the union of [entry, exit] spans is their total
    # length minus the bars shared with the previous span (a reversal shares one bar).
    if k:
        covered = int((exit_bar - entry_bar + 1).sum())
        covered -= int(np.maximum(exit_bar[:-1] - entry_bar[1:] + 1, 0).sum())
        s["exposure_pct"] = covered / n * 100
    else:
        s["exposure_pct"] = 0.0
    return s
