"""The spiced variant end to end through engine.run_backtest, on synthetic and real bars."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.backtest import run_backtest
from engine.bars import Bars
from engine.config import parse_config
from engine.importers import read_bars
from engine.regime import RANGING, VOLATILE, RegimeParams, detect_regimes
from engine.sizing import sizing_atr
from engine.synthetic import synthetic_bars


@pytest.fixture(scope="module")
def synth() -> Bars:
    return synthetic_bars("SYNTH", "H1", "2020-01-01", "2020-12-31")


@pytest.fixture(scope="module")
def eurusd() -> Bars:
    from tests.conftest import SHARED_DATA

    return read_bars(SHARED_DATA / "EURUSD_H1.csv", "EURUSD", "H1")


def _run(bars: Bars, variant: str, strategy: str = "sma_cross", spiced: dict | None = None,
         logger: logging.Logger | None = None, **extra: Any) -> dict[str, Any]:
    body = {"symbol": bars.symbol, "timeframe": "H1", "variant": variant, "strategy": strategy,
            "spiced": spiced or {}, **extra}
    return run_backtest(parse_config(body), bars=bars, logger=logger)


def _decisions(out: dict[str, Any]) -> set[tuple[int, str]]:
    """(decision bar, side) of every entry: a trade filled at bar b was decided on b - 1."""
    rows = out["results"]["trades"] + ([out["results"]["open_trade"]] if out["results"]["open_trade"] else [])
    return {(t["entry_bar"] - 1, t["side"]) for t in rows}


@pytest.mark.parametrize("strategy", ["sma_cross", "rsi_reversion"])
def test_every_vanilla_entry_is_taken_or_filtered_with_a_reason(synth: Bars, strategy: str) -> None:
    # rsi_reversion asks again on every bar beyond its level, each refusal listed: keep under the cap
    synth = synth if strategy == "sma_cross" else synth.window(0, 2000)
    vanilla = _run(synth, "vanilla", strategy)
    spiced = _run(synth, "spiced", strategy)
    ra = spiced["results"]["regime_analytics"]
    blocked = set(ra["options"]["blocked_regimes"])
    filtered = {(f["bar"], f["side"]): f for f in ra["filtered_trades"]}
    assert ra["filtered_total"] == len(filtered) > 0  # under the list cap here
    taken = _decisions(spiced)
    for entry in _decisions(vanilla):
        assert entry in taken or entry in filtered, entry
    labels = detect_regimes(synth.high, synth.low, synth.close).labels
    names = ra["regimes"]
    for (bar, _), f in filtered.items():
        assert f["regime"] == names[labels[bar]] and f["regime"] in blocked
        assert f["reason"].startswith(f"regime {f['regime']} is blocked (")
    for bar, _ in taken:  # nothing entered in a hostile regime
        assert names[labels[bar]] not in blocked
    perf = ra["performance_by_regime"]
    assert sum(p["trades"] for p in perf.values()) == spiced["total_trades"]
    assert all(perf[r]["trades"] == 0 for r in blocked)
    assert sum(ra["filtered_by_regime"].values()) == spiced["results"]["blocked_entries"]


def test_with_filter_and_sizing_off_spiced_trades_exactly_as_vanilla(synth: Bars) -> None:
    vanilla = _run(synth, "vanilla", size=25_000)
    spiced = _run(synth, "spiced", spiced={"regime_filter": False, "risk_sizing": False}, size=25_000)
    assert spiced["results"]["trades"] == vanilla["results"]["trades"]
    assert spiced["final_balance"] == pytest.approx(vanilla["final_balance"], abs=1e-6)


def test_first_entry_is_sized_by_the_documented_formula(synth: Bars) -> None:
    out = _run(synth, "spiced", spiced={"blocked_regimes": []}, initial_balance=10_000)
    first = out["results"]["trades"][0]
    i = first["entry_bar"] - 1
    # No stop in sma_cross: virtual stop 2 x ATR(14); 1% of 10,000 at risk; whole units.
    atr = sizing_atr(synth.high, synth.low, synth.close, 14)[i]
    assert first["size"] == math.floor(10_000 * 0.01 / (2.0 * atr))
    sizes = {t["size"] for t in out["results"]["trades"]}
    assert len(sizes) > 10  # sizes follow volatility and equity, not a constant


def test_stop_loss_sizes_on_the_stop_and_kelly_scales_later_entries(synth: Bars) -> None:
    spiced = {"blocked_regimes": [], "kelly_min_trades": 5, "kelly_floor": 0.0, "max_leverage": 1000.0}
    out = _run(synth, "spiced", spiced=spiced, params={"stop_loss_pct": 0.5})
    first = out["results"]["trades"][0]
    ref = float(synth.close[first["entry_bar"] - 1])
    assert first["size"] == math.floor(10_000 * 0.01 / (ref * 0.005))
    sizing = out["results"]["regime_analytics"]["sizing"]
    assert sizing["closed_trades_seen"] >= 5 and sizing["kelly_fraction"] is not None
    json.dumps(out, allow_nan=False)


def test_analytics_shape_is_json_and_consistent(synth: Bars) -> None:
    out = _run(synth, "spiced")
    ra = out["results"]["regime_analytics"]
    json.dumps(out, allow_nan=False)
    per = ra["bars_per_regime"]
    assert sum(v["bars"] for v in per.values()) == len(synth)
    assert sum(v["pct"] for v in per.values()) == pytest.approx(100, abs=0.05)
    trans = ra["transitions"]
    assert ra["transitions_total"] == len(trans) > 10
    for a, b in zip(trans, trans[1:]):
        assert a["to"] == b["from"] and a["from"] != a["to"] and a["bar"] < b["bar"]
    assert trans[0]["from"] == "warmup" and trans[0]["bar"] == ra["warmup_bars"]
    assert trans[0]["time"].endswith("Z") and ra["current_regime"] == trans[-1]["to"]
    assert set(ra) >= {"options", "performance_by_regime", "filtered_trades", "filtered_total", "sizing"}


def test_logs_regime_changes_and_filtered_entries_with_a_cap(synth: Bars,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.spiced.logcap")
    with caplog.at_level(logging.INFO, logger=logger.name):
        out = _run(synth, "spiced", spiced={"log_limit": 40}, logger=logger)
    ours = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(("Regime", "Entry filtered: BUY blocked in regime",
                                          "Entry filtered: SELL blocked in regime"))]
    assert len(ours) == 40
    assert any(m.startswith("Regime change: warmup -> ") for m in ours)
    assert any(" blocked in regime " in m and "(bar " in m for m in ours)
    summary = [r.getMessage() for r in caplog.records if "further regime log lines" in r.getMessage()]
    ra = out["results"]["regime_analytics"]
    hidden = ra["transitions_total"] + ra["filtered_total"] + 1 - 40
    assert summary == [f"{hidden} further regime log lines not logged (log_limit 40 per run); "
                       "see results.regime_analytics"]


def test_spiced_on_real_eurusd(eurusd: Bars) -> None:
    out = _run(eurusd, "spiced", strategy="donchian_breakout")
    ra = out["results"]["regime_analytics"]
    json.dumps(out, allow_nan=False)
    assert out["results"]["data"]["synthetic"] is False and out["total_trades"] > 0
    per = ra["bars_per_regime"]
    assert per["warmup"]["bars"] == ra["warmup_bars"] == RegimeParams().warmup_bars + 2  # confirm_bars - 1
    for name in ("trending_up", "trending_down", "ranging", "volatile"):
        assert per[name]["bars"] > 100, per  # real data visits every regime
    assert ra["filtered_total"] > 0


def test_user_strategy_on_the_per_bar_path_uses_its_regime_style(tmp_path: Path, synth: Bars) -> None:
    path = tmp_path / "mine.py"
    path.write_text(
        "from engine.strategy import Param, Strategy\n"
        "from engine.indicators import sma\n\n"
        "class Fade(Strategy):\n"
        "    name = 'fade'\n"
        "    regime_style = 'mean_reversion'\n"
        "    params = (Param('period', 30, int, 'SMA period', min=2),)\n\n"
        "    def init(self, bars):\n"
        "        self.warmup = self.period\n"
        "        self.close = bars.close.tolist()\n"
        "        self.ma = sma(bars.close, self.period).tolist()\n\n"
        "    def next(self, i, position):\n"
        "        return -1 if self.close[i] > self.ma[i] else 1\n")
    out = _run(synth, "spiced", strategy=f"{path}:Fade")
    ra = out["results"]["regime_analytics"]
    assert out["results"]["engine_path"] == "per_bar"
    assert ra["options"]["blocked_regimes"] == ["volatile", "trending_up", "trending_down"]
    perf = ra["performance_by_regime"]
    assert perf["ranging"]["trades"] > 0 and perf["trending_up"]["trades"] == 0
    assert np.isfinite(out["final_balance"])


def test_spiced_run_never_looks_ahead(synth: Bars) -> None:
    """Cutting the data at bar k changes no entry (bar, side, size) filled at or before k."""
    full = _run(synth, "spiced", params={"stop_loss_pct": 0.4}, spiced={"kelly_min_trades": 5})
    k = 4000
    cut = _run(synth.window(0, k + 1), "spiced", params={"stop_loss_pct": 0.4}, spiced={"kelly_min_trades": 5})

    def entries(out: dict[str, Any]) -> list[tuple[int, str, float]]:
        rows = out["results"]["trades"] + ([out["results"]["open_trade"]] if out["results"]["open_trade"] else [])
        return sorted((t["entry_bar"], t["side"], t["size"]) for t in rows if t["entry_bar"] <= k)

    assert entries(cut) == entries(full) and len(entries(full)) > 20
    ra_full, ra_cut = (o["results"]["regime_analytics"] for o in (full, cut))
    assert ra_cut["transitions"] == [t for t in ra_full["transitions"] if t["bar"] <= k]


def test_entries_refused_by_a_callers_mask_are_not_blamed_on_a_regime(synth: Bars) -> None:
    """Walk-forward passes its own mask (plan.allow_entry & window); analytics says which is which."""
    from engine.simulator import simulate_strategy
    from engine.spiced import prepare_spiced
    from engine.strategies import make_strategy

    config = parse_config({"symbol": "SYNTH", "variant": "spiced"})
    strategy = make_strategy("sma_cross", {})
    plan = prepare_spiced(synth, strategy, config)
    window = np.zeros(len(synth), dtype=bool)
    window[3000:] = True
    sim = simulate_strategy(synth, strategy, config, allow_entry=plan.allow_entry & window, sizer=plan.sizer)
    ra = plan.analytics(sim)
    masked = [f for f in ra["filtered_trades"] if f["reason"].startswith("refused by the run's entry mask")]
    assert masked and all(f["bar"] < 3000 and f["regime"] not in ("ranging", "volatile") for f in masked)
    assert ra["refused_by_mask"] == len(masked)
    assert sum(ra["filtered_by_regime"].values()) + len(masked) == ra["filtered_total"]


@pytest.mark.parametrize("min_confidence", [0.0, 0.5, 0.95])
def test_min_confidence_blocks_only_confident_hostile_bars(synth: Bars, min_confidence: float) -> None:
    from engine.spiced import prepare_spiced
    from engine.strategies import make_strategy

    config = parse_config({"symbol": "SYNTH", "variant": "spiced", "spiced": {"min_confidence": min_confidence}})
    plan = prepare_spiced(synth, make_strategy("sma_cross", {}), config)
    reg = plan.regimes
    hostile = np.isin(reg.labels, [RANGING, VOLATILE])  # sma_cross's defaults
    assert (plan.allow_entry == ~(hostile & (reg.confidence >= min_confidence))).all()
    assert (~plan.allow_entry).sum() > 0


def test_spiced_log_records_name_their_true_origin(synth: Bars) -> None:
    """log_entry shows module/function/line: they must be where the event happened, not a helper."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.spiced.origin")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Keep()
    logger.addHandler(handler)
    try:
        run_backtest(parse_config({"symbol": "SYNTH", "variant": "spiced"}), bars=synth, logger=logger)
    finally:
        logger.removeHandler(handler)
    spiced = [r for r in records if r.module == "spiced"]
    assert any(r.getMessage().startswith("Regime change") for r in spiced)
    assert spiced and all(r.funcName != "_info" for r in spiced)
    source = Path(__file__).resolve().parent.parent / "engine" / "spiced.py"
    lines = source.read_text().splitlines()
    for r in spiced:
        assert "_info(" in lines[r.lineno - 1] or "_info(" in lines[r.lineno - 2], (r.funcName, r.lineno)
