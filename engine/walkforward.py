"""Walk-forward optimisation: choose parameters on the past, trade them on the future, repeat.

Windows (bar indices, half-open):

- ``rolling``: in-sample ``[s, s + IS)``, optional gap, out-of-sample ``[s + IS + gap, ... + OOS)``;
  the next window starts ``OOS`` bars later, so out-of-sample parts tile the data without overlap.
- ``anchored``: the same, but every in-sample part starts at bar 0 and grows.
- Sizes are bar counts (int) or fractions of the data (float in (0, 1)); each in-sample and
  out-of-sample part needs at least 100 bars. The last out-of-sample part absorbs the few bars left
  at the end that are too few for another window.

In each window the grid is optimised on the in-sample bars only (the strategy gets a slice that
ends at the in-sample end, so no later bar can reach its indicators). The winner then runs on the
out-of-sample part with the preceding in-sample + gap bars as indicator warm-up; entries are only
allowed inside the out-of-sample part and a position still open at its end is closed at that bar's
close. Out-of-sample balances compound: each window starts from the previous window's final balance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIN_WINDOW_BARS = 100
WF_MODES: tuple[str, ...] = ("rolling", "anchored")
DEFAULT_IN_SAMPLE = 0.3
DEFAULT_OUT_OF_SAMPLE = 0.1


@dataclass(frozen=True)
class Window:
    """One walk-forward window as half-open bar index ranges."""

    index: int
    is_start: int
    is_end: int
    oos_start: int
    oos_end: int


def check_size(value: object, name: str, *, allow_zero: bool = False) -> None:
    """``ValueError`` unless ``value`` is a bar count (int) or a fraction in (0, 1)."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a bar count (int) or a fraction of the data (float in (0, 1)), got {value!r}")
    if isinstance(value, int) and value < low:
        raise ValueError(f"`{name}` as a bar count must be >= {low}, got {value!r}")
    if isinstance(value, float) and not ((allow_zero and value == 0.0) or 0.0 < value < 1.0):
        raise ValueError(f"`{name}` as a fraction must be in {'[0' if allow_zero else '(0'}, 1), got {value!r}")


def resolve_size(value: int | float, n_bars: int, name: str, *, allow_zero: bool = False) -> int:
    """Bars meant by a size option: an int as is, a float as that fraction of ``n_bars``."""
    check_size(value, name, allow_zero=allow_zero)
    return int(value) if isinstance(value, int) else int(round(value * n_bars))


def make_windows(n_bars: int, *, mode: str = "rolling", in_sample: int | float = DEFAULT_IN_SAMPLE,
                 out_of_sample: int | float = DEFAULT_OUT_OF_SAMPLE, gap: int | float = 0) -> list[Window]:
    """Walk-forward windows over ``n_bars`` bars; ``ValueError`` names the option that does not fit."""
    if mode not in WF_MODES:
        raise ValueError(f"`wf_mode` must be one of {list(WF_MODES)}, got {mode!r}")
    is_n = resolve_size(in_sample, n_bars, "in_sample")
    oos_n = resolve_size(out_of_sample, n_bars, "out_of_sample")
    gap_n = resolve_size(gap, n_bars, "gap", allow_zero=True)
    for name, size, raw in (("in_sample", is_n, in_sample), ("out_of_sample", oos_n, out_of_sample)):
        if size < MIN_WINDOW_BARS:
            raise ValueError(f"`{name}` must give at least {MIN_WINDOW_BARS} bars per window, "
                             f"got {size} bars ({raw!r} of {n_bars} bars)")
    if is_n + gap_n + oos_n > n_bars:
        raise ValueError(f"`in_sample` + `gap` + `out_of_sample` = {is_n} + {gap_n} + {oos_n} bars "
                         f"exceeds the {n_bars} bars of data; use smaller sizes or more data")
    windows = []
    start = 0
    while start + is_n + gap_n + oos_n <= n_bars:
        is_start = 0 if mode == "anchored" else start
        oos_start = start + is_n + gap_n
        windows.append(Window(len(windows), is_start, start + is_n, oos_start, oos_start + oos_n))
        start += oos_n
    last = windows[-1]
    if n_bars - last.oos_end > 0:
        windows[-1] = Window(last.index, last.is_start, last.is_end, last.oos_start, n_bars)
    return windows


def window_table_row(w: Window, dates: Any, params: dict[str, Any], is_metrics: dict[str, Any],
                     oos_metrics: dict[str, Any]) -> dict[str, Any]:
    """One row of the per-window table; ``dates(i)`` gives the ISO time of bar ``i``."""
    return {
        "window": w.index, "is_start": dates(w.is_start), "is_end": dates(w.is_end - 1),
        "oos_start": dates(w.oos_start), "oos_end": dates(w.oos_end - 1),
        "is_bars": w.is_end - w.is_start, "oos_bars": w.oos_end - w.oos_start,
        "params": params, "is_metrics": is_metrics, "oos_metrics": oos_metrics,
    }
