"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright) against a real
`qmx serve`: start a backtest from the form, watch it reach 100 percent, see the chart; start a
paper bot and press the kill switch. Screenshots go to test-artifacts/ for a human to look at."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh page in headless Chromium, with console errors collected on ``page.errors``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - heavy; only these tests

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.errors = []  # type: ignore[attr-defined]
            pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))  # type: ignore[attr-defined]
            pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))  # type: ignore[attr-defined]
            pg.on("response", lambda r: r.status >= 400 and pg.errors.append(f"{r.status} {r.url}"))  # type: ignore[attr-defined]
            pg.set_default_timeout(30_000)
            yield pg
        finally:
            browser.close()


def test_start_a_backtest_and_watch_it_complete(page: Any, daemon: dict[str, Any]) -> None:
    elsewhere: list[str] = []  # works offline: every request goes to the daemon
    page.on("request", lambda r: r.url.startswith((daemon["url"], "data:")) or elsewhere.append(r.url))
    page.goto(daemon["url"] + "/")
    page.wait_for_selector("body[data-ready=true]")
    assert page.locator("#conn").inner_text() == "live"
    synth = page.locator("#f-symbol option[value=SYNTH]")
    assert "SYNTHETIC" in synth.inner_text()
    page.select_option("#f-symbol", "SYNTH")
    assert page.locator("#synthetic-note").is_visible()
    page.select_option("#f-timeframe", "H1")
    page.select_option("#f-variant", "spiced_full")
    page.fill("#f-start", "2022-01-01")
    page.fill("#f-end", "2023-06-30")
    assert page.locator("#f-params [data-param]").count() >= 1, "the strategy's parameters are shown"
    page.click("#bt-submit")
    row = page.locator("#runs-table tbody tr").first
    page.wait_for_function(
        "() => { const r = document.querySelector('#runs-table tbody tr');"
        " return r && r.querySelector('.status').textContent === 'completed'"
        " && r.querySelector('.pct').textContent === '100.0%'; }")
    assert "SYNTHETIC" in row.inner_text()
    page.wait_for_selector("#detail svg.equity-chart polyline.equity")
    points = page.locator("#detail svg.equity-chart polyline.equity").get_attribute("points") or ""
    assert len(points.split()) > 50, "the equity curve is drawn"
    assert page.locator("#detail svg.equity-chart polygon.drawdown").count() == 1
    assert "SYNTHETIC DATA" in page.locator("#detail-banner").inner_text()
    assert page.locator("#detail table.grid").count() >= 2, "metrics and trades tables"
    headings = page.locator("#detail h3").all_inner_texts()
    for section in ("Regime analytics", "Verdict", "Walk-forward windows", "Monte Carlo distribution"):
        assert section in headings, headings
    assert page.locator("#detail svg.mc-chart rect").count() >= 2, "Monte Carlo box plots drawn"
    price = page.locator("#detail table.grid", has_text="entry_price").locator("tbody td").nth(4).inner_text()
    assert len(price.split(".")[-1]) >= 3, f"prices keep their pips: {price}"
    page.wait_for_selector("#log .log-line")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-backtest.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
    assert elsewhere == []


def test_cancel_a_running_backtest(page: Any, daemon: dict[str, Any]) -> None:
    page.goto(daemon["url"] + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.select_option("#f-symbol", "SYNTH")
    # ~750k M1 bars through walk-forward, Monte Carlo and PBO: many seconds, so the click
    # always lands while the run is queued or running (a plain run can finish first).
    page.select_option("#f-timeframe", "M1")
    page.select_option("#f-variant", "spiced_full")
    page.click("#bt-submit")
    page.wait_for_selector("#runs-table tbody tr button.cancel")
    run_id = page.locator("#runs-table tbody tr").first.get_attribute("data-id")
    page.locator("#runs-table tbody tr").first.locator("button.cancel").click()
    page.wait_for_function(
        "id => document.querySelector(`#runs-table tr[data-id='${id}'] .status`).textContent === 'cancelled'",
        arg=run_id)
    assert page.locator(f"#runs-table tr[data-id='{run_id}'] button.cancel").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]


def test_start_a_bot_and_press_the_kill_switch(page: Any, daemon_factory: Any) -> None:
    daemon = daemon_factory()  # its own daemon: the kill switch halts all trading on it
    page.goto(daemon["url"] + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#b-name", "browser-bot")
    page.select_option("#b-feed", "synthetic")
    page.fill("#b-interval", "0.2")
    page.click("#bot-start")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#bots-table tbody tr')].some("
        "r => r.textContent.includes('browser-bot') || r.querySelector('.status').textContent.startsWith('running'))")
    assert page.locator("#bot-error").inner_text() == ""
    assert "SYNTHETIC" in page.locator("#bots-table tbody tr").first.inner_text(), "a SYNTH bot is labelled"
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()
    page.on("dialog", accept)
    page.click("#kill-switch")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#bots-table tbody tr .status')].some("
        "s => s.textContent.startsWith('killed'))")
    assert dialogs and "Kill switch" in dialogs[0]
    assert "KILLED" in page.locator("#trading-state").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-kill-switch.png"), full_page=True)
    page.click("#resume")
    page.wait_for_function("() => document.querySelector('#trading-state').textContent.includes('enabled')")
    assert page.errors == []  # type: ignore[attr-defined]
