"""Market feeds for paper (and later live) trading bots.

A bot reads bars from a :class:`MarketFeed`. Two real feeds ship here:

- :class:`ReplayFeed` replays stored bars (from the data store, or any :class:`~engine.bars.Bars`)
  at a configurable speed: ``seconds_per_bar`` (0 = as fast as the bot can take them).
- :class:`SyntheticLiveFeed` emits the seeded synthetic generator's bars on a wall-clock schedule,
  one every ``bar_interval`` seconds; the same seed always gives the same bars.

Both are resumable: ``start_index`` says how many bars were already seen (they become history,
not new bars), so a bot restored after a restart continues where it stopped.

A broker or exchange adapter plugs in by implementing :class:`MarketFeed` (and, for order
execution, ``engine.paper.Broker``); nothing else in the trading process needs to change.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np

from engine.bars import TIMEFRAMES, Bars, check_timeframe

FEED_TYPES: tuple[str, ...] = ("replay", "synthetic")
#: Bars the synthetic live feed emits at most (the generator's fixed span may hold fewer).
SYNTHETIC_LIVE_BARS = 100_000


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar. ``time`` is int64 UTC nanoseconds of the bar's open."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    spread: float | None = None


@runtime_checkable
class MarketFeed(Protocol):
    """Where a bot's bars come from.

    ``next_bar(timeout)`` waits at most ``timeout`` seconds and returns the next bar, or None if
    none is due yet (or the feed is exhausted: see ``exhausted``). ``history()`` holds every bar
    delivered so far (including those before ``start_index`` on a resumed feed), which is what a
    strategy may look at. ``position`` is the number of bars in ``history()``: persist it and pass
    it back as ``start_index`` to resume.
    """

    symbol: str
    timeframe: str

    @property
    def position(self) -> int: ...

    @property
    def exhausted(self) -> bool: ...

    @property
    def synthetic(self) -> bool: ...

    def next_bar(self, timeout: float) -> Bar | None: ...

    def history(self) -> Bars: ...


def _check_start(start_index: int, total: int) -> int:
    if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
        raise ValueError(f"`start_index` must be an integer >= 0, got {start_index!r}")
    if start_index > total:
        raise ValueError(f"`start_index` must be <= the {total} bars available, got {start_index}")
    return start_index


def _bar_at(bars: Bars, i: int) -> Bar:
    spread = None if bars.spread is None else float(bars.spread[i])
    return Bar(int(bars.time[i]), float(bars.open[i]), float(bars.high[i]), float(bars.low[i]),
               float(bars.close[i]), float(bars.volume[i]), spread)


class _PacedBars:
    """Shared mechanics: a fixed array of bars handed out one at a time on a schedule.

    Bars are known in advance (stored or seeded), so ``history()`` is a zero-copy window.
    ``interval`` is the wall-clock spacing between bars; the first bar after (re)start is due
    immediately.
    """

    def __init__(self, bars: Bars, interval: float, start_index: int,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval >= 0:
            raise ValueError(f"bar interval must be a number >= 0 seconds, got {interval!r}")
        self._bars = bars
        self._interval = float(interval)
        self._pos = _check_start(start_index, len(bars))
        self._clock = clock
        self._sleep = sleep
        self._due = clock()
        self.symbol = bars.symbol
        self.timeframe = bars.timeframe

    @property
    def position(self) -> int:
        return self._pos

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self._bars)

    @property
    def synthetic(self) -> bool:
        return bool(self._bars.synthetic)

    def next_bar(self, timeout: float) -> Bar | None:
        if self.exhausted:
            return None
        wait = self._due - self._clock()
        if wait > timeout:
            self._sleep(max(0.0, timeout))
            return None
        if wait > 0:
            self._sleep(wait)
        bar = _bar_at(self._bars, self._pos)
        self._pos += 1
        # Schedule from the due time, not from now, so a slow consumer catches up instead of
        # drifting; but never let a long stall turn into an unbounded burst of past-due bars.
        self._due = max(self._due + self._interval, self._clock() - self._interval)
        return bar

    def history(self) -> Bars:
        return self._bars.window(0, self._pos)


class ReplayFeed(_PacedBars):
    """Replays ``bars`` one by one, ``seconds_per_bar`` apart (0 = as fast as possible).

    >>> feed = ReplayFeed(bars, seconds_per_bar=0.1)            # doctest: +SKIP
    >>> feed = ReplayFeed.from_store(store, "EURUSD", "H1", "2017-05-01", "2017-06-30")  # doctest: +SKIP
    """

    def __init__(self, bars: Bars, seconds_per_bar: float = 0.0, start_index: int = 0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if len(bars) == 0:
            raise ValueError(f"`bars` must not be empty: no {bars.label} bars to replay")
        if isinstance(seconds_per_bar, bool) or not isinstance(seconds_per_bar, (int, float)) \
                or not seconds_per_bar >= 0:
            raise ValueError(f"`seconds_per_bar` must be a number >= 0, got {seconds_per_bar!r}")
        super().__init__(bars, seconds_per_bar, start_index, clock, sleep)

    @classmethod
    def from_store(cls, store: object, symbol: str, timeframe: str, start_date: str | None = None,
                   end_date: str | None = None, seconds_per_bar: float = 0.0,
                   start_index: int = 0) -> ReplayFeed:
        """Replay ``symbol``/``timeframe`` bars from a ``DataStore`` between two inclusive dates.

        Raises the store's ``DataNotFound`` when the symbol, timeframe or range has no data.
        """
        check_timeframe(timeframe)
        bars = store.load(symbol, timeframe, start_date, end_date)  # type: ignore[attr-defined]
        return cls(bars, seconds_per_bar, start_index)


class SyntheticLiveFeed(_PacedBars):
    """The seeded synthetic market, one new bar every ``bar_interval`` seconds of wall time.

    Deterministic: the same ``seed``/``timeframe`` always produce the same bars, so a resumed
    feed (``start_index``) continues exactly the series it was on. Bars are labelled synthetic.
    """

    def __init__(self, timeframe: str = "M1", seed: int = 42, bar_interval: float = 1.0,
                 start_index: int = 0, *, symbol: str = "SYNTH", max_bars: int = SYNTHETIC_LIVE_BARS,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        check_timeframe(timeframe)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"`seed` must be an integer, got {seed!r}")
        if isinstance(bar_interval, bool) or not isinstance(bar_interval, (int, float)) \
                or not bar_interval > 0:
            raise ValueError(f"`bar_interval` must be a number > 0 seconds, got {bar_interval!r}")
        if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 1:
            raise ValueError(f"`max_bars` must be an integer >= 1, got {max_bars!r}")
        bars = _synthetic(symbol, timeframe, seed, max(max_bars, start_index))
        super().__init__(bars, bar_interval, start_index, clock, sleep)


def _synthetic(symbol: str, timeframe: str, seed: int, n: int) -> Bars:
    from engine.synthetic import synthetic_bars  # noqa: PLC0415 - generated on first use

    bars = synthetic_bars(timeframe=timeframe, seed=seed)
    bars = bars.window(0, min(n, len(bars)))
    if bars.symbol != symbol:
        from dataclasses import replace  # noqa: PLC0415

        bars = replace(bars, symbol=symbol)
    return bars


def bars_from_list(symbol: str, timeframe: str, rows: list[Bar], *, synthetic: bool = False) -> Bars:
    """Columnar :class:`Bars` from a list of :class:`Bar` (for adapters that receive bars one by one)."""
    check_timeframe(timeframe)
    spread = None if not rows or rows[0].spread is None else np.array([r.spread for r in rows], float)
    return Bars(symbol, timeframe,
                time=np.array([r.time for r in rows], dtype=np.int64),
                open=np.array([r.open for r in rows], float), high=np.array([r.high for r in rows], float),
                low=np.array([r.low for r in rows], float), close=np.array([r.close for r in rows], float),
                volume=np.array([r.volume for r in rows], float), spread=spread, synthetic=synthetic)


@dataclass(frozen=True)
class FeedSpec:
    """Which feed a bot reads (the ``feed`` object of a bot request). ``replay``: stored bars,
    ``seconds_per_bar`` apart (0 = as fast as possible). ``synthetic``: the seeded generator,
    one bar every ``bar_interval`` seconds (symbol ``SYNTH``)."""

    type: str = "replay"
    seconds_per_bar: float = 0.1
    bar_interval: float = 1.0
    seed: int = 42


def number_field(raw: Mapping[str, Any], key: str, default: Any, errors: dict[str, str], prefix: str,
                 *, positive: bool = False) -> Any:
    """``raw[key]`` if it is a finite number >= 0 (> 0 with ``positive``), else ``default`` with
    an error recorded under ``"prefix.key"``. A missing key with default None gives None."""
    value = raw.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        errors[f"{prefix}.{key}"] = f"must be a finite number, got {value!r}"
        return default
    if (positive and value <= 0) or value < 0:
        errors[f"{prefix}.{key}"] = f"must be {'> 0' if positive else '>= 0'}, got {value!r}"
        return default
    return value


def unknown_fields(raw: Mapping[str, Any], cls: type, prefix: str, errors: dict[str, str]) -> None:
    """Record an error for every key of ``raw`` that is not a field of dataclass ``cls``."""
    allowed = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    for key in raw:
        if key not in allowed:
            errors[f"{prefix}.{key}"] = f"unknown field; allowed: {allowed}"


def parse_feed_spec(raw: Any, errors: dict[str, str]) -> FeedSpec:
    """Validate a bot request's ``feed`` object; problems go to ``errors`` as ``feed.<field>``."""
    if not isinstance(raw, Mapping):
        errors["feed"] = f"must be an object like {{'type': 'replay', 'seconds_per_bar': 0.1}}, got {raw!r}"
        return FeedSpec()
    unknown_fields(raw, FeedSpec, "feed", errors)
    ftype = raw.get("type", "replay")
    if ftype not in FEED_TYPES:
        errors["feed.type"] = f"must be one of {list(FEED_TYPES)}, got {ftype!r}"
        ftype = "replay"
    seed = raw.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int):
        errors["feed.seed"] = f"must be an integer, got {seed!r}"
        seed = 42
    return FeedSpec(ftype, float(number_field(raw, "seconds_per_bar", 0.1, errors, "feed")),
                    float(number_field(raw, "bar_interval", 1.0, errors, "feed", positive=True)), seed)


def feed_from_spec(spec: FeedSpec, symbol: str, timeframe: str, start_date: str | None,
                   end_date: str | None, store: Any, start_index: int = 0) -> MarketFeed:
    """Open the feed ``spec`` describes, resumed after ``start_index`` bars already seen.

    This is the one place a new ``feed.type`` (a broker or exchange adapter) is added.
    """
    if spec.type == "synthetic":
        return SyntheticLiveFeed(timeframe, spec.seed, spec.bar_interval, start_index)
    return ReplayFeed.from_store(store, symbol, timeframe, start_date, end_date,
                                 spec.seconds_per_bar, start_index)


__all__ = ["Bar", "MarketFeed", "ReplayFeed", "SyntheticLiveFeed", "SYNTHETIC_LIVE_BARS", "FEED_TYPES",
           "FeedSpec", "parse_feed_spec", "feed_from_spec", "bars_from_list", "TIMEFRAMES"]
