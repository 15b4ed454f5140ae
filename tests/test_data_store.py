"""DataStore on real files in tmp_path: round trip, memory map, merge, list, errors, atomicity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.bars import TIMEFRAMES
from engine.importers import DataFormatError, read_bars
from engine.resample import resample
from engine.store import DTYPE, DataNotFound, DataStore, default_data_dir
from engine.synthetic import synthetic_bars

COLUMNS = ("time", "open", "high", "low", "close", "volume")


@pytest.fixture
def store(tmp_path: Path) -> DataStore:
    return DataStore(tmp_path / "data")


@pytest.fixture
def mt5(shared_data: Path) -> Path:
    return shared_data / "EURUSD_H1_mt5.csv"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_is_memory_mapped(store: DataStore, mt5: Path) -> None:
    row = store.import_csv(mt5, "eurusd", "H1")
    assert row == {"symbol": "EURUSD", "timeframe": "H1", "start": "2017-04-19", "end": "2018-02-07",
                   "bars": 5000, "synthetic": False, "source": "EURUSD_H1_mt5.csv (mt5)",
                   "imported": 5000, "added": 5000, "format": "mt5"}
    path = store.root / "bars" / "EURUSD" / "H1.npy"
    raw = np.load(path, mmap_mode="r")
    assert isinstance(raw, np.memmap) and raw.dtype == DTYPE
    bars = store.load("EURUSD", "H1")
    want = read_bars(mt5, "EURUSD", "H1")
    for col in COLUMNS:
        np.testing.assert_array_equal(getattr(bars, col), getattr(want, col))
    np.testing.assert_allclose(bars.spread, 0.00008)
    assert not bars.close.flags.writeable and isinstance(bars.close.base, np.memmap)
    assert not bars.synthetic and bars.source == "EURUSD_H1_mt5.csv (mt5)"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["rows"] == 5000 and side["format"] == "mt5" and side["synthetic"] is False
    assert side["start"] == "2017-04-19" and side["end"] == "2018-02-07" and "imported_at" in side
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_load_date_range_is_inclusive(store: DataStore, mt5: Path) -> None:
    store.import_csv(mt5, "EURUSD", "H1")
    bars = store.load("EURUSD", "H1", "2017-06-01", "2017-06-02")
    days = np.unique(bars.time.astype("datetime64[ns]").astype("datetime64[D]")).astype(str)
    full = store.load("EURUSD", "H1")
    inside = (full.time >= np.datetime64("2017-06-01", "ns").astype(np.int64)) & \
             (full.time < np.datetime64("2017-06-03", "ns").astype(np.int64))
    assert list(days) == ["2017-06-01", "2017-06-02"] and len(bars) == inside.sum() > 40
    np.testing.assert_array_equal(bars.time, full.time[inside])


def test_merge_new_rows_win(store: DataStore, mt5: Path, tmp_path: Path) -> None:
    lines = mt5.read_text().splitlines()
    first = tmp_path / "first.csv"
    first.write_text("\n".join(lines[:3001]))
    second = tmp_path / "second.csv"  # overlaps rows 2001..3000 with a different close
    changed = []
    for line in lines[2001:]:
        f = line.split("\t")
        f[5] = f"{float(f[5]) + 0.00001:.5f}"
        f[3] = f"{max(float(f[3]), float(f[5])):.5f}"
        changed.append("\t".join(f))
    second.write_text("\n".join([lines[0], *changed]))
    assert store.import_csv(first, "EURUSD", "H1")["bars"] == 3000
    row = store.import_csv(second, "EURUSD", "H1")
    assert (row["bars"], row["imported"], row["added"]) == (5000, 3000, 2000)
    bars = store.load("EURUSD", "H1")
    want = read_bars(mt5, "EURUSD", "H1")
    np.testing.assert_array_equal(bars.time, want.time)
    np.testing.assert_array_equal(bars.close[:2000], want.close[:2000])
    np.testing.assert_allclose(bars.close[2000:], want.close[2000:] + 0.00001, atol=1e-9)
    imports = json.loads((store.root / "bars/EURUSD/H1.json").read_text())["imports"]
    assert [i["source"] for i in imports] == ["first.csv (mt5)", "second.csv (mt5)"]


def test_list_always_has_synth(store: DataStore, shared_data: Path) -> None:
    rows = store.list()
    assert [(r["symbol"], r["timeframe"]) for r in rows] == [("SYNTH", tf) for tf in TIMEFRAMES]
    assert all(r["synthetic"] and r["source"] == "synthetic (seed 7)" for r in rows)
    store.import_csv(shared_data / "GOOG_D1.csv", "GOOG", "D1")
    store.import_csv(shared_data / "EURUSD_H1.csv", "EURUSD", "H1")
    rows = store.list()
    assert rows[:2] == [
        {"symbol": "EURUSD", "timeframe": "H1", "start": "2017-04-19", "end": "2018-02-07", "bars": 5000,
         "synthetic": False, "source": "EURUSD_H1.csv (generic)"},
        {"symbol": "GOOG", "timeframe": "D1", "start": "2004-08-19", "end": "2013-03-01", "bars": 2148,
         "synthetic": False, "source": "GOOG_D1.csv (generic)"},
    ]
    h1 = next(r for r in rows if r["symbol"] == "SYNTH" and r["timeframe"] == "H1")
    assert h1["bars"] == len(synthetic_bars(timeframe="H1")) and h1["start"] == "2018-01-01"


def test_missing_timeframe_is_resampled_from_finer(store: DataStore, mt5: Path) -> None:
    store.import_csv(mt5, "EURUSD", "H1")
    d1 = store.load("EURUSD", "D1", "2017-05-01", "2017-05-31")
    want = resample(store.load("EURUSD", "H1", "2017-05-01", "2017-05-31"), "D1")
    np.testing.assert_array_equal(d1.time, want.time)
    np.testing.assert_array_equal(d1.high, want.high)
    assert d1.timeframe == "D1" and d1.source == "EURUSD_H1_mt5.csv (mt5), resampled from H1"


def test_synth_comes_from_the_generator(store: DataStore) -> None:
    bars = store.load("synth", "H4", "2021-03-01", "2021-03-31")
    want = synthetic_bars("SYNTH", "H4", "2021-03-01", "2021-03-31")
    np.testing.assert_array_equal(bars.close, want.close)
    assert bars.synthetic and bars.label == "SYNTH H4 [SYNTHETIC]"
    with pytest.raises(DataNotFound, match="available 2024-01-01 .. 2025-12-31") as err:
        store.load("SYNTH", "M1", "2019-01-01", "2019-01-31")
    assert err.value.kind == "range"


def test_not_found_kinds(store: DataStore, shared_data: Path) -> None:
    store.import_csv(shared_data / "GOOG_D1.csv", "GOOG", "D1")
    with pytest.raises(DataNotFound, match=r"no data for symbol 'AAPL'; available symbols: \['GOOG', 'SYNTH'\]") as err:
        store.load("AAPL", "D1")
    assert err.value.kind == "symbol" and isinstance(err.value, LookupError)
    with pytest.raises(DataNotFound, match=r"no GOOG H1 data and no finer timeframe.*\['D1'\]") as err:
        store.load("GOOG", "H1")
    assert err.value.kind == "symbol"
    with pytest.raises(DataNotFound, match="available 2004-08-19 .. 2013-03-01") as err:
        store.load("GOOG", "D1", "2020-01-01", "2020-12-31")
    assert err.value.kind == "range"


def test_failed_import_changes_nothing(store: DataStore, mt5: Path, tmp_path: Path) -> None:
    store.import_csv(mt5, "EURUSD", "H1")
    before = snapshot(store.root)
    bad = tmp_path / "bad.csv"
    lines = mt5.read_text().splitlines()
    lines[4000] = lines[4000].replace("\t", "\tx", 1)  # unparsable time on line 4001
    bad.write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match="bad.csv, line 4001: unparsable time"):
        store.import_csv(bad, "EURUSD", "H1")
    with pytest.raises(DataFormatError):
        store.import_csv(bad, "NEWSYM", "H1")
    assert snapshot(store.root) == before
    assert [r["symbol"] for r in store.list() if not r["synthetic"]] == ["EURUSD"]


def test_bytes_upload(store: DataStore, mt5: Path) -> None:
    row = store.import_csv(mt5.read_bytes(), "EURUSD", "H1", utc_shift_hours=2, filename="upload.csv")
    assert row["source"] == "upload.csv (mt5)"
    assert store.load("EURUSD", "H1").time[0] == np.datetime64("2017-04-19T07:00", "ns").astype(np.int64)
    with pytest.raises(DataFormatError, match="^upload.csv, line 1: empty file"):
        store.import_csv(b"", "EURUSD", "H1", filename="upload.csv")


@pytest.mark.parametrize("symbol,timeframe,message", [
    ("SYNTH", "H1", "`symbol` 'SYNTH' is reserved"),
    ("synth", "H1", "`symbol` 'SYNTH' is reserved"),
    ("EUR/USD", "H1", "`symbol` must be 1-32 characters"),
    ("", "H1", "`symbol` must be 1-32 characters"),
    ("X" * 33, "H1", "`symbol` must be 1-32 characters"),
    ("..", "H1", "at least one letter or digit"),
    ("EURUSD", "1h", "`timeframe` must be one of"),
])
def test_import_argument_errors(store: DataStore, mt5: Path, symbol: str, timeframe: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.import_csv(mt5, symbol, timeframe)
    assert not (store.root / "bars").exists()


def test_load_argument_errors(store: DataStore) -> None:
    with pytest.raises(ValueError, match="`start_date` must be a date YYYY-MM-DD"):
        store.load("SYNTH", "H1", "2020-1-1")
    with pytest.raises(ValueError, match="`end_date` must not be before `start_date`"):
        store.load("SYNTH", "H1", "2020-02-01", "2020-01-01")
    with pytest.raises(ValueError, match="`symbol` must be"):
        store.load("../etc", "H1")


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QMX_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("QMX_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".quantmindx"


def _import_part(root: str, path: str) -> None:
    DataStore(root).import_csv(Path(path), "EURUSD", "H1")


def test_concurrent_imports_lose_nothing(tmp_path: Path, mt5: Path) -> None:
    """Four processes import disjoint quarters at once; the per-symbol lock keeps every row."""
    import multiprocessing

    lines = mt5.read_text().splitlines()
    parts = []
    for i in range(4):
        part = tmp_path / f"part{i}.csv"
        part.write_text("\n".join([lines[0], *lines[1 + i * 1250:1 + (i + 1) * 1250]]))
        parts.append(str(part))
    root = str(tmp_path / "data")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_import_part, args=(root, p)) for p in parts]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    bars = DataStore(root).load("EURUSD", "H1")
    np.testing.assert_array_equal(bars.time, read_bars(mt5, "EURUSD", "H1").time)


def test_list_skips_a_damaged_file(store: DataStore, mt5: Path, caplog: pytest.LogCaptureFixture) -> None:
    store.import_csv(mt5, "EURUSD", "H1")
    store.import_csv(mt5, "EURUSD2", "H1")
    (store.root / "bars" / "EURUSD2" / "H1.npy").write_bytes(b"not numpy")
    rows = [r["symbol"] for r in store.list() if not r["synthetic"]]
    assert rows == ["EURUSD"] and "skipping unreadable" in caplog.text


def test_merge_with_offset_times_is_refused(store: DataStore, mt5: Path) -> None:
    store.import_csv(mt5, "EURUSD", "H1")
    before = snapshot(store.root)
    with pytest.raises(DataFormatError, match=r"EURUSD_H1_mt5.csv: merging with the stored H1 bars would put "
                                               r"the bar at 2017-04-19T09:00:00 only 1800 s after"):
        store.import_csv(mt5, "EURUSD", "H1", utc_shift_hours=0.5)
    assert snapshot(store.root) == before
