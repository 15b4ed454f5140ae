"""Walk-forward optimisation: choose parameters on the past, trade them on the future, repeat.

Windows (bar indices, half-open):

- ``rolling``: in-sample ``[s, s + IS)``, optional gap, out-of-sample ``[s + IS + gap, ... + OOS)``;
  the next window starts ``OOS`` bars later, so out-of-sample parts tile the data without overlap.
- ``anchored``: the same, but every in-sample part starts at bar 0 and grows.
- Sizes are bar counts (int) or fractions of the data (float in (0, 1)); each in-sample and
  out-of-sample part needs at least 100 bars. The last out-of-sample part absorbs the few bars left
  at the end that are too few for another window.

In each window the grid is optimised on the in-sample bars only (the strategy gets a slice that
ends at the in-sample end, so no later bar can reach its indicators). The winner then runs on the
out-of-sample part with the preceding in-sample + gap bars as indicator warm-up; entries are only
allowed inside the out-of-sample part and a position still open at its end is closed at that bar's
close. Out-of-sample balances compound: each window starts from the previous window's final balance.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from engine.bars import Bars, ns_to_iso
from engine.config import BacktestConfig
from engine.simulator import SimResult
from engine.sweep import rank_rows
from engine.sweep_eval import Meter, evaluate, flat_metrics, simulate_params

MIN_WINDOW_BARS = 100
WF_MODES: tuple[str, ...] = ("rolling", "anchored")
DEFAULT_IN_SAMPLE = 0.3
DEFAULT_OUT_OF_SAMPLE = 0.1


@dataclass(frozen=True)
class Window:
    """One walk-forward window as half-open bar index ranges."""

    index: int
    is_start: int
    is_end: int
    oos_start: int
    oos_end: int


def check_size(value: object, name: str, *, allow_zero: bool = False) -> None:
    """``ValueError`` unless ``value`` is a bar count (int) or a fraction in (0, 1)."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a bar count (int) or a fraction of the data (float in (0, 1)), got {value!r}")
    if isinstance(value, int) and value < low:
        raise ValueError(f"`{name}` as a bar count must be >= {low}, got {value!r}")
    if isinstance(value, float) and not ((allow_zero and value == 0.0) or 0.0 < value < 1.0):
        raise ValueError(f"`{name}` as a fraction must be in {'[0' if allow_zero else '(0'}, 1), got {value!r}")


def resolve_size(value: int | float, n_bars: int, name: str, *, allow_zero: bool = False) -> int:
    """Bars meant by a size option: an int as is, a float as that fraction of ``n_bars``."""
    check_size(value, name, allow_zero=allow_zero)
    return int(value) if isinstance(value, int) else int(round(value * n_bars))


def make_windows(n_bars: int, *, mode: str = "rolling", in_sample: int | float = DEFAULT_IN_SAMPLE,
                 out_of_sample: int | float = DEFAULT_OUT_OF_SAMPLE, gap: int | float = 0) -> list[Window]:
    """Walk-forward windows over ``n_bars`` bars; ``ValueError`` names the option that does not fit."""
    if mode not in WF_MODES:
        raise ValueError(f"`wf_mode` must be one of {list(WF_MODES)}, got {mode!r}")
    is_n = resolve_size(in_sample, n_bars, "in_sample")
    oos_n = resolve_size(out_of_sample, n_bars, "out_of_sample")
    gap_n = resolve_size(gap, n_bars, "gap", allow_zero=True)
    for name, size, raw in (("in_sample", is_n, in_sample), ("out_of_sample", oos_n, out_of_sample)):
        if size < MIN_WINDOW_BARS:
            raise ValueError(f"`{name}` must give at least {MIN_WINDOW_BARS} bars per window, "
                             f"got {size} bars ({raw!r} of {n_bars} bars)")
    if is_n + gap_n + oos_n > n_bars:
        raise ValueError(f"`in_sample` + `gap` + `out_of_sample` = {is_n} + {gap_n} + {oos_n} bars "
                         f"exceeds the {n_bars} bars of data; use smaller sizes or more data")
    windows: list[Window] = []
    start = 0
    while start + is_n + gap_n + oos_n <= n_bars:
        is_start = 0 if mode == "anchored" else start
        oos_start = start + is_n + gap_n
        windows.append(Window(len(windows), is_start, start + is_n, oos_start, oos_start + oos_n))
        start += oos_n
    last = windows[-1]
    if n_bars - last.oos_end > 0:
        windows[-1] = Window(last.index, last.is_start, last.is_end, last.oos_start, n_bars)
    return windows


def window_table_row(w: Window, dates: Any, params: dict[str, Any], is_metrics: dict[str, Any],
                     oos_metrics: dict[str, Any]) -> dict[str, Any]:
    """One row of the per-window table; ``dates(i)`` gives the ISO time of bar ``i``."""
    return {
        "window": w.index, "is_start": dates(w.is_start), "is_end": dates(w.is_end - 1),
        "oos_start": dates(w.oos_start), "oos_end": dates(w.oos_end - 1),
        "is_bars": w.is_end - w.is_start, "oos_bars": w.oos_end - w.oos_start,
        "params": params, "is_metrics": is_metrics, "oos_metrics": oos_metrics,
    }


# --------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class WalkForward:
    """A finished walk-forward run: the per-window table and the stitched out-of-sample run.

    ``sim`` holds the stitched trades (bar indices relative to ``bars``, the contiguous
    out-of-sample bars) and equity; ``window_end`` the indices of trades closed at a window's end.
    """

    rows: list[dict[str, Any]]
    bars: Bars
    sim: SimResult
    window_end: list[int]
    summary: dict[str, Any]


def work_units(windows: Sequence[Window], n_combos: int) -> int:
    """Bar evaluations a walk-forward run performs (for progress totals)."""
    return sum((w.is_end - w.is_start) * n_combos + (w.oos_end - w.is_start) for w in windows)


def _years(bars: Bars, start: int, stop: int) -> float:
    return max((int(bars.time[stop - 1]) - int(bars.time[start])) / (365.25 * 86400e9), 1e-9)


def _close_at_end(sim: SimResult, bars: Bars, config: BacktestConfig) -> dict[str, np.ndarray]:
    """The run's closed trades plus its open trade closed at the last bar's close (with exit costs)."""
    names = ("entry_bar", "exit_bar", "side", "size", "entry_price", "exit_price", "pnl", "return_pct",
             "commission", "exit_reason")
    arrays = {k: np.asarray(getattr(sim, k)) for k in names}
    t = sim.open_trade
    if t is None:
        return arrays
    c = config.costs
    px = float(bars.close[-1]) - t.side * (c.spread / 2 + c.slippage)  # same arithmetic as an engine exit
    comm = t.commission + t.size * px * c.commission
    extra = {"entry_bar": t.entry_bar, "exit_bar": len(bars) - 1, "side": t.side, "size": t.size,
             "entry_price": t.entry_price, "exit_price": px, "pnl": t.side * t.size * (px - t.entry_price) - comm,
             "return_pct": t.side * (px / t.entry_price - 1) - comm / (t.size * t.entry_price),
             "commission": comm, "exit_reason": 0}
    return {k: np.append(v, extra[k]).astype(v.dtype) for k, v in arrays.items()}


def _segment(arrays: dict[str, np.ndarray], equity: np.ndarray, shift: int, balance: float,
             blocked: list[tuple[int, int]]) -> SimResult:
    moved: dict[str, Any] = dict(arrays)
    moved["entry_bar"] = arrays["entry_bar"] - shift
    moved["exit_bar"] = arrays["exit_bar"] - shift
    return SimResult(**moved, open_trade=None, equity=equity, initial_balance=balance,
                     blocked_entries=blocked)


def _oos_run(bars: Bars, config: BacktestConfig, w: Window, params: dict[str, Any],
             balance: float) -> tuple[SimResult, bool]:
    """The chosen params on ``[is_start, oos_end)``, entries only from the out-of-sample part.

    Runs without a logger: the warm-up's refused entries are not news; the stitched trades are
    logged once the walk-forward is done (``log_trades``).
    """
    run_bars = bars.window(w.is_start, w.oos_end)
    off = w.oos_start - w.is_start
    allow = np.zeros(len(run_bars), dtype=bool)
    allow[off - 1:] = True  # a decision on the bar before fills at the first out-of-sample open
    cfg = replace(config, initial_balance=balance, params=dict(params))
    sim, _ = simulate_params(run_bars, cfg, params, allow_entry=allow)
    arrays = _close_at_end(sim, run_bars, cfg)
    equity = np.array(sim.equity[off:], dtype=float)
    equity[-1] = balance + float(arrays["pnl"].sum())
    blocked = [(b - off, s) for b, s in sim.blocked_entries if b >= off - 1]
    return _segment(arrays, equity, off, balance, blocked), sim.open_trade is not None


def run_walk_forward(bars: Bars, config: BacktestConfig, combos: Sequence[dict[str, Any]], objective: Any,
                     windows: Sequence[Window], meter: Meter, logger: logging.Logger | None = None) -> WalkForward:
    """Optimise ``combos`` on each window's in-sample bars, trade the winner out of sample, stitch."""
    balance = config.initial_balance
    rows, segments, window_end = [], [], []
    n_done = 0
    for w in windows:
        is_bars = bars.window(w.is_start, w.is_end)  # the choice sees in-sample bars only
        ranked = rank_rows([{"params": r.params, "metrics": r.metrics}
                            for r in evaluate(is_bars, config, combos, meter=meter)], objective)
        best = ranked[0]
        seg, forced = _oos_run(bars, config, w, best["params"], balance)
        oos_bars = bars.window(w.oos_start, w.oos_end)
        oos_metrics = flat_metrics(oos_bars, seg)
        n_done += seg.n_trades
        if forced:
            window_end.append(n_done - 1)
        balance = float(seg.equity[-1])
        segments.append((w, seg))
        meter.advance(w.oos_end - w.is_start, int(oos_bars.time[-1]), n_done, balance - config.initial_balance)
        row = window_table_row(w, lambda i: ns_to_iso(int(bars.time[i])), best["params"], best["metrics"], oos_metrics)
        row["is_objective"] = best["objective_value"]
        row["is_annual_return_pct"] = (best["metrics"]["return_pct"] or 0.0) / _years(bars, w.is_start, w.is_end)
        rows.append(row)
        if logger is not None:
            logger.info("Walk-forward window %d/%d: chose %s on %s..%s, out-of-sample return %.2f%%",
                        w.index + 1, len(windows), best["params"], row["is_start"][:10], row["is_end"][:10],
                        oos_metrics["return_pct"] or 0.0)
    return _stitch(bars, config, rows, segments, window_end)


def _stitch(bars: Bars, config: BacktestConfig, rows: list[dict[str, Any]],
            segments: list[tuple[Window, SimResult]], window_end: list[int]) -> WalkForward:
    first = segments[0][0].oos_start
    names = ("entry_bar", "exit_bar", "side", "size", "entry_price", "exit_price", "pnl", "return_pct",
             "commission", "exit_reason")
    arrays: dict[str, Any] = {}
    for k in names:
        parts = [np.asarray(getattr(s, k)) + (w.oos_start - first if k.endswith("_bar") else 0) for w, s in segments]
        arrays[k] = np.concatenate(parts).astype(np.asarray(getattr(segments[0][1], k)).dtype)
    equity = np.concatenate([s.equity for _, s in segments])
    blocked = [(b + w.oos_start - first, side) for w, s in segments for b, side in s.blocked_entries]
    stitched_bars = bars.window(first, segments[-1][0].oos_end)
    sim = SimResult(**arrays, open_trade=None, equity=equity, initial_balance=config.initial_balance,
                    blocked_entries=blocked)
    years = _years(bars, first, segments[-1][0].oos_end)
    oos_ann = (float(equity[-1]) / config.initial_balance - 1) * 100 / years
    is_ann = float(np.mean([r["is_annual_return_pct"] for r in rows]))
    summary = {"is_annual_return_pct": is_ann, "oos_annual_return_pct": oos_ann,
               "efficiency": oos_ann / is_ann if is_ann > 0 else None}
    return WalkForward(rows, stitched_bars, sim, window_end, summary)


def log_trades(logger: logging.Logger | None, config: BacktestConfig, wf: WalkForward) -> None:
    """Log the stitched out-of-sample trades as a plain run logs its trades (capped per run)."""
    from engine.simulator import _log_arrays  # noqa: PLC0415 - the engine's own trade-log format and cap

    names = ("entry_bar", "exit_bar", "side", "size", "entry_price", "exit_price", "pnl", "return_pct",
             "commission", "exit_reason")
    _log_arrays(logger, config, wf.bars, {k: getattr(wf.sim, k) for k in names}, None)
