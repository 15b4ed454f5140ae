"""QuantMindX server layer: the aiohttp app (REST, WebSocket, dashboard) and the `qmx` CLI.

`make_app` is imported lazily so `qmx data list` never pays for aiohttp.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["make_app"]


def __getattr__(name: str) -> Any:
    if name == "make_app":
        return importlib.import_module("server.app").make_app
    raise AttributeError(f"module 'server' has no attribute {name!r}")
