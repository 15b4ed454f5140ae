"""The strategy API: declared parameters, vectorised indicators, per-bar decisions or signal arrays.

A strategy is a class with a ``name``, a tuple of :class:`Param` declarations and two hooks:

* ``init(bars)`` computes indicators for the whole series up front (vectorised numpy);
* ``next(i, position) -> target`` decides on bar ``i`` (after its close) what position to hold:
  ``1`` long, ``-1`` short, ``0`` flat, ``None`` keep whatever is held. ``position`` is the side
  held at the close of bar ``i`` (``1``, ``-1`` or ``0``). The decision fills at bar ``i+1``'s open.

Built-ins also implement the fast path ``signals(bars) -> Signals``: the same decisions as arrays,
which the simulator turns into trades without a Python loop over bars. A user strategy only needs
``next``; ``signals`` is optional.

Example (a user strategy file, run with ``--strategy my_strats.py:Momentum``)::

    from engine.strategy import Param, Strategy
    from engine.indicators import sma

    class Momentum(Strategy):
        name = "momentum"
        params = (Param("period", 50, int, "SMA period", min=2),)

        def init(self, bars):
            self.warmup = self.period
            self.close = bars.close.tolist()          # lists are fastest to index per bar
            self.ma = sma(bars.close, self.period).tolist()

        def next(self, i, position):
            return 1 if self.close[i] > self.ma[i] else -1
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Mapping

import numpy as np

from engine.bars import Bars


@dataclass(frozen=True)
class Param:
    """One declared strategy parameter: its default, type, meaning and allowed values.

    ``type`` is ``int``, ``float``, ``str`` or ``bool``. ``min``/``max`` bound numbers
    (inclusive); ``choices`` lists allowed values; ``optional`` allows ``None`` (off).
    """

    name: str
    default: Any
    type: type
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False

    def check(self, value: Any) -> str | None:
        """Return an error message for ``value``, or None when it is allowed."""
        if value is None:
            return None if self.optional else f"is required ({self._allowed()}), got None"
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, self.type)
        if not ok:
            return f"must be {self._allowed()}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {list(self.choices)}, got {value!r}"
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            return f"must be {self._allowed()}, got {value!r}"
        return None

    def _allowed(self) -> str:
        kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
            self.type, self.type.__name__)
        if self.choices is not None:
            kind = f"one of {list(self.choices)}"
        if self.min is not None and self.max is not None:
            kind += f" in [{self.min}, {self.max}]"
        elif self.min is not None:
            kind += f" >= {self.min}"
        elif self.max is not None:
            kind += f" <= {self.max}"
        return kind + (" or null" if self.optional else "")

    def describe(self) -> dict[str, Any]:
        """JSON description for forms and docs."""
        d: dict[str, Any] = {"name": self.name, "default": self.default,
                             "type": self.type.__name__, "doc": self.doc}
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        if self.choices is not None:
            d["choices"] = list(self.choices)
        if self.optional:
            d["optional"] = True
        return d


#: Risk parameters the simulator handles for any strategy that declares them.
RISK_PARAMS: tuple[Param, ...] = (
    Param("stop_loss_pct", None, float, "stop-loss distance in percent of the entry fill price; "
          "null = no stop", min=0.0001, max=100.0, optional=True),
    Param("take_profit_pct", None, float, "take-profit distance in percent of the entry fill price; "
          "null = no target", min=0.0001, max=1000.0, optional=True),
)


@dataclass(frozen=True)
class Signals:
    """Decisions of a whole run as one array (the fast path).

    ``target[i]`` is the side wanted after bar ``i`` closes: ``1`` long, ``-1`` short, ``0`` flat,
    ``NaN`` no decision (keep what is held). A target equal to the held side does nothing; after a
    stop-loss or take-profit exit the strategy stays flat until a target differs from flat.
    """

    target: np.ndarray

    @classmethod
    def from_entries_exits(cls, long_entries: np.ndarray, long_exits: np.ndarray | None = None,
                           short_entries: np.ndarray | None = None,
                           short_exits: np.ndarray | None = None) -> Signals:
        """Build targets from boolean entry/exit arrays (an exit only closes its own side).

        On one bar an entry beats an exit; a long entry beats a short entry.
        """
        n = len(long_entries)
        z = np.zeros(n, dtype=bool)
        le = np.asarray(long_entries, dtype=bool)
        lx = z if long_exits is None else np.asarray(long_exits, dtype=bool)
        se = z if short_entries is None else np.asarray(short_entries, dtype=bool)
        sx = z if short_exits is None else np.asarray(short_exits, dtype=bool)
        target = np.full(n, np.nan)
        target[se] = -1.0
        target[le] = 1.0
        # An exit acts on the side of the last entry before it: carry that side forward.
        entry = le | se
        last = np.maximum.accumulate(np.where(entry, np.arange(n), -1))
        before = np.full(n, -1)
        before[1:] = last[:-1]
        side = np.where(before >= 0, target[np.maximum(before, 0)], 0.0)
        target[~entry & (((side > 0) & lx) | ((side < 0) & sx))] = 0.0
        return cls(target)


class Strategy:
    """Base class of every strategy; see the module docstring for the contract.

    Parameters are passed as keyword arguments, validated against ``params`` and set as
    attributes (``self.fast``). ``warmup`` is the first bar ``next`` is called on.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    #: stop distance in percent of the entry fill price, or None; set from the parameter of the
    #: same name when the strategy declares it (see :data:`RISK_PARAMS`)
    stop_loss_pct: float | None = None
    #: target distance in percent of the entry fill price, or None
    take_profit_pct: float | None = None

    def __init__(self, **values: Any) -> None:
        errors = type(self).validate(values)
        if errors:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.values: dict[str, Any] = {p.name: values.get(p.name, p.default) for p in self.params}
        for key, value in self.values.items():
            setattr(self, key, value)
        self.warmup: int = 0

    @classmethod
    def validate(cls, values: Mapping[str, Any]) -> dict[str, str]:
        """Check parameter values; returns ``{"params.<name>": message}`` (empty when fine)."""
        declared = {p.name: p for p in cls.params}
        errors: dict[str, str] = {}
        for name in declared:
            if name in _RESERVED:
                errors[f"params.{name}"] = (f"parameter name clashes with the Strategy API of "
                                            f"{cls.name or cls.__name__}; rename it")
        if errors:
            return errors
        for key in values:
            if key not in declared:
                errors[f"params.{key}"] = (f"unknown parameter of {cls.name or cls.__name__}; "
                                           f"allowed: {sorted(declared)}")
        for key, p in declared.items():
            if key in values:
                msg = p.check(values[key])
                if msg:
                    errors[f"params.{key}"] = msg
        if not errors:
            errors.update(cls.check_params({k: values.get(k, p.default) for k, p in declared.items()}))
        return errors

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> dict[str, str]:
        """Cross-parameter checks (override); ``values`` holds every parameter."""
        return {}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """``{name, doc, params: [...]}`` for the REST API and dashboard forms."""
        doc = (cls.__doc__ or "").strip()
        return {"name": cls.name or cls.__name__, "doc": doc,
                "params": [p.describe() for p in cls.params]}

    def init(self, bars: Bars) -> None:
        """Compute indicators for all bars at once (override)."""

    def next(self, i: int, position: int) -> int | None:
        """Decide after bar ``i`` closes: 1 long, -1 short, 0 flat, None keep (override)."""
        raise NotImplementedError(f"strategy {self.name!r} implements neither next() nor signals()")

    def prepare_next(self) -> None:
        """Called after ``init`` when the per-bar path will run (override to build lists for
        ``next`` only when they are needed; a strategy with only ``next`` can ignore it)."""

    def signals(self, bars: Bars) -> Signals | None:
        """Fast path: all decisions as arrays, or None to use ``next`` per bar."""
        return None


#: attribute names a parameter may not take (they would hide the strategy's own API)
_RESERVED = frozenset(k for k in vars(Strategy) if not k.startswith("__")) \
    - {"stop_loss_pct", "take_profit_pct"} | {"values", "warmup"}


def load_strategy_file(spec: str) -> type[Strategy]:
    """Load a strategy class from ``"path/to/file.py:ClassName"``.

    Raises ``ValueError`` naming the problem (bad spec, missing file, missing class, not a
    :class:`Strategy` subclass); errors raised by the file itself propagate.
    """
    path_s, sep, cls_name = spec.rpartition(":")
    if not sep or not path_s.endswith(".py") or not cls_name.isidentifier():
        raise ValueError(f"`strategy` must be a built-in name or 'path/to/file.py:ClassName', got {spec!r}")
    path = Path(path_s).expanduser()
    if not path.is_file():
        raise ValueError(f"`strategy` file not found: {str(path)!r}")
    module = _load_module(path)
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        found = sorted(k for k, v in vars(module).items()
                       if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy)
        raise ValueError(f"`strategy` class {cls_name!r} is not a Strategy subclass in {str(path)!r}; "
                         f"found: {found}")
    return cls


#: resolved path -> (modification time, module): a file is executed again only when it changes,
#: so validating a request and then running it (or each combination of a sweep) loads it once.
_MODULES: dict[str, tuple[int, ModuleType]] = {}


def _load_module(path: Path) -> ModuleType:
    key = str(path.resolve())
    mtime = path.stat().st_mtime_ns
    cached = _MODULES.get(key)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    mod_name = "qmx_user_strategy_" + hashlib.sha1(key.encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"`strategy` file cannot be imported: {str(path)!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    _MODULES[key] = (mtime, module)
    return module
