"""`qmx report ID -o file.html`: fetch a finished backtest's self-contained HTML report."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

from server.cli_client import DEFAULT_SERVER, default_server
from server.client import QmxClient, QmxError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `qmx report`."""
    parser.add_argument("backtest_id", metavar="ID", help="the backtest id (from POST /api/backtests)")
    parser.add_argument("-o", "--output", default=None,
                        help="file to write (default: report-<ID>.html in the current directory)")
    parser.add_argument("--server", default=default_server(),
                        help=f"daemon URL (default $QMX_SERVER or {DEFAULT_SERVER})")


def run(args: argparse.Namespace) -> int:
    """Write the report; 0 on success, 1 when the daemon refuses or cannot be reached."""
    out = Path(args.output or f"report-{args.backtest_id}.html")
    try:
        html = asyncio.run(fetch_report(args.server, args.backtest_id))
    except ValueError as exc:
        print(f"qmx report: {exc}", file=sys.stderr)
        return 2
    except QmxError as exc:
        print(f"qmx report: {exc.message}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        print(f"qmx report: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        print(f"qmx report: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(html):,} bytes)")
    return 0


async def fetch_report(server: str, backtest_id: str) -> str:
    """``GET /api/backtests/{id}/report`` as text (QmxError: 404 unknown id, 409 not finished)."""
    async with QmxClient(server) as client:
        return await client.report(backtest_id)
