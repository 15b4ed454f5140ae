"""GET /api/backtests/{id}/report and `qmx report` against a real `qmx serve`."""
from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, eventually
from tests.fixtures_daemon import api

pytestmark = [pytest.mark.e2e]

SMALL = {"symbol": "SYNTH", "timeframe": "H1", "start_date": "2023-01-01", "end_date": "2023-06-30"}
#: Anything that would make a browser load from another host (comments may mention URLs).
LOADS_REMOTE = re.compile(r"""(?:\bfrom|\bimport|fetch\(|src=|href=|url\()\s*['"(]?\s*(?:https?:)?//""", re.I)


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def _completed(daemon: dict[str, Any]) -> str:
    status, body = api(daemon, "POST", "/api/backtests", SMALL)
    assert status == 202, body
    bid = body["backtest_id"]
    eventually(lambda: api(daemon, "GET", f"/api/backtests/{bid}")[1]["status"] == "completed", timeout=60)
    return str(bid)


def test_report_endpoint_serves_self_contained_html(daemon: dict[str, Any]) -> None:
    bid = _completed(daemon)
    status, ctype, html = _get(f"{daemon['url']}/api/backtests/{bid}/report")
    assert status == 200 and ctype.startswith("text/html"), (status, ctype)
    assert "SYNTHETIC DATA" in html and bid in html and "<svg" in html
    assert not re.search(r"https?://", html), "the report loads nothing from anywhere"
    status, _, body = _get(f"{daemon['url']}/api/backtests/nope/report")
    assert status == 404 and "nope" in body


def test_report_of_an_unfinished_run_is_409(daemon: dict[str, Any]) -> None:
    # ~750k M1 bars: far longer than the report request takes to arrive.
    status, body = api(daemon, "POST", "/api/backtests", {"symbol": "SYNTH", "timeframe": "M1"})
    assert status == 202, body
    bid = body["backtest_id"]
    try:
        status, _, text = _get(f"{daemon['url']}/api/backtests/{bid}/report")
        assert status == 409, text
        assert "completed run" in text
    finally:
        api(daemon, "DELETE", f"/api/backtests/{bid}")
    eventually(lambda: api(daemon, "GET", f"/api/backtests/{bid}")[1]["status"] == "cancelled", timeout=30)
    assert _get(f"{daemon['url']}/api/backtests/{bid}/report")[0] == 409


def test_qmx_report_writes_the_file(daemon: dict[str, Any], tmp_path: Path) -> None:
    bid = _completed(daemon)
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "server.cli", "report", bid, "-o", str(out),
                           "--server", daemon["url"]], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    assert out.read_text().startswith("<!DOCTYPE html>")
    proc = subprocess.run([sys.executable, "-m", "server.cli", "report", "missing", "-o", str(out),
                           "--server", daemon["url"]], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "missing" in proc.stderr


def test_dashboard_and_static_files_are_served(daemon: dict[str, Any]) -> None:
    status, ctype, html = _get(daemon["url"] + "/")
    assert status == 200 and ctype.startswith("text/html")
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert srcs and all(s.startswith(("/static/", "data:")) for s in srcs), srcs
    for name in ("app.js", "render.js", "ws-client.js", "charts.js", "style.css", "ws-client.d.ts"):
        status, _, text = _get(f"{daemon['url']}/static/{name}")
        assert status == 200 and text, name
        assert not LOADS_REMOTE.search(text), (name, LOADS_REMOTE.search(text))
    assert _get(daemon["url"] + "/static/")[0] in (403, 404)
    # the spec imports './ws-client' (no extension); the types read as text
    status, ctype, text = _get(f"{daemon['url']}/static/ws-client")
    assert status == 200 and "javascript" in ctype and "export function createBacktestClient" in text
    assert _get(f"{daemon['url']}/static/ws-client.d.ts")[1].startswith("text/plain")
