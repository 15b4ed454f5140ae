"""The `spiced` variant: regime detection, a regime filter on entries, risk-based sizing, analytics.

The simulator asks a :class:`SpicedPlan` two things: may an entry decided on bar ``i`` go ahead
(``allow_entry[i]``) and how many units to trade (``sizer(...)``). After the run
``plan.analytics(sim_result)`` becomes ``results["regime_analytics"]``. Detection rules are in
:mod:`engine.regime`, sizing formulas in :mod:`engine.sizing`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, fields
from typing import Any, Mapping, Sequence, TypeVar

import numpy as np

from engine.bars import Bars, ns_to_iso
from engine.regime import (REGIME_NAMES, VOLATILE, RANGING, WARMUP,
                           RegimeParams, Regimes, detect_regimes, transitions)
from engine.sizing import KellyStats, SizingParams, size_entry, sizing_atr

#: Built-in strategies that follow trends (hostile regime: ranging) or revert to the mean
#: (hostile: trends). A user strategy says which it is with a class attribute
#: ``regime_style = "trend"`` or ``"mean_reversion"``.
TREND_STRATEGIES = frozenset({"sma_cross", "donchian_breakout"})
MEAN_REVERSION_STRATEGIES = frozenset({"rsi_reversion", "bollinger_reversion"})

LIST_CAP = 500  # items kept in each analytics list (totals are always exact)
_SIDE = {1: "BUY", -1: "SELL"}

# option -> (kind, low, high, low_inclusive); kind "int" or "float"; defaults live in the
# RegimeParams / SizingParams dataclasses and in _OWN_DEFAULTS.
_NUMERIC: dict[str, tuple[str, float, float, bool]] = {
    "min_confidence": ("float", 0.0, 1.0, True),
    "risk_per_trade": ("float", 0.0, 0.1, False),
    "kelly_cap": ("float", 0.0, 1.0, False),
    "kelly_min_trades": ("int", 1, 100_000, True),
    "kelly_floor": ("float", 0.0, 1.0, True),
    "atr_period": ("int", 1, 10_000, True),
    "atr_stop_mult": ("float", 0.0, 100.0, False),
    "max_leverage": ("float", 0.0, 1000.0, False),
    "size_step": ("float", 0.0, 1e12, False),
    "er_period": ("int", 2, 10_000, True),
    "trend_period": ("int", 2, 10_000, True),
    "vol_window": ("int", 10, 1_000_000, True),
    "er_threshold": ("float", 0.0, 1.0, True),
    "trend_threshold": ("float", 0.0, 1000.0, True),
    "vol_threshold": ("float", 0.0, 1.0, True),
    "vol_ratio": ("float", 0.0, 100.0, True),
    "confirm_bars": ("int", 1, 1000, True),
    "log_limit": ("int", 0, 1_000_000, True),
}
_OWN_DEFAULTS: dict[str, Any] = {"min_confidence": 0.0, "log_limit": 500}
_BOOLS = {"regime_filter": True, "risk_sizing": True}
OPTIONS: tuple[str, ...] = ("blocked_regimes", *_NUMERIC, *_BOOLS)

P = TypeVar("P")


def _params(cls: type[P], options: Mapping[str, Any]) -> P:
    """A detection or sizing parameter dataclass built from the options it knows (the spiced
    options mix both, plus filter options)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in options.items() if k in names})


def _check_number(name: str, value: Any) -> str | None:
    kind, lo, hi, lo_incl = _NUMERIC[name]
    span = f"{'[' if lo_incl else '('}{lo:g}, {hi:g}]"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and not is_int:
        return f"must be an integer in {span}, got {value!r}"
    if not (is_int or isinstance(value, float)) or not math.isfinite(value):
        return f"must be a number in {span}, got {value!r}"
    if value < lo or (value == lo and not lo_incl) or value > hi:
        return f"must be in {span}, got {value!r}"
    return None


def _regime_list(value: Any) -> list[str] | None:
    """``blocked_regimes`` as a list of names (a CLI gives "volatile,ranging"), or None if invalid."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        return None
    ok = all(isinstance(v, str) and v in REGIME_NAMES for v in value)
    return list(value) if ok else None


def validate_spiced_options(spiced: Mapping[str, Any]) -> dict[str, str]:
    """Check the `spiced` options of a backtest request; returns option -> message (empty when fine)."""
    errors: dict[str, str] = {}
    for key, value in spiced.items():
        if key == "blocked_regimes":
            if _regime_list(value) is None:
                errors[key] = (f"must be a list (or comma-separated string) drawn from "
                               f"{list(REGIME_NAMES)}, got {value!r}")
        elif key in _BOOLS:
            if not isinstance(value, bool):
                errors[key] = f"must be true or false, got {value!r}"
        elif key in _NUMERIC:
            message = _check_number(key, value)
            if message:
                errors[key] = message
        else:
            errors[str(key)] = f"unknown option; allowed: {list(OPTIONS)}"
    return errors


def default_blocked_regimes(strategy_name: str, strategy: object = None) -> list[str]:
    """Hostile regimes for a strategy: always ``volatile``; plus ``ranging`` for trend followers,
    ``trending_up``/``trending_down`` for mean reversion (built-ins by name, others by ``regime_style``)."""
    style = getattr(strategy, "regime_style", None)
    if strategy_name in TREND_STRATEGIES or style == "trend":
        return ["volatile", "ranging"]
    if strategy_name in MEAN_REVERSION_STRATEGIES or style == "mean_reversion":
        return ["volatile", "trending_up", "trending_down"]
    return ["volatile"]


def resolve_options(spiced: Mapping[str, Any], strategy_name: str,
                    strategy: object = None) -> dict[str, Any]:
    """Every option with its default filled in; raises ``ValueError`` on an invalid one."""
    errors = validate_spiced_options(spiced)
    if errors:
        raise ValueError("; ".join(f"`spiced.{k}` {v}" for k, v in errors.items()))
    out: dict[str, Any] = {**asdict(RegimeParams()), **asdict(SizingParams()), **_OWN_DEFAULTS, **_BOOLS}
    out["blocked_regimes"] = default_blocked_regimes(strategy_name, strategy)
    out.update({k: (_regime_list(v) if k == "blocked_regimes" else v) for k, v in spiced.items()})
    return out


def _measures(reg: Regimes, i: int, label: int) -> str:
    """The measure behind a label, as a user reads it in logs and reasons."""
    if label == VOLATILE:
        return f"ATR pct {reg.vol_pct[i]:.2f}, ratio {reg.vol_ratio[i]:.2f}"
    if label == RANGING:
        return f"ER {reg.efficiency[i]:.2f}"
    if label == WARMUP:
        return "measures not yet defined"
    return f"ER {reg.efficiency[i]:.2f}, trend {reg.trend[i]:+.2f}"


def _json_num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class SpicedPlan:
    """What the simulator consults for a spiced run. Built by :func:`prepare_spiced`; one per run.

    ``allow_entry[i]`` is False when an entry decided on bar ``i`` must be blocked;
    :meth:`sizer` returns units for an allowed entry (0 skips it); :meth:`analytics` summarises.
    """

    def __init__(self, bars: Bars, regimes: Regimes, options: dict[str, Any],
                 default_units: float, logger: logging.Logger | None) -> None:
        self.bars = bars
        self.regimes = regimes
        self.options = options
        self.default_units = float(default_units)
        self.sizing = _params(SizingParams, options)
        # No logger, or one that drops INFO: a quiet run (sweeps, bot replays), as in the simulator.
        self.log = logger if logger is not None and logger.isEnabledFor(logging.INFO) else None
        blocked = [REGIME_NAMES.index(r) for r in options["blocked_regimes"]]
        hostile = np.isin(regimes.labels, blocked) & (regimes.confidence >= options["min_confidence"])
        self.allow_entry: np.ndarray = ~hostile if options["regime_filter"] else np.ones(len(bars), bool)
        self.changes = transitions(regimes.labels)
        self._atr = sizing_atr(bars.high, bars.low, bars.close, self.sizing.atr_period)
        self._kelly = KellyStats()
        self._logged = 0          # log lines written so far (capped at log_limit)
        self._unlogged = 0        # lines suppressed by the cap
        self._next_change = 0     # index into self.changes of the next regime change to log
        self._finished = False    # the end-of-run log lines are written
        self.skipped: list[tuple[int, int, str | None]] = []   # entries the sizer turned down
        self._sized = self._capped = 0
        self._units_sum = 0.0
        self._last_multiplier = 1.0

    # -- logging -------------------------------------------------------------------------------
    def _info(self, message: str) -> None:
        if self._logged < self.options["log_limit"]:
            self._logged += 1
            if self.log is not None:
                # stacklevel=2: the record names the caller (the function that saw the regime
                # change or filtered the entry), not this helper.
                self.log.info(message, stacklevel=2)
        else:
            self._unlogged += 1

    def _flush_changes(self, upto: int) -> None:
        """Log regime changes on bars ``<= upto`` not yet logged (the log stays in bar order)."""
        while self._next_change < self.changes.size and self.changes[self._next_change] <= upto:
            i = int(self.changes[self._next_change])
            self._next_change += 1
            old, new = int(self.regimes.labels[i - 1]), int(self.regimes.labels[i])
            self._info(f"Regime change: {REGIME_NAMES[old]} -> {REGIME_NAMES[new]} at "
                       f"{ns_to_iso(self.bars.time[i])} (bar {i}; {_measures(self.regimes, i, new)})")

    # -- sizing --------------------------------------------------------------------------------
    def sizer(self, i: int, side: int, ref_price: float, stop_price: float | None,
              equity: float, closed_pnls: Sequence[float]) -> float:
        """Units for an entry decided on bar ``i`` (``side`` 1 buy, -1 sell); 0 skips the entry."""
        if not self.options["risk_sizing"]:
            return self.default_units
        self._kelly.update(closed_pnls)
        d = size_entry(self.sizing, equity=equity, ref_price=ref_price, stop_price=stop_price,
                       atr_value=float(self._atr[i]), kelly_f=self._kelly.fraction(self.sizing.kelly_min_trades))
        self._last_multiplier = d.multiplier
        if d.units <= 0:
            self.skipped.append((i, side, f"sizing: {d.reason}"))
            self._info(f"Entry skipped: {_SIDE.get(side, side)} sized to 0 units ({d.reason}) at "
                       f"{ns_to_iso(self.bars.time[i])} (bar {i})")
            return 0.0
        self._sized += 1
        self._capped += d.leverage_capped
        self._units_sum += d.units
        return d.units

    # -- analytics -----------------------------------------------------------------------------
    def block_reason(self, i: int, side: int) -> str:
        """Why an entry decided on bar ``i`` is refused by ``allow_entry`` (one log-ready phrase)."""
        label = int(self.regimes.labels[i])
        if self.allow_entry[i]:
            return f"{_SIDE.get(side, side)} {self._not_regime(i)}"
        return (f"{_SIDE.get(side, side)} blocked in regime {REGIME_NAMES[label]} "
                f"({_measures(self.regimes, i, label)})")

    def _filtered(self, sim: Any) -> list[tuple[int, int, str | None]]:
        """Every refused entry in bar order: (bar, side, sizing reason or None for a regime block)."""
        # A caller may refuse entries with its own mask too (walk-forward: outside the traded
        # window); those are listed with what they are, not blamed on a regime.
        allow = self.allow_entry
        rows: list[tuple[int, int, str | None]] = [
            (int(i), int(side), self._not_regime(int(i)) if allow[i] else None)
            for i, side in getattr(sim, "blocked_entries", [])]
        if self.skipped:
            rows += self.skipped
            rows.sort(key=lambda r: r[0])
        return rows

    def _not_regime(self, i: int) -> str:
        return f"refused by the run's entry mask (regime {self.regimes.name(i)} is not blocked)"

    def _reason(self, i: int, sizing: str | None) -> str:
        label = int(self.regimes.labels[i])
        if sizing is not None:
            return sizing
        return f"regime {REGIME_NAMES[label]} is blocked ({_measures(self.regimes, i, label)})"

    def _log_rest(self, filtered: list[tuple[int, int, str | None]]) -> None:
        """Log regime changes and filtered entries merged in bar order, so that ``log_limit`` keeps
        the earliest of both kinds; then one line for what the cap hid."""
        if self._finished:
            return  # analytics() may be asked twice; the log says everything once
        self._finished = True
        limit = self.options["log_limit"]
        blocks = [(i, side) for i, side, sizing in filtered if sizing is None]
        k = 0
        while k < len(blocks) and self._logged < limit:
            i, side = blocks[k]
            self._flush_changes(i)
            if self._logged < limit:
                self._info(f"Entry filtered: {self.block_reason(i, side)} at "
                           f"{ns_to_iso(self.bars.time[i])} (bar {i})")
                k += 1
        if self._logged < limit:
            self._flush_changes(len(self.bars))
        # Past the cap, count what is left instead of formatting lines nobody will see.
        self._unlogged += len(blocks) - k + self.changes.size - self._next_change
        self._next_change = self.changes.size
        if self._unlogged and self.log is not None:
            self.log.info("%d further regime log lines not logged (log_limit %d per run); "
                          "see results.regime_analytics", self._unlogged, limit)

    def _performance(self, sim: Any) -> dict[str, dict[str, Any]]:
        """Closed trades grouped by the regime of the bar their entry was decided on."""
        entry = np.asarray(getattr(sim, "entry_bar", []), dtype=np.int64)
        pnl = np.asarray(getattr(sim, "pnl", []), dtype=np.float64)
        decided = self.regimes.labels[np.maximum(entry - 1, 0)] if entry.size else entry
        out = {}
        for code, name in enumerate(REGIME_NAMES):
            p = pnl[decided == code]
            wins = int(np.count_nonzero(p > 0))
            out[name] = {"trades": int(p.size), "wins": wins,
                         "win_rate": round(100.0 * wins / p.size, 4) if p.size else None,
                         "pnl": round(float(p.sum()), 2),
                         "avg_pnl": round(float(p.mean()), 2) if p.size else None}
        return out

    def analytics(self, sim: Any) -> dict[str, Any]:
        """``results["regime_analytics"]`` of a finished run (plain JSON values; see the README, "The spiced variant")."""
        reg, n = self.regimes, len(self.bars)
        counts = np.bincount(reg.labels, minlength=len(REGIME_NAMES))
        filtered = self._filtered(sim)
        self._log_rest(filtered)
        blocked_bars = np.array([i for i, _, sizing in filtered if sizing is None], dtype=np.int64)
        by_regime = np.bincount(reg.labels[blocked_bars], minlength=len(REGIME_NAMES))
        changes = self.changes[:LIST_CAP].tolist()
        last = n - 1
        return {
            "regimes": list(REGIME_NAMES),
            "bars_per_regime": {name: {"bars": int(c), "pct": round(100.0 * c / n, 2) if n else 0.0}
                                for name, c in zip(REGIME_NAMES, counts.tolist())},
            "current_regime": reg.name(last) if n else "warmup",
            "transitions": [{"time": ns_to_iso(self.bars.time[i]), "bar": i,
                             "from": reg.name(i - 1), "to": reg.name(i)} for i in changes],
            "transitions_total": int(self.changes.size),
            "filtered_trades": [{"time": ns_to_iso(self.bars.time[i]), "bar": i,
                                 "side": "long" if side > 0 else "short", "regime": reg.name(i),
                                 "reason": self._reason(i, sizing)} for i, side, sizing in filtered[:LIST_CAP]],
            "filtered_total": len(filtered),
            "filtered_by_regime": dict(zip(REGIME_NAMES, by_regime.tolist())),
            "skipped_by_sizing": len(self.skipped),
            "refused_by_mask": sum(1 for r in filtered if r[2] is not None and r[2].startswith("refused")),
            "performance_by_regime": self._performance(sim),
            "sizing": self._sizing_summary(),
            "warmup_bars": int(np.argmax(reg.labels != WARMUP)) if (reg.labels != WARMUP).any() else n,
            "last_measures": {} if not n else {
                "efficiency_ratio": _json_num(reg.efficiency[last]), "trend": _json_num(reg.trend[last]),
                "vol_pct": _json_num(reg.vol_pct[last]), "vol_ratio": _json_num(reg.vol_ratio[last]),
                "atr": _json_num(reg.atr[last])},
            "options": dict(self.options),
        }

    def _sizing_summary(self) -> dict[str, Any]:
        return {"enabled": bool(self.options["risk_sizing"]), "entries_sized": self._sized,
                "entries_skipped": len(self.skipped), "leverage_capped": self._capped,
                "avg_units": round(self._units_sum / self._sized, 4) if self._sized else None,
                "kelly_fraction": _json_num(f) if (f := self._kelly.fraction(self.sizing.kelly_min_trades))
                is not None else None,
                "kelly_multiplier": self._last_multiplier, "closed_trades_seen": self._kelly.seen}


# The last detection, keyed on the very arrays it ran over: a sweep or walk-forward window runs
# many parameter combinations over the same bars, and detection does not depend on them.
# (Identity, not equality: new or sliced arrays always miss. It keeps one run's arrays alive,
# about 70 bytes a bar, until the next spiced run.)
_LAST: tuple[tuple[Any, ...], Regimes] | None = None


def _detect(bars: Bars, params: RegimeParams) -> Regimes:
    global _LAST
    key = (bars.high, bars.low, bars.close, params)
    last = _LAST
    if last is not None and all(a is b for a, b in zip(last[0][:3], key[:3])) and last[0][3] == params:
        return last[1]
    regimes = detect_regimes(bars.high, bars.low, bars.close, params)
    _LAST = (key, regimes)
    return regimes


def prepare_spiced(bars: Bars, strategy: Any, config: Any, logger: logging.Logger | None = None) -> SpicedPlan:
    """Detect regimes over ``bars`` and build the plan the simulator consults for a spiced run.

    ``config`` is the :class:`~engine.config.BacktestConfig` (its ``spiced`` options, ``strategy``
    name and ``units``); ``strategy`` the strategy instance (for ``regime_style``). Raises
    ``ValueError`` naming an invalid option.
    """
    name = config.strategy if ":" not in str(config.strategy) else getattr(strategy, "name", "")
    options = resolve_options(config.spiced, name, strategy)
    regimes = _detect(bars, _params(RegimeParams, options))
    plan = SpicedPlan(bars, regimes, options, config.units, logger)
    counts = np.bincount(regimes.labels, minlength=len(REGIME_NAMES))
    share = ", ".join(f"{REGIME_NAMES[k]} {100.0 * c / max(len(bars), 1):.1f}%"
                      for k, c in enumerate(counts.tolist()) if c)
    blocked = options["blocked_regimes"] if options["regime_filter"] else []
    plan._info(f"Regime detection on {len(bars)} bars: {share}; {plan.changes.size} regime changes; "
               f"entries blocked in {blocked}")
    return plan
