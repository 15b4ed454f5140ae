"""Resampling against a plain Python loop, UTC alignment, and the errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bars import NS_PER_S, TIMEFRAMES, Bars
from engine.importers import read_bars
from engine.resample import resample
from engine.synthetic import synthetic_bars


def reference_resample(bars: Bars, timeframe: str) -> list[tuple[float, ...]]:
    """The obvious loop: group by UTC bucket, first/max/min/last/sum/mean."""
    width = TIMEFRAMES[timeframe] * NS_PER_S
    out: dict[int, list[float]] = {}
    spreads: dict[int, list[float]] = {}
    for i in range(len(bars)):
        key = int(bars.time[i]) // width * width
        if key not in out:
            out[key] = [key, bars.open[i], bars.high[i], bars.low[i], bars.close[i], bars.volume[i]]
            spreads[key] = []
        else:
            row = out[key]
            row[2], row[3] = max(row[2], bars.high[i]), min(row[3], bars.low[i])
            row[4] = bars.close[i]
            row[5] += bars.volume[i]
        if bars.spread is not None:
            spreads[key].append(float(bars.spread[i]))
    return [(*row, sum(spreads[k]) / len(spreads[k]) if spreads[k] else None) for k, row in out.items()]


def as_rows(bars: Bars) -> list[tuple[float, ...]]:
    spread = [None] * len(bars) if bars.spread is None else list(bars.spread)
    return list(zip(bars.time.tolist(), bars.open, bars.high, bars.low, bars.close, bars.volume, spread))


def assert_matches_reference(got: Bars, source: Bars, timeframe: str) -> None:
    want = reference_resample(source, timeframe)
    rows = as_rows(got)
    assert len(rows) == len(want)
    for g, w in zip(rows, want):
        assert g[:5] == pytest.approx(w[:5], rel=0, abs=0)
        assert g[5] == pytest.approx(w[5], rel=1e-12)
        assert (g[6] is None and w[6] is None) or g[6] == pytest.approx(w[6], rel=1e-12)


@pytest.mark.parametrize("timeframe", ["H4", "D1"])
def test_eurusd_h1_matches_loop(shared_data: Path, timeframe: str) -> None:
    h1 = read_bars(shared_data / "EURUSD_H1_mt5.csv", "EURUSD", "H1")
    got = resample(h1, timeframe)
    assert got.timeframe == timeframe and got.symbol == "EURUSD"
    assert (got.time % (TIMEFRAMES[timeframe] * NS_PER_S) == 0).all()  # D1 at 00:00 UTC, H4 at 00/04/08...
    assert_matches_reference(got, h1, timeframe)


@pytest.mark.parametrize("timeframe", ["M5", "M15", "M30", "H1"])
def test_synthetic_m1_matches_loop(timeframe: str) -> None:
    m1 = synthetic_bars(timeframe="M1", start_date="2024-03-04", end_date="2024-03-05")
    got = resample(m1, timeframe)
    assert got.synthetic and got.meta == {"resampled_from": "M1"}
    assert_matches_reference(got, m1, timeframe)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=200, unique=True),
       st.sampled_from(["M5", "H1", "D1"]))
def test_gappy_minutes_match_loop(minutes: list[int], timeframe: str) -> None:
    t = (np.array(sorted(minutes), np.int64) * 60 + 1_700_000_000 // 86400 * 86400) * NS_PER_S
    rng = np.random.default_rng(len(minutes))
    o, c = rng.uniform(1, 2, len(t)), rng.uniform(1, 2, len(t))
    bars = Bars("X", "M1", t, o, np.maximum(o, c) + 0.1, np.minimum(o, c) - 0.1, c,
                rng.uniform(0, 10, len(t)), rng.uniform(0, 1e-4, len(t)))
    assert_matches_reference(resample(bars, timeframe), bars, timeframe)


def test_same_timeframe_is_identity_and_empty_is_empty() -> None:
    h1 = synthetic_bars(timeframe="H1", start_date="2020-01-06", end_date="2020-01-06")
    assert resample(h1, "H1") is h1
    empty = h1.window(0, 0)
    assert len(resample(empty, "D1")) == 0


@pytest.mark.parametrize("source,target", [("H1", "M5"), ("D1", "H4"), ("H4", "M1")])
def test_finer_target_is_an_error(source: str, target: str) -> None:
    bars = synthetic_bars(timeframe=source, start_date="2020-01-06", end_date="2020-01-10")
    with pytest.raises(ValueError, match=f"cannot resample {source} bars to `timeframe` '{target}'"):
        resample(bars, target)


def test_unknown_timeframe_is_an_error() -> None:
    bars = synthetic_bars(timeframe="H1", start_date="2020-01-06", end_date="2020-01-06")
    with pytest.raises(ValueError, match="`timeframe` must be one of"):
        resample(bars, "W1")


def test_package_export_is_the_function_even_after_the_store_imported_the_module() -> None:
    """`from engine import resample` (as the README shows) gives the function, not the submodule."""
    import engine.store  # noqa: F401 - imports the engine.resample submodule first
    from engine import resample as exported

    assert callable(exported) and exported is resample
