"""Progress reporting and cooperative cancellation between the engine and whoever runs it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


class Cancelled(Exception):
    """Raised by a progress callback to ask the engine to stop; the engine lets it propagate."""


@dataclass(frozen=True)
class Progress:
    """One progress report: where the run is, in the spec's `backtest_progress` terms."""

    bars_processed: int
    total_bars: int
    current_date: str  # YYYY-MM-DD of the last processed bar
    trades_count: int
    current_pnl: float

    @property
    def percent(self) -> float:
        return 100.0 if self.total_bars <= 0 else min(100.0, 100.0 * self.bars_processed / self.total_bars)


ProgressFn = Callable[[Progress], None]


class Throttle:
    """Lets a report through at most every ``interval`` seconds; first and final always pass."""

    def __init__(self, interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last = float("-inf")

    def ready(self, final: bool = False) -> bool:
        now = self._clock()
        if final or now - self._last >= self.interval:
            self._last = now
            return True
        return False
