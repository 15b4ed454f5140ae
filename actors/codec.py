"""msgpack at the process boundary: every queue between QuantMindX processes carries these bytes.

Only plain data crosses: dict/list/str/int/float/bool/None/bytes. numpy scalars and arrays that
slip into a message are turned into their Python equivalents so a worker never dies on a
``float64`` in an event.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np


def _default(obj: Any) -> Any:
    # Called by msgpack only for types it does not know; keep the common numpy cases cheap.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} for a process queue: {obj!r:.80}")


def pack(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack bytes (tuples become lists, numpy values plain numbers)."""
    return msgpack.packb(obj, use_bin_type=True, default=_default)


def unpack(data: bytes) -> Any:
    """Decode bytes made by :func:`pack` (str stays str, bytes stay bytes, arrays are lists)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
