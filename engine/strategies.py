"""Built-in strategies, the registry, and loading/validating strategies by name or file.

Every built-in has the vectorised fast path (``signals``) and an equivalent per-bar ``next``
(which the tests hold to identical trades). Each also takes ``stop_loss_pct`` and
``take_profit_pct`` (percent of the entry fill price; the simulator handles them).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine.bars import Bars
from engine.indicators import bollinger, crosses, rolling_max, rolling_min, rsi, smas
from engine.strategy import RISK_PARAMS, Param, Signals, Strategy, load_strategy_file

__all__ = ["BUILTINS", "SmaCross", "RsiReversion", "DonchianBreakout", "BollingerReversion",
           "describe_strategies", "validate_strategy", "load_strategy", "make_strategy"]

_ALLOW_SHORT = Param("allow_short", True, bool, "also take short trades (false: long or flat only)")


def _cross_targets(up: np.ndarray, down: np.ndarray, short: bool) -> np.ndarray:
    target = np.full(up.shape[0], np.nan)
    target[down] = -1.0 if short else 0.0
    target[up] = 1.0
    return target


class SmaCross(Strategy):
    """Moving-average crossover. Buys when the fast SMA crosses above the slow SMA (fast < slow
    on the previous bar and fast > slow on this bar, strictly) and sells on the opposite cross.
    ``reversal``: after the first cross always in the market, reversing on each cross;
    ``long_only``: long after an up-cross, flat after a down-cross. After a stop-loss or
    take-profit exit it stays flat until the next cross."""

    name = "sma_cross"
    fast: int
    slow: int
    mode: str
    params = (
        Param("fast", 10, int, "fast SMA period in bars (must be < slow)", min=1, max=100_000),
        Param("slow", 20, int, "slow SMA period in bars", min=2, max=100_000),
        Param("mode", "reversal", str, "reversal: always in the market after the first cross; "
              "long_only: long or flat", choices=("reversal", "long_only")),
        *RISK_PARAMS,
    )

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> dict[str, str]:
        if values["fast"] >= values["slow"]:
            return {"params.fast": f"must be < slow ({values['slow']}), got {values['fast']}"}
        return {}

    def init(self, bars: Bars) -> None:
        self.warmup = self.slow
        self.f, self.s = smas(bars.close, self.fast, self.slow)
        self.down_side = -1 if self.mode == "reversal" else 0

    def prepare_next(self) -> None:
        self.fl, self.sl_ = self.f.tolist(), self.s.tolist()

    def signals(self, bars: Bars) -> Signals:
        return Signals(_cross_targets(*crosses(self.f, self.s), self.mode == "reversal"))

    def next(self, i: int, position: int) -> int | None:
        f, s = self.fl, self.sl_
        if f[i - 1] < s[i - 1] and f[i] > s[i]:
            return 1
        if f[i - 1] > s[i - 1] and f[i] < s[i]:
            return self.down_side
        return None


class RsiReversion(Strategy):
    """RSI mean reversion. Long when RSI < ``lower``, short when RSI > ``upper``; flat when RSI
    crosses ``exit_level`` in either direction. RSI is Cutler's (simple averages of gains and
    losses over ``period`` bars)."""

    name = "rsi_reversion"
    period: int
    lower: float
    upper: float
    exit_level: float
    allow_short: bool
    params = (
        Param("period", 14, int, "RSI period in bars", min=2, max=10_000),
        Param("lower", 30.0, float, "oversold level: go long below it", min=0, max=100),
        Param("upper", 70.0, float, "overbought level: go short above it", min=0, max=100),
        Param("exit_level", 50.0, float, "close the position when RSI crosses this level", min=0, max=100),
        _ALLOW_SHORT,
        *RISK_PARAMS,
    )

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> dict[str, str]:
        if not values["lower"] < values["exit_level"] < values["upper"]:
            return {"params.exit_level": f"must lie strictly between lower ({values['lower']}) and "
                                         f"upper ({values['upper']}), got {values['exit_level']}"}
        return {}

    def init(self, bars: Bars) -> None:
        self.warmup = self.period  # first bar with an RSI value
        self.r = rsi(bars.close, self.period)

    def prepare_next(self) -> None:
        self.rl = self.r.tolist()

    def signals(self, bars: Bars) -> Signals:
        r, lvl = self.r, np.full(self.r.shape[0], float(self.exit_level))
        target = np.full(r.shape[0], np.nan)
        target[np.logical_or(*crosses(r, lvl))] = 0.0
        if self.allow_short:
            target[r > self.upper] = -1.0
        target[r < self.lower] = 1.0
        return Signals(target)

    def next(self, i: int, position: int) -> int | None:
        r, prev = self.rl[i], self.rl[i - 1]
        if r < self.lower:
            return 1
        if self.allow_short and r > self.upper:
            return -1
        x = self.exit_level
        if (prev < x and r > x) or (prev > x and r < x):
            return 0
        return None


class DonchianBreakout(Strategy):
    """Channel breakout. Long when the close breaks above the highest high of the previous
    ``period`` bars, short when it breaks below the lowest low; a long exits when the close falls
    below the lowest low of the previous ``exit_period`` bars (a short, above the highest high).
    A breakout the other way reverses the position."""

    name = "donchian_breakout"
    period: int
    exit_period: int
    allow_short: bool
    params = (
        Param("period", 20, int, "entry channel length in bars", min=1, max=100_000),
        Param("exit_period", 10, int, "exit channel length in bars", min=1, max=100_000),
        _ALLOW_SHORT,
        *RISK_PARAMS,
    )

    def init(self, bars: Bars) -> None:
        self.warmup = min(self.period, self.exit_period)  # first bar with a channel value
        n = len(bars)

        def prev(a: np.ndarray) -> np.ndarray:  # the channel of the bars before i, not including i
            out = np.full(n, np.nan)
            out[1:] = a[:-1]
            return out

        c = bars.close
        self.le = c > prev(rolling_max(bars.high, self.period))
        self.se = (c < prev(rolling_min(bars.low, self.period))) & self.allow_short
        self.lx = c < prev(rolling_min(bars.low, self.exit_period))
        self.sx = c > prev(rolling_max(bars.high, self.exit_period))

    def prepare_next(self) -> None:
        self.lists = [a.tolist() for a in (self.le, self.se, self.lx, self.sx)]

    def signals(self, bars: Bars) -> Signals:
        return Signals.from_entries_exits(self.le, self.lx, self.se, self.sx)

    def next(self, i: int, position: int) -> int | None:
        le, se, lx, sx = self.lists
        if le[i]:
            return 1
        if se[i]:
            return -1
        if (position > 0 and lx[i]) or (position < 0 and sx[i]):
            return 0
        return None


class BollingerReversion(Strategy):
    """Bollinger-band mean reversion. Long when the close is below the lower band, short when
    above the upper band; flat when the close crosses the middle band (the SMA)."""

    name = "bollinger_reversion"
    period: int
    k: float
    allow_short: bool
    params = (
        Param("period", 20, int, "SMA and standard-deviation window in bars", min=2, max=100_000),
        Param("k", 2.0, float, "band width in standard deviations", min=0.1, max=10.0),
        _ALLOW_SHORT,
        *RISK_PARAMS,
    )

    def init(self, bars: Bars) -> None:
        self.warmup = self.period - 1  # first bar with band values
        self.lo, self.mid, self.up = bollinger(bars.close, self.period, self.k)
        self.close = bars.close

    def prepare_next(self) -> None:
        self.lists = [a.tolist() for a in (self.close, self.lo, self.mid, self.up)]

    def signals(self, bars: Bars) -> Signals:
        c = self.close
        target = np.full(c.shape[0], np.nan)
        target[np.logical_or(*crosses(c, self.mid))] = 0.0
        if self.allow_short:
            target[c > self.up] = -1.0
        target[c < self.lo] = 1.0
        return Signals(target)

    def next(self, i: int, position: int) -> int | None:
        c, lo, mid, up = self.lists
        if c[i] < lo[i]:
            return 1
        if self.allow_short and c[i] > up[i]:
            return -1
        if (c[i - 1] < mid[i - 1] and c[i] > mid[i]) or (c[i - 1] > mid[i - 1] and c[i] < mid[i]):
            return 0
        return None


#: name -> class of every built-in strategy
BUILTINS: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (SmaCross, RsiReversion, DonchianBreakout, BollingerReversion)
}


def describe_strategies() -> list[dict[str, Any]]:
    """Every built-in as ``{name, doc, params: [{name, default, type, doc, min?, max?, choices?}]}``."""
    return [cls.describe() for cls in BUILTINS.values()]


def load_strategy(spec: str) -> type[Strategy]:
    """The strategy class for a built-in name or ``"path/to/file.py:ClassName"``.

    Raises ``ValueError`` naming the allowed built-ins when ``spec`` is neither.
    """
    if spec in BUILTINS:
        return BUILTINS[spec]
    if ":" in spec and ".py" in spec:
        return load_strategy_file(spec)
    raise ValueError(f"`strategy` must be one of {sorted(BUILTINS)} or 'path/to/file.py:ClassName', "
                     f"got {spec!r}")


def validate_strategy(strategy: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Check a strategy name and its parameters: ``{"strategy" | "params.<name>": message}``."""
    try:
        cls = load_strategy(strategy)
    except ValueError as exc:
        return {"strategy": str(exc).replace("`strategy` ", "")}
    except Exception as exc:  # noqa: BLE001 - a broken user file is a field error, not a crash
        return {"strategy": f"failed to load {strategy!r}: {type(exc).__name__}: {exc}"}
    return cls.validate(params)


def make_strategy(strategy: str, params: Mapping[str, Any]) -> Strategy:
    """An instance of the named strategy with ``params`` (validated; ``ValueError`` when bad)."""
    return load_strategy(strategy)(**dict(params))

