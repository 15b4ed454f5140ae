"""QuantMindX engine: bars, strategies, fills, metrics and variants. Pure numpy, no processes.

Names are imported lazily so a worker process or a CLI command only pays for what it uses.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Bars": "engine.bars",
    "TIMEFRAMES": "engine.bars",
    "BacktestConfig": "engine.config",
    "Costs": "engine.config",
    "ConfigError": "engine.config",
    "VARIANTS": "engine.config",
    "parse_config": "engine.config",
    "Progress": "engine.progress",
    "ProgressFn": "engine.progress",
    "Cancelled": "engine.progress",
    "Throttle": "engine.progress",
    "DataStore": "engine.store",
    "DataNotFound": "engine.store",
    "DataFormatError": "engine.importers",
    "synthetic_bars": "engine.synthetic",
    "default_data_dir": "engine.store",
    "read_bars": "engine.importers",
    "run_backtest": "engine.backtest",
    "run_sweep": "engine.sweep",
    "describe_strategies": "engine.strategies",
    "load_strategy": "engine.strategies",
}

# `resample` is both a submodule and its function: importing the submodule (the store does) sets
# the package attribute to the module, which would shadow a lazy export, so bind the function now.
from engine.resample import resample  # noqa: E402

__all__ = sorted([*_EXPORTS, "resample"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
