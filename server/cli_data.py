"""`qmx data import` and `qmx data list`: the local market-data store from the terminal.

Exit codes: 0 success, 2 bad arguments (unknown option values, missing file, bad symbol),
1 a file whose content cannot be imported (the message names the file, line and problem).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.bars import TIMEFRAMES
from engine.importers import FORMATS, DataFormatError
from engine.store import DataStore, default_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `import` and `list` under `qmx data`."""
    sub = parser.add_subparsers(dest="data_command", metavar="{import,list}")
    sub.required = True
    imp = sub.add_parser("import", help="import a bar file (MT5, histdata.com, Dukascopy or generic CSV)",
                         description="Import a bar file into the local store; rows merge by time "
                                     "with what is stored (the file wins on equal timestamps).")
    imp.add_argument("file", metavar="FILE", type=Path, help="the CSV or MT5 export to import")
    imp.add_argument("--symbol", required=True, help="symbol to store it under, e.g. EURUSD (uppercased)")
    imp.add_argument("--timeframe", required=True, choices=list(TIMEFRAMES), help="bar timeframe of the file")
    imp.add_argument("--format", dest="fmt", default="auto", choices=FORMATS,
                     help="file layout (default: auto, recognised from the first line)")
    imp.add_argument("--utc-shift", dest="utc_shift", type=float, default=0.0, metavar="HOURS",
                     help="hours the file's clock is ahead of UTC, e.g. 2 for a UTC+2 MT5 broker "
                          "(mt5 and generic files only; default 0)")
    _data_dir_option(imp)
    lst = sub.add_parser("list", help="list stored symbols and timeframes (SYNTH is always there)",
                         description="List stored symbols, timeframes and date ranges.")
    _data_dir_option(lst)
    lst.add_argument("--json", action="store_true", help="print the rows as a JSON array")


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="data directory (default: $QMX_DATA_DIR, else ~/.quantmindx)")


def run(args: argparse.Namespace) -> int:
    """Run `qmx data import` or `qmx data list`; returns the exit code."""
    store = DataStore(args.data_dir or default_data_dir())
    if args.data_command == "import":
        return _import(store, args)
    return _list(store, args)


def _fail(command: str, message: str, code: int) -> int:
    print(f"qmx data {command}: error: {message}", file=sys.stderr)
    return code


#: engine argument -> the option a user typed, so an error names what is on the command line
_OPTIONS = {"`symbol`": "--symbol", "`timeframe`": "--timeframe", "`fmt`": "--format",
            "`utc_shift_hours`": "--utc-shift"}


def _as_options(message: str) -> str:
    for name, option in _OPTIONS.items():
        message = message.replace(name, option)
    return message


def _import(store: DataStore, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        return _fail("import", f"FILE {str(args.file)!r} does not exist or is not a file", 2)
    try:
        row = store.import_csv(args.file, args.symbol, args.timeframe, fmt=args.fmt,
                               utc_shift_hours=args.utc_shift)
    except DataFormatError as exc:
        return _fail("import", str(exc), 1)
    except ValueError as exc:
        return _fail("import", _as_options(str(exc)), 2)
    except OSError as exc:
        return _fail("import", f"cannot read or write: {exc}", 1)
    print(f"Stored {row['symbol']} {row['timeframe']}: {row['bars']} bars {row['start']} .. {row['end']} "
          f"({row['imported']} read from {args.file.name} as {row['format']}, {row['added']} new) "
          f"in {store.root}")
    return 0


def _list(store: DataStore, args: argparse.Namespace) -> int:
    try:
        rows = store.list()
    except OSError as exc:
        return _fail("list", f"cannot read {store.root}: {exc}", 1)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of :meth:`DataStore.list` as an aligned text table; synthetic rows say SYNTHETIC."""
    header = ("SYMBOL", "TIMEFRAME", "START", "END", "BARS", "DATA", "SOURCE")
    lines = [header] + [(r["symbol"], r["timeframe"], r["start"], r["end"], f"{r['bars']:,}",
                         "SYNTHETIC" if r["synthetic"] else "imported", r["source"]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {4}  # numbers align right
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)
