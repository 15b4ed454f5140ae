"""Market feeds: pacing, resume, history, determinism, and argument errors."""
from __future__ import annotations

import time

import numpy as np
import pytest

from engine.bars import Bars
from engine.feeds import Bar, MarketFeed, ReplayFeed, SyntheticLiveFeed, bars_from_list


def make_bars(n: int = 10) -> Bars:
    t0 = 1_600_000_000 * 1_000_000_000
    close = 1.0 + np.arange(n) * 0.001
    return Bars("EURUSD", "H1", time=t0 + np.arange(n, dtype=np.int64) * 3600 * 1_000_000_000,
                open=close - 0.0005, high=close + 0.001, low=close - 0.001, close=close,
                volume=np.full(n, 100.0))


class FakeClock:
    """A clock the feed sleeps on: sleeping advances it, so pacing is exact and instant."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_replay_feed_is_a_market_feed_and_delivers_every_bar_in_order() -> None:
    bars = make_bars(5)
    feed = ReplayFeed(bars, seconds_per_bar=0)
    assert isinstance(feed, MarketFeed)
    got = [feed.next_bar(1.0) for _ in range(5)]
    assert [b.time for b in got if b] == bars.time.tolist()
    assert got[2] == Bar(int(bars.time[2]), bars.open[2], bars.high[2], bars.low[2], bars.close[2], 100.0)
    assert feed.exhausted and feed.next_bar(0.0) is None
    assert feed.position == 5 and len(feed.history()) == 5


def test_replay_feed_paces_bars_seconds_per_bar_apart() -> None:
    clock = FakeClock()
    feed = ReplayFeed(make_bars(4), seconds_per_bar=0.5, clock=clock, sleep=clock.sleep)
    assert feed.next_bar(0.0) is not None  # the first bar is due at once
    assert feed.next_bar(0.2) is None  # not due yet: waited the whole timeout
    assert clock.now == pytest.approx(0.2)
    assert feed.next_bar(1.0) is not None  # due at 0.5
    assert clock.now == pytest.approx(0.5)
    assert feed.next_bar(1.0) is not None and clock.now == pytest.approx(1.0)


def test_replay_feed_in_real_time() -> None:
    feed = ReplayFeed(make_bars(4), seconds_per_bar=0.05)
    t0 = time.monotonic()
    n = sum(feed.next_bar(1.0) is not None for _ in range(4))
    assert n == 4 and 0.14 <= time.monotonic() - t0 < 1.0


def test_replay_feed_resumes_after_start_index_with_history_intact() -> None:
    bars = make_bars(6)
    feed = ReplayFeed(bars, 0, start_index=4)
    assert feed.position == 4 and len(feed.history()) == 4
    bar = feed.next_bar(0.0)
    assert bar is not None and bar.time == bars.time[4]
    assert feed.history().close.tolist() == bars.close[:5].tolist()


def test_replay_feed_rejects_bad_arguments_naming_them() -> None:
    with pytest.raises(ValueError, match="`seconds_per_bar` must be a number >= 0"):
        ReplayFeed(make_bars(), seconds_per_bar=-1)
    with pytest.raises(ValueError, match="`start_index` must be <= the 10 bars"):
        ReplayFeed(make_bars(), start_index=11)
    with pytest.raises(ValueError, match="`start_index` must be an integer >= 0"):
        ReplayFeed(make_bars(), start_index=-1)
    with pytest.raises(ValueError, match="`bars` must not be empty"):
        ReplayFeed(make_bars().window(0, 0))


def test_synthetic_live_feed_is_deterministic_resumable_and_labelled() -> None:
    a = SyntheticLiveFeed("M5", seed=7, bar_interval=0.001, max_bars=50)
    b = SyntheticLiveFeed("M5", seed=7, bar_interval=0.001, max_bars=50)
    first = [a.next_bar(1.0) for _ in range(10)]
    assert first == [b.next_bar(1.0) for _ in range(10)]
    assert a.synthetic and a.symbol == "SYNTH" and a.timeframe == "M5"
    resumed = SyntheticLiveFeed("M5", seed=7, bar_interval=0.001, start_index=5, max_bars=50)
    assert resumed.next_bar(1.0) == first[5]
    other = SyntheticLiveFeed("M5", seed=8, bar_interval=0.001, max_bars=50)
    assert other.next_bar(1.0) != first[0]


def test_synthetic_live_feed_emits_on_the_wall_clock() -> None:
    clock = FakeClock()
    feed = SyntheticLiveFeed("M1", seed=1, bar_interval=2.0, max_bars=20, clock=clock, sleep=clock.sleep)
    assert feed.next_bar(0.0) is not None
    assert feed.next_bar(1.0) is None and feed.next_bar(1.0) is not None
    assert clock.now == pytest.approx(2.0)


def test_synthetic_live_feed_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`timeframe` must be one of"):
        SyntheticLiveFeed("H2")
    with pytest.raises(ValueError, match="`bar_interval` must be a number > 0"):
        SyntheticLiveFeed("M1", bar_interval=0)
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        SyntheticLiveFeed("M1", seed="x")  # type: ignore[arg-type]


def test_bars_from_list_round_trips() -> None:
    bars = make_bars(3)
    feed = ReplayFeed(bars)
    rows = [feed.next_bar(0.0) for _ in range(3)]
    back = bars_from_list("EURUSD", "H1", [r for r in rows if r])
    assert back.close.tolist() == bars.close.tolist() and back.time.dtype == np.int64
