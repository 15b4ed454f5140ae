"""Running many parameter combinations over the same bars, sharing what can be shared.

Every combination goes through the engine's own ``simulate_strategy`` and ``compute_metrics``,
so a sweep row is exactly what a single backtest of that combination reports. The shared work:
``sma_cross`` without stops in the vanilla variant gets its moving averages from a per-bars cache
(each distinct window computed once, with the engine's own ``sma``), and the bars' calendar
(day boundaries, annualisation) is computed once per bars.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from engine.bars import Bars, ns_to_date
from engine.config import BacktestConfig
from engine.indicators import sma
from engine.metrics import compute_metrics, daily_returns
from engine.progress import Progress, ProgressFn, Throttle
from engine.simulator import SimResult, simulate_strategy
from engine.strategies import make_strategy, validate_strategy
from engine.strategy import Signals, Strategy

SPICED_VARIANTS = ("spiced", "spiced_full")


class Meter:
    """Progress across a whole multi-run job, in bar evaluations: monotonic from 0 to ``total``.

    ``advance(bars, time_ns, trades, pnl)`` adds work done (``trades``/``pnl`` left as None keep
    the last values); reports are throttled to ~10 a second, with the first (0) and the final one
    always sent. A ``Cancelled`` raised by the callback propagates to the caller of ``advance``.
    """

    def __init__(self, fn: ProgressFn | None, total: int) -> None:
        self.fn = fn
        self.total = max(int(total), 1)
        self.done = 0
        self.throttle = Throttle(0.1)
        self.date = ""
        self.trades = 0
        self.pnl = 0.0

    def start(self, time_ns: int | None = None) -> None:
        if time_ns is not None:
            self.date = ns_to_date(time_ns)
        self._send(final=True)

    def advance(self, bars: int, time_ns: int | None = None, trades: int | None = None,
                pnl: float | None = None) -> None:
        self.done = min(self.total, self.done + int(bars))
        if time_ns is not None:
            self.date = ns_to_date(time_ns)
        self.trades = self.trades if trades is None else int(trades)
        self.pnl = self.pnl if pnl is None else float(pnl)
        self._send(final=False)

    def finish(self, trades: int | None = None, pnl: float | None = None) -> None:
        self.advance(self.total, None, trades, pnl)
        self._send(final=True)

    def _send(self, final: bool) -> None:
        if self.fn is not None and self.throttle.ready(final=final):
            self.fn(Progress(bars_processed=self.done, total_bars=self.total, current_date=self.date,
                             trades_count=self.trades, current_pnl=round(self.pnl, 2)))


@dataclass(frozen=True)
class ComboRun:
    """One evaluated combination: its parameters, flat metrics and (optionally) daily returns."""

    params: dict[str, Any]
    metrics: dict[str, Any]
    returns: np.ndarray | None = None


class _Targets(Strategy):
    """A strategy whose decisions were computed elsewhere (the shared-indicator fast path)."""

    name = "sma_cross"

    def __init__(self, target: np.ndarray, warmup: int) -> None:
        super().__init__()
        self._target = target
        self.warmup = warmup

    def signals(self, bars: Bars) -> Signals:
        return Signals(self._target)


class SmaCache:
    """Moving averages of one bars' closes, each window computed once (``sma_cross`` fast path)."""

    def __init__(self, bars: Bars) -> None:
        self.close = bars.close
        self._sma: dict[int, np.ndarray] = {}

    def get(self, period: int) -> np.ndarray:
        if period not in self._sma:
            self._sma[period] = sma(self.close, period)
        return self._sma[period]

    def strategy(self, params: Mapping[str, Any]) -> _Targets:
        # Same decisions as SmaCross.signals: up-cross -> long, down-cross -> short (reversal) or flat.
        # engine.indicators.crossover(a, b) is a[i-1] < b[i-1] and a[i] > b[i]; both directions
        # share the two comparisons, and the few cross bars are set by index, not by mask.
        f, s = self.get(params["fast"]), self.get(params["slow"])
        below, above = f < s, f > s
        target = np.full(self.close.shape[0], np.nan)
        target[np.flatnonzero(above[:-1] & below[1:]) + 1] = -1.0 if params.get("mode", "reversal") == "reversal" else 0.0
        target[np.flatnonzero(below[:-1] & above[1:]) + 1] = 1.0
        return _Targets(target, params["slow"])


#: sma_cross parameters SmaCache reproduces; any other (a future option) takes the engine's own path.
_SMA_FAST_PARAMS = frozenset({"fast", "slow", "mode", "stop_loss_pct", "take_profit_pct"})


def fast_path_applies(config: BacktestConfig, params: Mapping[str, Any]) -> bool:
    """True when ``params`` of ``config.strategy`` can use :class:`SmaCache` (vanilla, no stops)."""
    return (config.strategy == "sma_cross" and config.variant not in SPICED_VARIANTS
            and set(params) <= _SMA_FAST_PARAMS
            and params.get("stop_loss_pct") is None and params.get("take_profit_pct") is None)


def split_valid(strategy: str, combos: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(valid combos, skipped ``{params, error}``) using the strategy's own parameter checks."""
    valid, skipped = [], []
    for combo in combos:
        errors = validate_strategy(strategy, combo)
        if errors:
            skipped.append({"params": dict(combo), "error": "; ".join(f"{k}: {v}" for k, v in errors.items())})
        else:
            valid.append(dict(combo))
    return valid, skipped


def simulate_params(bars: Bars, config: BacktestConfig, params: Mapping[str, Any], *,
                    allow_entry: np.ndarray | None = None, cache: SmaCache | None = None,
                    logger: logging.Logger | None = None) -> tuple[SimResult, Any]:
    """Simulate one combination as ``run_backtest`` would (vanilla or spiced); returns (sim, plan).

    ``allow_entry`` further restricts entries (walk-forward: only inside the out-of-sample part).
    """
    if cache is not None and allow_entry is None and fast_path_applies(config, params):
        return simulate_strategy(bars, cache.strategy(params), config, path="vectorised"), None
    strategy = make_strategy(config.strategy, params)
    plan = None
    if config.variant in SPICED_VARIANTS:
        from engine.spiced import prepare_spiced  # noqa: PLC0415 - only spiced runs need it

        plan = prepare_spiced(bars, strategy, replace(config, params=dict(params)), logger)
        allow_entry = plan.allow_entry if allow_entry is None else plan.allow_entry & allow_entry
    sim = simulate_strategy(bars, strategy, config, allow_entry=allow_entry,
                            sizer=None if plan is None else plan.sizer, logger=logger)
    return sim, plan


def flat_metrics(bars: Bars, sim: SimResult) -> dict[str, Any]:
    """``results.metrics`` plus the ``backtest_complete`` names (final_balance, drawdown) as JSON."""
    from engine.backtest import to_json  # noqa: PLC0415 - backtest imports the robustness layer lazily

    m = compute_metrics(bars.time, bars.close, sim.equity, pnl=sim.pnl, return_pct=sim.return_pct,
                        entry_bar=sim.entry_bar, exit_bar=sim.exit_bar, commission=sim.commission,
                        warmup=sim.warmup)
    m["final_balance"] = m["equity_final"]
    m["drawdown"] = m["max_drawdown_pct"]
    return to_json(m)


def evaluate(bars: Bars, config: BacktestConfig, combos: Sequence[Mapping[str, Any]], *,
             meter: Meter | None = None, keep_returns: str | None = None, report_runs: bool = False,
             logger: logging.Logger | None = None) -> list[ComboRun]:
    """Run every (valid) combination on ``bars``; advances ``meter`` by ``len(bars)`` per combination.

    ``keep_returns``: ``"day"`` keeps each run's daily returns, ``"bar"`` its per-bar returns.
    ``report_runs``: progress shows the trades simulated so far and the best PnL so far (a sweep);
    otherwise the meter's trade count and PnL are left to the caller (a walk-forward run).
    """
    cache = SmaCache(bars)
    out = []
    last_t = int(bars.time[-1]) if len(bars) else None
    trades, best = 0, -float("inf")
    for params in combos:
        sim, _ = simulate_params(bars, config, params, cache=cache, logger=logger)
        metrics = flat_metrics(bars, sim)
        rets = None
        if keep_returns == "day":
            rets = daily_returns(bars.time, sim.equity)
        elif keep_returns == "bar":
            rets = sim.equity[1:] / sim.equity[:-1] - 1.0
        out.append(ComboRun(dict(params), metrics, rets))
        if meter is not None:
            trades += sim.n_trades
            best = max(best, float(sim.equity[-1]) - config.initial_balance)
            meter.advance(len(bars), last_t, trades if report_runs else None, best if report_runs else None)
    return out
