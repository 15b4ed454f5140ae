"""One backtest from config to the `backtest_complete` data object (plain JSON).

``run_backtest`` is what the worker processes, the CLI and the paper bots call;
``simulate_strategy`` (engine.simulator) + ``summarise`` are the reusable halves for sweeps and
walk-forward, so every caller gets identical trades and metrics.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from engine.bars import Bars
from engine.config import BacktestConfig
from engine.metrics import compute_metrics
from engine.progress import ProgressFn
from engine.simulator import EXIT_REASONS, SimResult, simulate_strategy
from engine.strategies import make_strategy

__all__ = ["run_backtest", "summarise", "simulate_strategy", "load_bars", "data_json", "to_json",
           "EQUITY_POINTS"]

#: most points of results.equity sent to clients
EQUITY_POINTS = 2000


def run_backtest(config: BacktestConfig, *, bars: Bars | None = None, store: Any = None,
                 progress: ProgressFn | None = None, logger: logging.Logger | None = None) -> dict[str, Any]:
    """Run ``config`` and return the `backtest_complete` data minus ``backtest_id``/``timestamp``.

    Bars come from ``bars`` (cut to the config's dates) or from ``store.load(...)`` (default: the
    local data store). ``progress`` receives throttled reports and may raise
    :class:`~engine.progress.Cancelled`, which propagates. Raises ``ValueError`` for an unusable
    request (unknown strategy, too few bars) and the store's ``DataNotFound`` for missing data.
    """
    started = time.perf_counter()
    bars = load_bars(config, bars, store)
    if config.variant in ("vanilla_full", "spiced_full"):
        from engine.robustness import run_full  # noqa: PLC0415 - only the _full variants need it

        out = run_full(config, bars, progress=progress, logger=logger)
        out["duration_seconds"] = round(time.perf_counter() - started, 4)
        return to_json(out)
    strategy = make_strategy(config.strategy, config.params)
    plan = None
    if config.variant == "spiced":
        from engine.spiced import prepare_spiced  # noqa: PLC0415

        plan = prepare_spiced(bars, strategy, config, logger)
    sim = simulate_strategy(bars, strategy, config, allow_entry=getattr(plan, "allow_entry", None),
                            sizer=getattr(plan, "sizer", None), progress=progress, logger=logger)
    out = summarise(bars, sim, config)
    if plan is not None:
        out["results"]["regime_analytics"] = to_json(plan.analytics(sim))
    out["duration_seconds"] = round(time.perf_counter() - started, 4)
    return out


def load_bars(config: BacktestConfig, bars: Bars | None = None, store: Any = None) -> Bars:
    """The config's bars: ``bars`` cut to its dates, or loaded from ``store`` (default: local store)."""
    if bars is None:
        if store is None:
            from engine.store import DataStore, default_data_dir  # noqa: PLC0415

            store = DataStore(default_data_dir())
        bars = store.load(config.symbol, config.timeframe, config.start_date, config.end_date)
    elif config.start_date or config.end_date:
        bars = bars.between(config.start_date, config.end_date)
    if len(bars) < 2:
        span = f"{config.start_date or 'start'} .. {config.end_date or 'end'}"
        raise ValueError(f"need at least 2 bars of {config.symbol} {config.timeframe} in {span}, "
                         f"got {len(bars)}; widen `start_date`/`end_date`")
    return bars


def data_json(bars: Bars) -> dict[str, Any]:
    """The ``results.data`` object of a run over ``bars`` (says whether the data is synthetic)."""
    return {"symbol": bars.symbol, "timeframe": bars.timeframe, "synthetic": bool(bars.synthetic),
            "source": bars.source, "bars": len(bars), "start": _iso(bars.time[:1])[0],
            "end": _iso(bars.time[-1:])[0]}


def to_json(value: Any) -> Any:
    """``value`` with numpy scalars/arrays made plain and NaN/inf replaced by None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _iso(ns: np.ndarray) -> list[str]:
    s = np.datetime_as_string((np.asarray(ns, dtype=np.int64) // 1_000_000).astype("datetime64[ms]"), unit="ms")
    return np.char.add(s, "Z").tolist()


def _clean(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _number(x: float | None) -> float:
    return 0.0 if x is None else float(x)


def summarise(bars: Bars, sim: SimResult, config: BacktestConfig) -> dict[str, Any]:
    """Metrics and JSON results of a simulation (the `backtest_complete` shape, no duration)."""
    m = compute_metrics(bars.time, bars.close, sim.equity, pnl=sim.pnl, return_pct=sim.return_pct,
                        entry_bar=sim.entry_bar, exit_bar=sim.exit_bar, commission=sim.commission,
                        warmup=sim.warmup)
    metrics = to_json(m)
    results = {
        "metrics": metrics,
        "trades": trades_json(bars, sim),
        "equity": equity_json(bars, sim.equity),
        "open_trade": _open_trade_json(bars, sim),
        "data": data_json(bars),
        "config": to_json(config.to_dict()),
        "blocked_entries": len(sim.blocked_entries),
        "engine_path": sim.path,
    }
    # The spec types these fields as numbers: an undefined statistic (no trades, flat equity) is
    # reported as 0 here and stays null in results.metrics, where "undefined" can be told apart.
    return {
        "final_balance": _number(metrics["equity_final"]),
        "total_trades": int(metrics["total_trades"] or 0),
        "win_rate": _number(metrics["win_rate"]),
        "sharpe_ratio": _number(metrics["sharpe_ratio"]),
        "drawdown": _number(metrics["max_drawdown_pct"]),
        "return_pct": _number(metrics["return_pct"]),
        "duration_seconds": 0.0,
        "results": results,
    }


def trades_json(bars: Bars, sim: SimResult) -> list[dict[str, Any]]:
    """Closed trades as JSON rows (``return_pct`` in percent, times ISO 8601 UTC)."""
    if sim.n_trades == 0:
        return []
    pnl, ret = sim.pnl, sim.return_pct * 100
    finite = bool(np.isfinite(pnl).all() and np.isfinite(ret).all())
    cols = (sim.entry_bar.tolist(), sim.exit_bar.tolist(), _iso(bars.time[sim.entry_bar]),
            _iso(bars.time[sim.exit_bar]), np.where(sim.side > 0, "long", "short").tolist(),
            sim.size.tolist(), sim.entry_price.tolist(), sim.exit_price.tolist(),
            pnl.tolist() if finite else [_clean(x) for x in pnl.tolist()],
            ret.tolist() if finite else [_clean(x) for x in ret.tolist()],
            np.asarray(EXIT_REASONS)[sim.exit_reason].tolist())
    keys = ("entry_bar", "exit_bar", "entry_time", "exit_time", "side", "size", "entry_price",
            "exit_price", "pnl", "return_pct", "exit_reason")
    return [dict(zip(keys, row)) for row in zip(*cols)]


def equity_json(bars: Bars, equity: np.ndarray, points: int = EQUITY_POINTS) -> dict[str, list[Any]]:
    """``{time, equity, drawdown_pct}`` downsampled to at most ``points`` (keeps the deepest drawdown)."""
    n = equity.size
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = (1 - equity / np.maximum.accumulate(equity)) * 100
    if n > points:
        idx = np.linspace(0, n - 1, points - 1).astype(np.int64)
        idx = np.unique(np.append(idx, int(np.nanargmax(dd)) if np.isfinite(dd).any() else 0))
    else:
        idx = np.arange(n)
    return {"time": _iso(bars.time[idx]), "equity": to_json(equity[idx]), "drawdown_pct": to_json(dd[idx])}


def _open_trade_json(bars: Bars, sim: SimResult) -> dict[str, Any] | None:
    t = sim.open_trade
    if t is None:
        return None
    last = float(bars.close[-1])
    unreal = t.side * t.size * (last - t.entry_price) - t.commission
    return to_json({"entry_bar": t.entry_bar, "entry_time": _iso(bars.time[t.entry_bar:t.entry_bar + 1])[0],
                    "side": "long" if t.side > 0 else "short", "size": t.size, "entry_price": t.entry_price,
                    "current_price": last, "unrealized_pnl": unreal, "stop_loss": t.stop_loss,
                    "take_profit": t.take_profit})
