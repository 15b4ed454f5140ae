"""server/report.py: the self-contained HTML report, rendered from real engine results."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from engine import parse_config, run_backtest, synthetic_bars
from engine.importers import read_bars
from server.report import render_report

EXTERNAL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+""", re.I)


class _Tags(HTMLParser):
    """Counts tags and collects attributes that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.loads: list[str] = []
        self.points: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.loads.append(value)
            if tag == "polyline" and name == "points" and value:
                self.points.append(value)


def _parse(html: str) -> _Tags:
    tags = _Tags()
    tags.feed(html)
    return tags


def _run(body: dict[str, Any], bars: Any = None) -> dict[str, Any]:
    cfg = parse_config(body)
    if bars is None:
        bars = synthetic_bars("SYNTH", cfg.timeframe, cfg.start_date, cfg.end_date)
    return run_backtest(cfg, bars=bars)


def test_synthetic_run_report_is_self_contained_and_labelled() -> None:
    result = _run({"symbol": "SYNTH", "timeframe": "H1", "start_date": "2023-01-01", "end_date": "2023-06-30"})
    html = render_report({"backtest_id": "r1", "status": "completed", **result})
    tags = _parse(html)
    assert html.startswith("<!DOCTYPE html>")
    assert "SYNTHETIC DATA" in html and "[SYNTHETIC DATA]</title>" in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert tags.loads == [] and tags.counts.get("script", 0) == 0 and tags.counts.get("link", 0) == 0
    assert tags.counts["svg"] == 1 and tags.counts["polygon"] == 1
    assert len(tags.points[0].split()) == len(result["results"]["equity"]["equity"])
    # one row per trade (plus header), the headline figures formatted as people read them
    assert html.count("<tr>") >= result["total_trades"] + 1
    assert f"{result['final_balance']:,.2f}" in html


def test_real_data_report_has_no_synthetic_banner(shared_data: Any) -> None:
    bars = read_bars(shared_data / "EURUSD_H1.csv", "EURUSD", "H1")
    result = _run({"symbol": "EURUSD", "timeframe": "H1"}, bars=bars)
    html = render_report(result)
    assert "SYNTHETIC" not in html
    assert "Backtest EURUSD H1" in html and "2017-04-19" in html
    assert not EXTERNAL.search(html)


def test_full_variant_report_has_robustness_sections() -> None:
    result = _run({"symbol": "SYNTH", "timeframe": "H1", "variant": "spiced_full",
                   "start_date": "2022-01-01", "end_date": "2023-06-30"})
    html = render_report({"backtest_id": "r2", **result})
    for section in ("Regime analytics", "Verdict", "Walk-forward optimisation", "Monte Carlo",
                    "Probability of backtest overfitting"):
        assert f"<h2>{section}</h2>" in html, section
    verdict = result["results"]["verdict"]
    assert str(verdict["verdict"] if isinstance(verdict, dict) else verdict) in html
    assert not EXTERNAL.search(html)
    # window metrics are columns, not JSON blobs that stretch the page; prices keep their pips
    assert "<th>oos_metrics.sharpe_ratio</th>" in html and "{&quot;" not in html
    price = result["results"]["trades"][0]["entry_price"]
    assert f"<td>{price:.6g}</td>" in html


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(TypeError, match="`run` must be a dict"):
        render_report([])  # type: ignore[arg-type]
