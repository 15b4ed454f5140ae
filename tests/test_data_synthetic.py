"""Synthetic bars: deterministic by timestamp, labelled synthetic, realistic, with true regimes."""
from __future__ import annotations

import numpy as np
import pytest

from engine.bars import NS_PER_S
from engine.synthetic import REGIME_NAMES, SPREAD, synthetic_bars, synthetic_summary

FIELDS = ("time", "open", "high", "low", "close", "volume", "spread")


@pytest.mark.parametrize("timeframe", ["M1", "H1", "D1"])
def test_bar_at_a_time_is_the_same_whatever_the_range(timeframe: str) -> None:
    whole = synthetic_bars(timeframe=timeframe)
    part = synthetic_bars(timeframe=timeframe, start_date="2024-05-06", end_date="2024-06-20")
    lo = int(np.searchsorted(whole.time, part.time[0]))
    assert len(part) > 0 and whole.time[lo] == part.time[0]
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(part, name), getattr(whole, name)[lo:lo + len(part)])
    np.testing.assert_array_equal(part.meta["regimes"], whole.meta["regimes"][lo:lo + len(part)])
    assert part.time[0] >= np.datetime64("2024-05-06", "ns").astype(np.int64)
    assert part.time[-1] < np.datetime64("2024-06-21", "ns").astype(np.int64)


def test_seed_changes_the_data_and_repeats_exactly() -> None:
    a, b = synthetic_bars(seed=1), synthetic_bars(seed=2)
    assert not np.array_equal(a.close, b.close)
    synthetic_bars.__globals__["_generate"].cache_clear()  # regenerate from scratch, not from the cache
    np.testing.assert_array_equal(synthetic_bars(seed=1).close, a.close)


def test_labelled_synthetic() -> None:
    bars = synthetic_bars("SYNTH", "H4")
    assert bars.synthetic and bars.source == "synthetic (seed 7)" and bars.label == "SYNTH H4 [SYNTHETIC]"
    assert synthetic_bars(seed=11).source == "synthetic (seed 11)"
    assert not bars.close.flags.writeable  # the cached series cannot be corrupted by a caller


@pytest.mark.parametrize("timeframe", ["M5", "H1", "H4", "D1"])
def test_realistic_ohlc_and_regimes(timeframe: str) -> None:
    bars = synthetic_bars(timeframe=timeframe)
    o, h, lo, c = bars.open, bars.high, bars.low, bars.close
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all()
    assert (bars.volume > 0).all() and (np.diff(bars.time) > 0).all()
    assert 0.7 < c.min() and c.max() < 1.6 and abs(np.median(c) - 1.10) < 0.15
    np.testing.assert_array_equal(bars.spread, SPREAD)
    weekday = (bars.time // (86400 * NS_PER_S) + 3) % 7
    assert (weekday < 5).all()
    regimes = bars.meta["regimes"]
    assert regimes.dtype == np.int8 and len(regimes) == len(bars)
    assert bars.meta["regime_names"] == list(REGIME_NAMES) == ["trending_up", "trending_down", "ranging", "volatile"]
    assert set(np.unique(regimes)) == {0, 1, 2, 3}
    changes = np.flatnonzero(np.diff(regimes)) + 1
    lengths = np.diff(np.concatenate(([0], changes, [len(regimes)])))
    assert lengths[:-1].min() >= 20 and lengths.max() <= 400 and np.median(lengths) >= 40


def test_regimes_behave_as_named() -> None:
    bars = synthetic_bars(timeframe="H1")
    ret = np.diff(np.log(bars.close))
    regime = bars.meta["regimes"][1:]
    mean = [ret[regime == k].mean() for k in range(4)]
    std = [ret[regime == k].std() for k in range(4)]
    assert mean[0] > 0 > mean[1]
    assert std[3] > 2 * std[2] and std[3] > 2 * std[0]
    # ranging reverts: the further price is from where the range began, the more it moves back
    logp = np.log(bars.close)
    labels = bars.meta["regimes"]
    segment = np.cumsum(np.concatenate(([1], np.diff(labels) != 0)))
    entry = logp[np.flatnonzero(np.diff(np.concatenate(([0], segment))))][segment - 1]
    deviation, next_ret = (logp - entry)[:-1], ret
    inside = (labels[:-1] == 2) & (labels[1:] == 2)
    assert np.corrcoef(deviation[inside], next_ret[inside])[0, 1] < -0.05
    trending = (labels[:-1] == 0) & (labels[1:] == 0)
    assert np.corrcoef(deviation[trending], next_ret[trending])[0, 1] > -0.05


@pytest.mark.parametrize("timeframe", ["M1", "M15", "H4", "D1"])
def test_summary_matches_the_series(timeframe: str) -> None:
    bars = synthetic_bars(timeframe=timeframe)
    days = bars.time[[0, -1]].astype("datetime64[ns]").astype("datetime64[D]").astype(str)
    assert synthetic_summary(timeframe) == {"start": days[0], "end": days[1], "bars": len(bars)}


def test_spans() -> None:
    assert synthetic_summary("M1")["start"] == "2024-01-01" and synthetic_summary("D1")["start"] == "2018-01-01"
    assert len(synthetic_bars(timeframe="M1", start_date="2019-01-01", end_date="2019-12-31")) == 0


@pytest.mark.parametrize("kwargs,message", [
    ({"timeframe": "H2"}, "`timeframe` must be one of"),
    ({"seed": "7"}, "`seed` must be an integer"),
    ({"start_date": "2020-13-01"}, "`start_date` must be a date YYYY-MM-DD"),
    ({"end_date": 20200101}, "`end_date` must be a date YYYY-MM-DD"),
])
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_bars(**kwargs)  # type: ignore[arg-type]
