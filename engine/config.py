"""The backtest request: one frozen config, validated the same way for the CLI, REST and bots.

Every invalid field is reported at once, each message naming the field and what is allowed,
so a REST client gets a complete 400 and the CLI one clear line per problem.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from engine.bars import TIMEFRAMES

VARIANTS: tuple[str, ...] = ("vanilla", "spiced", "vanilla_full", "spiced_full")
SIZE_UNITS: tuple[str, ...] = ("units", "lots")
LOT_SIZE = 100_000.0


class ConfigError(ValueError):
    """A request with one or more invalid fields; ``errors`` maps field -> message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


@dataclass(frozen=True)
class Costs:
    """Trading costs. ``spread`` and ``slippage`` in price units (a buy fills at
    open + spread/2 + slippage, a sell at open - spread/2 - slippage); ``commission`` is a
    fraction of traded notional charged on every fill (0.0001 = 1 basis point)."""

    spread: float = 0.0
    commission: float = 0.0
    slippage: float = 0.0


@dataclass(frozen=True)
class BacktestConfig:
    """What to backtest. Dates are inclusive `YYYY-MM-DD` (UTC); None means all data."""

    symbol: str
    timeframe: str = "H1"
    variant: str = "vanilla"
    start_date: str | None = None
    end_date: str | None = None
    strategy: str = "sma_cross"
    params: Mapping[str, Any] = field(default_factory=dict)
    initial_balance: float = 10_000.0
    size: float = 10_000.0
    size_unit: str = "units"
    costs: Costs = field(default_factory=Costs)
    spiced: Mapping[str, Any] = field(default_factory=dict)  # options of the spiced layer
    robustness: Mapping[str, Any] = field(default_factory=dict)  # options of the _full variants
    seed: int = 42

    @property
    def units(self) -> float:
        """Position size in units (lots converted at 1 lot = 100,000 units)."""
        return self.size * LOT_SIZE if self.size_unit == "lots" else self.size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = dict(self.params)
        d["spiced"] = dict(self.spiced)
        d["robustness"] = dict(self.robustness)
        return d


_FIELDS = {f for f in BacktestConfig.__dataclass_fields__}


def _default(value: Any, default: Any) -> Any:
    """``default`` only for an absent or null field: a wrong-typed value must still be reported."""
    return default if value is None else value


def _date(value: Any, name: str, errors: dict[str, str]) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    errors[name] = f"must be a date YYYY-MM-DD, got {value!r}"
    return None


def _number(value: Any, name: str, errors: dict[str, str], *, positive: bool = False,
            minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        errors[name] = f"must be a finite number, got {value!r}"
        return 0.0
    if positive and value <= 0:
        errors[name] = f"must be > 0, got {value!r}"
    elif minimum is not None and value < minimum:
        errors[name] = f"must be >= {minimum}, got {value!r}"
    return float(value)


def parse_config(body: Mapping[str, Any]) -> BacktestConfig:
    """Build a :class:`BacktestConfig` from a JSON-like mapping, or raise :class:`ConfigError`.

    Checks types and allowed values of every field; strategy names and parameters are
    checked against the strategy registry when it is importable.
    """
    if not isinstance(body, Mapping):
        raise ConfigError({"body": f"must be a JSON object, got {type(body).__name__}"})
    errors: dict[str, str] = {}
    for key in body:
        if key not in _FIELDS:
            errors[str(key)] = f"unknown field; allowed: {sorted(_FIELDS)}"
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol.strip():
        errors["symbol"] = f"must be a non-empty string, got {symbol!r}"
        symbol = ""
    timeframe = body.get("timeframe", "H1")
    if timeframe not in TIMEFRAMES:
        errors["timeframe"] = f"must be one of {list(TIMEFRAMES)}, got {timeframe!r}"
    variant = body.get("variant", "vanilla")
    if variant not in VARIANTS:
        errors["variant"] = f"must be one of {list(VARIANTS)}, got {variant!r}"
    start = _date(body.get("start_date"), "start_date", errors)
    end = _date(body.get("end_date"), "end_date", errors)
    if start and end and start > end:
        errors["end_date"] = f"must not be before start_date ({start}), got {end!r}"
    strategy = body.get("strategy", "sma_cross")
    if not isinstance(strategy, str) or not strategy:
        errors["strategy"] = f"must be a built-in strategy name or 'path/to/file.py:ClassName', got {strategy!r}"
        strategy = "sma_cross"
    params = _default(body.get("params"), {})
    if not isinstance(params, Mapping):
        errors["params"] = f"must be an object of parameter -> value, got {params!r}"
        params = {}
    balance = _number(body.get("initial_balance", 10_000.0), "initial_balance", errors, positive=True)
    size = _number(body.get("size", 10_000.0), "size", errors, positive=True)
    size_unit = body.get("size_unit", "units")
    if size_unit not in SIZE_UNITS:
        errors["size_unit"] = f"must be one of {list(SIZE_UNITS)}, got {size_unit!r}"
    costs = _costs(_default(body.get("costs"), {}), errors)
    spiced = _default(body.get("spiced"), {})
    if not isinstance(spiced, Mapping):
        errors["spiced"] = f"must be an object, got {spiced!r}"
        spiced = {}
    robustness = _default(body.get("robustness"), {})
    if not isinstance(robustness, Mapping):
        errors["robustness"] = f"must be an object, got {robustness!r}"
        robustness = {}
    seed = body.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int):
        errors["seed"] = f"must be an integer, got {seed!r}"
        seed = 42
    # Every field is checked in one pass, so a client sees all its mistakes at once; only
    # parameters of a strategy that is itself invalid cannot be checked.
    _check_extensions(None if "strategy" in errors else strategy, dict(params), dict(spiced),
                      dict(robustness), errors)
    if errors:
        raise ConfigError(errors)
    return BacktestConfig(
        symbol=symbol.strip(), timeframe=timeframe, variant=variant, start_date=start, end_date=end,
        strategy=strategy, params=dict(params), initial_balance=balance, size=size,
        size_unit=size_unit, costs=costs, spiced=dict(spiced), robustness=dict(robustness), seed=seed,
    )


def _costs(raw: Any, errors: dict[str, str]) -> Costs:
    if not isinstance(raw, Mapping):
        errors["costs"] = f"must be an object with spread, commission, slippage; got {raw!r}"
        return Costs()
    allowed = ("spread", "commission", "slippage")
    for key in raw:
        if key not in allowed:
            errors[f"costs.{key}"] = f"unknown cost; allowed: {list(allowed)}"
    vals = {k: _number(raw.get(k, 0.0), f"costs.{k}", errors, minimum=0.0) for k in allowed}
    return Costs(**vals)


def _check_extensions(strategy: str | None, params: dict[str, Any], spiced: dict[str, Any],
                      robustness: dict[str, Any], errors: dict[str, str]) -> None:
    """Field checks owned by the strategy registry, the spiced layer and the robustness layer
    (``strategy`` None: the strategy field is already reported, its parameters are not checked)."""
    # Imported here: those modules import this one (an import cycle at module level).
    from engine.robustness import validate_robustness_options  # noqa: PLC0415
    from engine.spiced import validate_spiced_options  # noqa: PLC0415
    from engine.strategies import validate_strategy  # noqa: PLC0415

    if strategy is not None:
        errors.update(validate_strategy(strategy, params))
    errors.update({f"spiced.{k}": v for k, v in validate_spiced_options(spiced).items()})
    errors.update({f"robustness.{k}": v
                   for k, v in validate_robustness_options(robustness, strategy, params).items()})
