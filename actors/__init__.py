"""QuantMindX actor layer: worker, log and trading processes, supervisor, fan-out, run store.

The server talks to :class:`Daemon` (commands are non-blocking ``tell``s) and reads runs through
:class:`RunStore`. Names are imported lazily so ``import actors`` stays cheap in child processes.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "Daemon": "actors.daemon",
    "DaemonNotRunning": "actors.daemon",
    "QueueFull": "actors.daemon",
    "EXTRA_CHILDREN": "actors.daemon",
    "RunStore": "actors.runstore",
    "STATUSES": "actors.runstore",
    "ChildSpec": "actors.process",
    "ChildIO": "actors.process",
    "pack": "actors.codec",
    "unpack": "actors.codec",
    "topic_error": "actors.connections",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
