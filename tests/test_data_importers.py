"""Importers on real-layout samples, checked value by value against the generic CSV of the same bars."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bars import NS_PER_S, Bars
from engine.importers import DataFormatError, detect_format, read_bars

HOUR = 3600 * NS_PER_S
COLUMNS = ("time", "open", "high", "low", "close", "volume")


@pytest.fixture
def reference(shared_data: Path) -> Bars:
    """EURUSD H1 from the generic CSV: the truth every other layout must reproduce."""
    return read_bars(shared_data / "EURUSD_H1.csv", "EURUSD", "H1")


def assert_same_bars(got: Bars, want: Bars, shift_ns: int = 0) -> None:
    assert len(got) == len(want)
    np.testing.assert_array_equal(got.time, want.time + shift_ns)
    for col in COLUMNS[1:]:
        np.testing.assert_array_equal(getattr(got, col), getattr(want, col), err_msg=col)


def _stamp(ns: np.ndarray, fmt: str) -> list[str]:
    """Format UTC nanoseconds with a strftime pattern (test helper, slow but obvious)."""
    import datetime as dt
    return [dt.datetime.fromtimestamp(int(t) // NS_PER_S, dt.timezone.utc).strftime(fmt) for t in ns]


def test_generic_eurusd(reference: Bars) -> None:
    assert len(reference) == 5000
    assert reference.time[0] == np.datetime64("2017-04-19T09:00", "ns").astype(np.int64)
    assert reference.time[-1] == np.datetime64("2018-02-07T15:00", "ns").astype(np.int64)
    assert (reference.open[0], reference.high[0], reference.low[0], reference.close[0]) == (1.0716, 1.0722, 1.07083, 1.07219)
    assert reference.volume[0] == 1413 and reference.spread is None
    assert reference.source == "EURUSD_H1.csv (generic)" and not reference.synthetic


def test_generic_goog_daily(shared_data: Path) -> None:
    bars = read_bars(shared_data / "GOOG_D1.csv", "GOOG", "D1")
    assert len(bars) == 2148
    assert (bars.time % (86400 * NS_PER_S) == 0).all()
    assert _stamp(bars.time[[0, -1]], "%Y-%m-%d") == ["2004-08-19", "2013-03-01"]
    assert (bars.open[0], bars.high[0], bars.low[0], bars.close[0], bars.volume[0]) == (100, 104.06, 95.96, 100.34, 22351900)
    assert (bars.open[-1], bars.close[-1]) == (797.8, 806.19)


def test_mt5_matches_generic(shared_data: Path, reference: Bars) -> None:
    bars = read_bars(shared_data / "EURUSD_H1_mt5.csv", "EURUSD", "H1")
    assert_same_bars(bars, reference)
    # 8 points at 5 digits (EURUSD prices have up to 5 decimals) is 0.00008 in price units
    np.testing.assert_allclose(bars.spread, 0.00008, rtol=1e-12)
    assert bars.source == "EURUSD_H1_mt5.csv (mt5)"


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                                          ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"")])
def test_mt5_encodings(shared_data: Path, reference: Bars, tmp_path: Path, encoding: str, bom: bytes) -> None:
    text = (shared_data / "EURUSD_H1_mt5.csv").read_bytes().decode("ascii")
    path = tmp_path / "EURUSD_H1_mt5_reencoded.csv"
    path.write_bytes(bom + text.encode(encoding))
    bars = read_bars(path, "EURUSD", "H1")
    assert bars.meta["format"] == "mt5"
    assert_same_bars(bars, reference)


@pytest.mark.parametrize("shift", [2.0, 3, -0.5])
def test_mt5_utc_shift(shared_data: Path, reference: Bars, shift: float) -> None:
    bars = read_bars(shared_data / "EURUSD_H1_mt5.csv", "EURUSD", "H1", utc_shift_hours=shift)
    assert_same_bars(bars, reference, shift_ns=-int(shift * 3600) * NS_PER_S)


def test_mt5_daily_without_time_and_jpy_digits(tmp_path: Path) -> None:
    """D1 exports have no <TIME> column; a 3-digit symbol's points are 0.001."""
    lines = ["<DATE>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>",
             "2024.01.02\t141.02\t142.5\t140.876\t142.1\t51000\t0\t12",
             "2024.01.03\t142.1\t143.355\t141.9\t143.0\t48000\t0\t9"]
    path = tmp_path / "USDJPY_D1.csv"
    path.write_bytes("\r\n".join(lines).encode("utf-16"))
    bars = read_bars(path, "USDJPY", "D1", utc_shift_hours=2)
    assert _stamp(bars.time, "%Y-%m-%d %H:%M") == ["2024-01-01 22:00", "2024-01-02 22:00"]
    np.testing.assert_allclose(bars.spread, [0.012, 0.009])
    np.testing.assert_array_equal(bars.volume, [51000, 48000])


def test_histdata_est_to_utc(reference: Bars, tmp_path: Path) -> None:
    """histdata.com layout written from the reference bars in EST (UTC-5, no DST)."""
    stamps = _stamp(reference.time - 5 * HOUR, "%Y%m%d %H%M%S")
    lines = [f"{s};{o:.6f};{h:.6f};{lo:.6f};{c:.6f};{int(v)}" for s, o, h, lo, c, v in
             zip(stamps, reference.open, reference.high, reference.low, reference.close, reference.volume)]
    path = tmp_path / "DAT_ASCII_EURUSD_M1_2017.csv"
    path.write_text("\r\n".join(lines) + "\r\n")
    assert detect_format(path.read_bytes()) == "histdata"
    bars = read_bars(path, "EURUSD", "H1")
    assert bars.meta["format"] == "histdata"
    assert_same_bars(bars, reference)


def test_histdata_metatrader_variant() -> None:
    """histdata.com's DAT_MT files: 'YYYY.MM.DD,HH:MM,o,h,l,c,v', EST like the ASCII files."""
    content = (b"2012.02.01,00:00,1.306600,1.306600,1.306560,1.306560,0\r\n"
               b"2012.02.01,00:01,1.306570,1.306570,1.306470,1.306560,0\r\n")
    bars = read_bars(content, "EURUSD", "M1", filename="DAT_MT_EURUSD_M1_201202.csv")
    assert bars.meta["format"] == "histdata"
    assert _stamp(bars.time, "%Y-%m-%d %H:%M") == ["2012-02-01 05:00", "2012-02-01 05:01"]
    np.testing.assert_array_equal(bars.low, [1.30656, 1.30647])


def test_dukascopy_utc(reference: Bars, tmp_path: Path) -> None:
    stamps = _stamp(reference.time, "%d.%m.%Y %H:%M:%S.000")
    lines = ["Gmt time,Open,High,Low,Close,Volume"] + [
        f"{s},{o:.5f},{h:.5f},{lo:.5f},{c:.5f},{v:.4f}" for s, o, h, lo, c, v in
        zip(stamps, reference.open, reference.high, reference.low, reference.close, reference.volume)]
    path = tmp_path / "EURUSD_Candlestick_1_Hour_BID.csv"
    path.write_text("\r\n".join(lines) + "\r\n")
    bars = read_bars(path, "EURUSD", "H1", fmt="dukascopy")
    assert_same_bars(bars, reference)
    assert read_bars(path, "EURUSD", "H1").meta["format"] == "dukascopy"


@pytest.mark.parametrize("text,spread", [
    ("Date,Open,High,Low,Close\n2024-01-02 10:00,1,2,0.5,1.5\n2024-01-02 11:00,1.5,2,1,1\n", None),
    ("timestamp;open;high;low;close;volume;spread\n2024-01-02T10:00:00Z;1;2;0.5;1.5;3;0.1\n"
     "2024-01-02T11:00:00Z;1.5;2;1;1;4;0.2\n", [0.1, 0.2]),
    ('"Datetime","Open","High","Low","Close","Volume"\n"2024-01-02 10:00:00.000","1","2","0.5","1.5","3"\n'
     '"2024-01-02 11:00:00.000","1.5","2","1","1","4"\n', None),
    ("time\tOpen\tHigh\tLow\tClose\n1704189600\t1\t2\t0.5\t1.5\n1704193200\t1.5\t2\t1\t1\n", None),
    ("Date,Time,Open,High,Low,Close\n2024.01.02,10:00,1,2,0.5,1.5\n2024.01.02,11:00,1.5,2,1,1\n", None),
    ("Time,Open,High,Low,Close,Tick_Volume\n2024-01-02T10:00:00+00:00,1,2,0.5,1.5,3\n"
     "2024-01-02T11:00:00+00:00,1.5,2,1,1,4\n\n", None),
])
def test_generic_variants(text: str, spread: list[float] | None) -> None:
    bars = read_bars(text.encode(), "X", "H1", filename="variant.csv")
    assert _stamp(bars.time, "%Y-%m-%d %H:%M") == ["2024-01-02 10:00", "2024-01-02 11:00"]
    np.testing.assert_array_equal(bars.close, [1.5, 1.0])
    assert bars.spread is None if spread is None else list(bars.spread) == spread


GOOD = "Date,Open,High,Low,Close,Volume\n2024-01-02 10:00,1,2,0.5,1.5,3\n2024-01-02 11:00,1.5,2,1,1,4\n"


@pytest.mark.parametrize("row,problem", [
    ("2024-01-02 1200,1,2,0.5,1.5,3", "unparsable time '2024-01-02 1200'"),
    ("2024-02-30 12:00,1,2,0.5,1.5,3", "unparsable time '2024-02-30 12:00'"),
    ("2024-01-02 12:00,1,2,0.5,abc,3", "unparsable number 'abc' in column close"),
    ("2024-01-02 12:00,1,2,0.5,,3", "unparsable number '' in column close"),
    ("2024-01-02 11:00,1,2,0.5,1.5,3", "not after the previous bar"),
    ("2024-01-02 10:30,1,2,0.5,1.5,3", "not after the previous bar"),
    ("2024-01-02 12:00,1,1,2,1.5,3", "high 1.0 < low 2.0"),
    ("2024-01-02 12:00,1,2,0.5,2.5,3", "high 2.0 < max(open 1.0, close 2.5)"),
    ("2024-01-02 12:00,1,2,1.2,1.5,3", "low 1.2 > min(open 1.0, close 1.5)"),
    ("2024-01-02 12:00,nan,2,0.5,1.5,3", "open is nan (NaN and infinity"),
    ("2024-01-02 12:00,1,inf,0.5,1.5,3", "high is inf"),
    ("2024-01-02 12:00,1,2,0.5,1.5,-3", "volume is negative"),
    ("2024-01-02 12:00,1,2,0.5,1.5", "expected 6 fields separated by ','"),
    ("2024-01-02 11:30,1,2,0.5,1.5,3", "1800 s after the previous one, but H1 bars are 3600 s apart"),
])
def test_bad_rows_name_file_line_and_problem(row: str, problem: str) -> None:
    with pytest.raises(DataFormatError) as err:
        read_bars((GOOD + row + "\n2024-01-02 23:00,1,2,0.5,1.5,3\n").encode(), "X", "H1", filename="bad.csv")
    assert err.value.line == 4 and err.value.filename == "bad.csv"
    assert str(err.value).startswith("bad.csv, line 4: ") and problem in str(err.value)


@pytest.mark.parametrize("content,line,problem", [
    (b"", 1, "empty file"),
    (b"\r\n\r\n", 1, "empty file"),
    (b"\xff\xfe", 1, "empty file"),
    ("\r\n".encode("utf-16"), 1, "empty file"),
    (b"Date,Open,High,Low,Close\n", 2, "no bars after the header"),
    (b"\r\n\r\nDate,Open,High,Low,Close\r\n2024-01-02,1,2,0.5,1\r\n2024-01-02,1,2,0.5,1\r\n", 5, "not after"),
    (b"hello world\n1,2,3\n", 1, "known layouts: mt5"),
    ("<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>\r\n"
     "2017.04.19\t09:00:00\t1.07\t1.08\t1.06\t1.07\t1\t0\t8\r\n"
     "2017.13.19\t10:00:00\t1.07\t1.08\t1.06\t1.07\t1\t0\t8\r\n".encode("utf-16"), 3,
     "unparsable time '2017.13.19' in column <DATE> (expected YYYY.MM.DD)"),
    (b"20170419 090000;1.07;1.08;1.06;1.07;0\n20170419 100000;1.07;1.08;1.06;1.07\n", 2, "expected 6 fields"),
    (b"Gmt time,Open,High,Low,Close,Volume\n19.04.2017 09:00:00.000,1,2,0.5,1,1\n"
     b"19.04.2017 10:00:00,1,2,0.5,1,1\n", 3, "expected DD.MM.YYYY hh:mm:ss.fff"),
])
def test_bad_files(content: bytes, line: int | None, problem: str) -> None:
    with pytest.raises(DataFormatError) as err:
        read_bars(content, "X", "H1", filename="upload.csv")
    assert str(err.value).startswith("upload.csv") and problem in str(err.value)
    if line is not None:
        assert err.value.line == line and f"line {line}:" in str(err.value)


def test_resample_finer_reads_a_file_at_its_own_timeframe(shared_data: Path, reference: Bars) -> None:
    from engine.resample import resample

    bars = read_bars(shared_data / "EURUSD_H1.csv", "EURUSD", "D1", resample_finer=True)
    assert_same_bars(bars, resample(reference, "D1"))
    assert bars.timeframe == "D1" and bars.source == "EURUSD_H1.csv (generic), resampled from H1"
    assert read_bars(shared_data / "EURUSD_H1.csv", "EURUSD", "H1", resample_finer=True).timeframe == "H1"
    # one stray half-hour bar in an hourly file is still an error, not a reason to read it as M30
    with pytest.raises(DataFormatError, match=r"line 4: bar is 1800 s after"):
        read_bars((GOOD + "2024-01-02 11:30,1,2,0.5,1.5,3\n" + "".join(
            f"2024-01-03 {h:02d}:00,1,2,0.5,1.5,3\n" for h in range(10))).encode(), "X", "H4", resample_finer=True)


def test_wrong_timeframe_detected(shared_data: Path) -> None:
    with pytest.raises(DataFormatError, match="no two bars are one M1"):
        read_bars(shared_data / "EURUSD_H1.csv", "EURUSD", "M1")
    with pytest.raises(DataFormatError, match=r"line 3: bar is 3600 s after"):
        read_bars(shared_data / "EURUSD_H1.csv", "EURUSD", "H4")


def test_bad_arguments(shared_data: Path) -> None:
    path = shared_data / "EURUSD_H1.csv"
    with pytest.raises(ValueError, match=r"`fmt` must be one of \['auto', 'mt5'"):
        read_bars(path, "X", "H1", fmt="csv")
    with pytest.raises(ValueError, match="`timeframe` must be one of"):
        read_bars(path, "X", "H2")
    with pytest.raises(ValueError, match="`utc_shift_hours` must be a number"):
        read_bars(path, "X", "H1", utc_shift_hours=float("nan"))
    with pytest.raises(ValueError, match="`utc_shift_hours` applies to mt5 and generic files only"):
        read_bars(b"20170419 090000;1.07;1.08;1.06;1.07;0\n", "X", "M1", utc_shift_hours=1)
    with pytest.raises(DataFormatError, match="header lacks"):
        read_bars(shared_data / "EURUSD_H1_mt5.csv", "X", "H1", fmt="generic")
    with pytest.raises(FileNotFoundError):
        read_bars(shared_data / "missing.csv", "X", "H1")


def test_large_m1_file_is_vectorised() -> None:
    """300k histdata lines parse in well under the seconds a per-line Python parser needs."""
    n = 300_000
    t0 = np.datetime64("2020-01-06T00:00", "m").astype(np.int64)
    minutes = t0 + np.arange(n) * 1  # continuous minutes: still a valid M1 series
    price = 1.1 + np.cumsum(np.random.default_rng(3).normal(0, 1e-4, n))
    stamps = np.datetime_as_string(minutes.astype("datetime64[m]"), unit="m")
    lines = [f"{s[0:4]}{s[5:7]}{s[8:10]} {s[11:13]}{s[14:16]}00;{p:.5f};{p + 0.0002:.5f};{p - 0.0002:.5f};{p:.5f};0"
             for s, p in zip(stamps, price)]
    data = ("\r\n".join(lines) + "\r\n").encode()
    started = time.perf_counter()
    bars = read_bars(data, "X", "M1", filename="big.csv")
    elapsed = time.perf_counter() - started
    assert len(bars) == n
    assert bars.time[0] == (t0 * 60 + 5 * 3600) * NS_PER_S
    np.testing.assert_allclose(bars.close, np.round(price, 5))
    assert elapsed < 15, f"300k lines took {elapsed:.1f} s"


def _write_layout(fmt: str, bars: Bars) -> bytes:
    """Bars in one of the four layouts (times UTC; histdata shifted to EST like the real files)."""
    rows = zip(bars.time, bars.open, bars.high, bars.low, bars.close, bars.volume)
    if fmt == "mt5":
        head = ["<DATE>\t<TIME>\t<OPEN>\t<HIGH>\t<LOW>\t<CLOSE>\t<TICKVOL>\t<VOL>\t<SPREAD>"]
        body = [f"{_stamp([t], '%Y.%m.%d')[0]}\t{_stamp([t], '%H:%M:%S')[0]}\t{o:.5f}\t{h:.5f}\t{lo:.5f}\t{c:.5f}"
                f"\t{int(v)}\t0\t3" for t, o, h, lo, c, v in rows]
        return "\r\n".join(head + body).encode("utf-16")
    if fmt == "histdata":
        body = [f"{_stamp([t - 5 * HOUR], '%Y%m%d %H%M%S')[0]};{o:.5f};{h:.5f};{lo:.5f};{c:.5f};{int(v)}"
                for t, o, h, lo, c, v in rows]
        return "\n".join(body).encode()
    if fmt == "dukascopy":
        head = ["Gmt time,Open,High,Low,Close,Volume"]
        body = [f"{_stamp([t], '%d.%m.%Y %H:%M:%S.000')[0]},{o:.5f},{h:.5f},{lo:.5f},{c:.5f},{v:.2f}"
                for t, o, h, lo, c, v in rows]
        return "\r\n".join(head + body).encode()
    head = [",Open,High,Low,Close,Volume"]
    body = [f"{_stamp([t], '%Y-%m-%d %H:%M:%S')[0]},{float(o)!r},{float(h)!r},{float(lo)!r},{float(c)!r},{int(v)}"
            for t, o, h, lo, c, v in rows]
    return "\n".join(head + body).encode()


_cents = st.integers(min_value=50_000, max_value=20_000_000)  # prices 0.5 .. 200 in 1e-5 steps


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), _cents, _cents, st.integers(0, 5000), st.integers(0, 5000),
                          st.integers(0, 10**7)), min_size=1, max_size=40),
       st.sampled_from(["mt5", "histdata", "dukascopy", "generic"]), st.data())
def test_any_valid_file_round_trips_and_any_bad_field_names_its_line(
        rows: list[tuple[int, ...]], fmt: str, data: st.DataObject) -> None:
    gaps = [r[0] for r in rows]
    if len(gaps) > 1:
        gaps[1] = 1  # one pair of bars one hour apart, as any real H1 file has
    hours = np.cumsum(gaps) + 438_000  # about 2020, whole hours: H1 bars
    ko, kc = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])  # prices in 1e-5 units
    kh = np.maximum(ko, kc) + np.array([r[3] for r in rows])
    kl = np.minimum(ko, kc) - np.array([r[4] for r in rows])
    bars = Bars("X", "H1", hours * HOUR, ko / 1e5, kh / 1e5, kl / 1e5, kc / 1e5, np.array([r[5] for r in rows], float))
    content = _write_layout(fmt, bars)
    got = read_bars(content, "X", "H1", filename="p.csv")
    assert got.meta["format"] == fmt
    assert_same_bars(got, bars)
    # break one number on one line: the error must point at exactly that line
    text = content.decode("utf-16" if fmt == "mt5" else "ascii")
    lines = text.split("\r\n" if "\r\n" in text else "\n")
    header = 0 if fmt == "histdata" else 1
    row = data.draw(st.integers(0, len(rows) - 1))
    delim = {"mt5": "\t", "histdata": ";"}.get(fmt, ",")
    fields = lines[header + row].split(delim)
    fields[-2 if fmt != "mt5" else 5] = "1.2.3"
    lines[header + row] = delim.join(fields)
    with pytest.raises(DataFormatError) as err:
        read_bars("\n".join(lines).encode(), "X", "H1", filename="p.csv", fmt=fmt)
    assert err.value.line == header + row + 1 and "unparsable number '1.2.3'" in str(err.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.from_regex(r"-?[0-9]{1,9}(\.[0-9]{0,6})?", fullmatch=True), min_size=1, max_size=50))
def test_integer_decimal_parser_equals_numpy(values: list[str]) -> None:
    """The fast path must return exactly the floats numpy's own parser returns, sign of zero included."""
    from engine.textscan import plain_decimals

    strings = np.array([v.encode() for v in values])
    matrix = np.frombuffer(strings.tobytes(), np.uint8).reshape(len(values), -1)
    fast = plain_decimals(matrix)
    want = strings.astype(np.float64)
    assert fast is not None
    np.testing.assert_array_equal(fast, want)
    np.testing.assert_array_equal(np.signbit(fast), np.signbit(want))
