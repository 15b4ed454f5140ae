"""GET/POST /api/data against a real daemon: CSV upload (raw body and multipart), errors, listing."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually
from tests.fixtures_daemon import Daemon, api

pytestmark = pytest.mark.e2e


def _rows(daemon: Daemon, symbol: str) -> list[dict[str, Any]]:
    status, body = api(daemon, "GET", "/api/data")
    assert status == 200
    return [r for r in body["data"] if r["symbol"] == symbol]


def test_raw_csv_upload_is_stored_listed_and_backtestable(daemon: Daemon, shared_data: Path) -> None:
    content = (shared_data / "EURUSD_H1.csv").read_bytes()
    status, row = api(daemon, "POST", "/api/data?symbol=EURUSD&timeframe=H1", content)
    assert status == 201, row
    assert (row["symbol"], row["timeframe"], row["bars"]) == ("EURUSD", "H1", 5000)
    assert (row["start"], row["end"]) == ("2017-04-19", "2018-02-07")
    assert _rows(daemon, "EURUSD")[0]["bars"] == 5000
    status, body = api(daemon, "POST", "/api/backtests", {"symbol": "EURUSD", "timeframe": "H1"})
    assert status == 202, body
    bid = body["backtest_id"]
    run = eventually(lambda: (lambda r: r if r["status"] not in ("queued", "running") else None)(
        api(daemon, "GET", f"/api/backtests/{bid}")[1]), timeout=60)
    assert run["status"] == "completed" and run["results"]["data"]["bars"] == 5000, run["status"]
    status, body = api(daemon, "POST", "/api/backtests",
                       {"symbol": "EURUSD", "timeframe": "H1", "start_date": "2019-01-01"})
    assert status == 422 and "2018-02-07" in body["error"]


def test_multipart_upload_with_form_fields(daemon: Daemon, shared_data: Path) -> None:
    async def main() -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("symbol", "EURMT5")
        form.add_field("timeframe", "H1")
        form.add_field("format", "mt5")
        form.add_field("file", (shared_data / "EURUSD_H1_mt5.csv").read_bytes(),
                       filename="EURUSD_H1_mt5.csv", content_type="text/csv")
        async with aiohttp.ClientSession() as http:
            async with http.post(daemon["url"] + "/api/data", data=form) as resp:
                return resp.status, await resp.json()
    status, row = asyncio.run(main())
    assert status == 201 and row["bars"] == 5000 and row["format"] == "mt5", row


def test_bad_csv_names_the_line_and_stores_nothing(daemon: Daemon) -> None:
    bad = b"time,Open,High,Low,Close\n2020-01-01 00:00,1,2,0.5,1.5\n2020-01-01 01:00,1,two,0.5,1.5\n"
    status, body = api(daemon, "POST", "/api/data?symbol=BROKEN&timeframe=H1", bad)
    assert status == 400 and body["line"] == 3 and "line 3" in body["error"], body
    assert _rows(daemon, "BROKEN") == []
    status, body = api(daemon, "POST", "/api/data?timeframe=H9", b"x")
    assert status == 400 and {"symbol"} <= set(body["errors"]), body
    status, body = api(daemon, "POST", "/api/data?symbol=OK&timeframe=H9", b"time,Open\n")
    assert status == 400 and "timeframe" in body["error"], body
    status, body = api(daemon, "POST", "/api/data?symbol=OK&timeframe=H1&utc_shift=east", b"x")
    assert status == 400 and "utc_shift" in body["errors"], body
