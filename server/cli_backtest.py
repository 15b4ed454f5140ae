"""`qmx backtest`: run one backtest locally (or on a daemon with --server) and print the result.

Exit codes: 0 completed; 2 bad arguments (one line per problem naming the option and what is
allowed), unknown data or a missing --data file; 1 a run that failed (unreadable file content,
an error inside the strategy); 130 interrupted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from engine.bars import TIMEFRAMES
from engine.config import SIZE_UNITS, VARIANTS, BacktestConfig, ConfigError, parse_config
from engine.progress import Progress

#: config field -> the option that sets it, so every error names what the user typed
_OPTION = {"symbol": "--symbol", "timeframe": "--timeframe", "variant": "--variant", "start_date": "--from",
           "end_date": "--to", "strategy": "--strategy", "params": "--param", "initial_balance": "--balance",
           "size": "--size", "size_unit": "--size-unit", "costs.spread": "--spread",
           "costs.commission": "--commission", "costs.slippage": "--slippage", "spiced": "--spiced",
           "robustness": "--robustness", "seed": "--seed"}
_NUMBERS = {"balance": "initial_balance", "size": "size"}
_COSTS = ("spread", "commission", "slippage")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of `qmx backtest`."""
    parser.epilog = ("example: qmx backtest --symbol EURUSD --timeframe H1 --from 2023-01-01 --to 2023-12-31 "
                     "--strategy sma_cross --param fast=10 --param slow=20 --variant spiced")
    a = parser.add_argument
    a("--symbol", default=None,
      help="symbol in the data store (default SYNTH: synthetic data, always there; with --data: the file's name)")
    a("--timeframe", default="H1", help="M1, M5, M15, M30, H1, H4 or D1 (default H1)")
    a("--from", dest="start_date", default=None, metavar="YYYY-MM-DD", help="first day (default: all data)")
    a("--to", dest="end_date", default=None, metavar="YYYY-MM-DD", help="last day, inclusive (default: all data)")
    a("--strategy", default="sma_cross",
      help="built-in (sma_cross, rsi_reversion, donchian_breakout, bollinger_reversion) or path/to/file.py:ClassName")
    a("--param", action="append", default=[], metavar="NAME=VALUE", help="strategy parameter (repeatable)")
    a("--variant", default="vanilla", help=f"one of {', '.join(VARIANTS)} (default vanilla)")
    a("--balance", default=None, metavar="N", help="initial balance (default 10000)")
    a("--size", default=None, metavar="N", help="position size (default 10000 units)")
    a("--size-unit", dest="size_unit", default="units", help=f"one of {', '.join(SIZE_UNITS)} (1 lot = 100,000 units)")
    for cost, text in zip(_COSTS, ("price units, full spread", "fraction of notional per fill", "price units per fill")):
        a(f"--{cost}", default=None, metavar="X", help=f"{cost} ({text}; default 0)")
    a("--spiced", action="append", default=[], metavar="KEY=VALUE", help="option of the spiced layer (repeatable)")
    a("--robustness", action="append", default=[], metavar="KEY=VALUE",
      help="option of the _full variants (repeatable)")
    a("--seed", default=None, metavar="N", help="random seed of the _full variants (default 42)")
    a("--data", type=Path, default=None, metavar="FILE",
      help="run on this bar file (format auto-detected; a finer timeframe is resampled) without storing it")
    a("--data-dir", dest="data_dir", type=Path, default=None, metavar="DIR",
      help="data directory (default: $QMX_DATA_DIR, else ~/.quantmindx)")
    a("--json", action="store_true", help="print only the backtest_complete data object as JSON")
    a("--verbose", action="store_true", help="print the run's log (trades, regime changes) on stderr")
    a("--server", default=None, metavar="URL", help="submit to a running daemon and follow it live")
    a("--follow", action="store_true", help="with --server: stream progress until the run ends (the default)")


def _value(text: str) -> Any:
    """A --param value: JSON (10, 1.5, true, null, "x") when it parses, else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: list[str], option: str, errors: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            errors.append(f"{option} must be NAME=VALUE, got {item!r}")
            continue
        out[key.strip()] = _value(value.strip())
    return out


def _number(text: str | None, option: str, errors: list[str]) -> float | int | None:
    if text is None:
        return None
    try:
        return int(text) if option == "--seed" else float(text)
    except ValueError:
        kind = "an integer" if option == "--seed" else "a number"
        errors.append(f"{option} must be {kind}, got {text!r}")
        return None


def _symbol(args: argparse.Namespace) -> str:
    """--symbol, else the name of the --data file (its bars are real: never call them SYNTH), else SYNTH."""
    if args.symbol is not None:
        return str(args.symbol)
    data = getattr(args, "data", None)
    if data is None:
        return "SYNTH"
    # EURUSD_H1.csv -> EURUSD: the name up to a timeframe token, as exports are usually named
    words = re.split(r"[^A-Za-z0-9.]+", Path(data).stem.upper())
    cut = next((k for k, w in enumerate(words) if w in TIMEFRAMES and k), len(words))
    return "_".join(w for w in words[:cut] if w)[:32] or "DATA"


def build_body(args: argparse.Namespace, errors: list[str]) -> dict[str, Any]:
    """The backtest request (REST body shape) from the options; problems are appended to ``errors``."""
    body: dict[str, Any] = {"symbol": _symbol(args), "timeframe": args.timeframe, "variant": args.variant,
                            "strategy": args.strategy, "size_unit": args.size_unit,
                            "params": _pairs(args.param, "--param", errors)}
    for key in ("start_date", "end_date"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    for option, field in _NUMBERS.items():
        v = _number(getattr(args, option), f"--{option}", errors)
        if v is not None:
            body[field] = v
    costs = {c: _number(getattr(args, c), f"--{c}", errors) for c in _COSTS}
    body["costs"] = {k: v for k, v in costs.items() if v is not None}
    for group in ("spiced", "robustness"):
        opts = _pairs(getattr(args, group), f"--{group}", errors)
        if opts:
            body[group] = opts
    seed = _number(args.seed, "--seed", errors)
    if seed is not None:
        body["seed"] = seed
    return body


def _option(field: str) -> str:
    if field.startswith("params."):
        return f"--param {field[7:]}"
    if field.startswith(("spiced.", "robustness.")):
        group, _, key = field.partition(".")
        return f"--{group} {key}"
    return _OPTION.get(field, field)


def _cli_words(message: str) -> str:
    """An engine message with request field names replaced by the options that set them."""
    return message.replace("`start_date`/`end_date`", "--from/--to").replace("start_date (", "--from (")


def _fail(lines: list[str], code: int = 2, err: TextIO | None = None, command: str = "backtest") -> int:
    err = err or sys.stderr
    for line in lines:
        print(f"qmx {command}: error: {line}", file=err)
    return code


def run(args: argparse.Namespace) -> int:
    """Run `qmx backtest`; returns the exit code."""
    errors: list[str] = []
    body = build_body(args, errors)
    if args.server:
        return _remote(args, body, errors)
    config = None
    try:
        config = parse_config(body)
    except ConfigError as exc:
        errors += [f"{_option(k)}: {_cli_words(v)}" for k, v in exc.errors.items()]
    if args.data is not None and not args.data.is_file():
        errors.append(f"--data: file {str(args.data)!r} does not exist or is not a file")
    if errors or config is None:
        return _fail(errors)
    return _run_local(args, config)


def _remote(args: argparse.Namespace, body: dict[str, Any], errors: list[str]) -> int:
    """Submit to a daemon, which validates the request itself (it may see other strategy files)."""
    if args.data is not None:
        errors.append("--data cannot be used with --server (import the file on the daemon: POST /api/data)")
    if args.data_dir is not None:
        errors.append("--data-dir cannot be used with --server (the daemon uses its own data directory)")
    if errors:
        return _fail(errors)
    import asyncio  # noqa: PLC0415 - only the remote mode needs an event loop

    from server.client import submit_and_follow  # noqa: PLC0415

    return asyncio.run(submit_and_follow(args.server, body, json_output=args.json))


def run_on_data(command: str, args: argparse.Namespace, config: BacktestConfig,
                job: Callable[..., dict[str, Any]]) -> dict[str, Any] | int:
    """``job(bars=..., store=..., progress=...)`` on ``--data FILE`` or the data store, with a
    progress bar; data and request problems become one `qmx COMMAND: error:` line. Returns the
    job's result, or the exit code (2 bad request, 1 bad file or a failing strategy)."""
    from engine.importers import DataFormatError, read_bars  # noqa: PLC0415 - heavy imports after argument checks
    from engine.store import DataNotFound, DataStore, default_data_dir  # noqa: PLC0415

    if args.data is not None and config.symbol.upper() == "SYNTH":
        return _fail(["--symbol: 'SYNTH' names the built-in synthetic data; give the --data file's bars "
                      "their own name, e.g. --symbol EURUSD"], command=command)
    progress = ProgressPrinter(sys.stderr)
    try:
        if args.data is not None:
            bars = read_bars(args.data, config.symbol, config.timeframe, resample_finer=True)
            return job(bars=bars, progress=progress)
        return job(store=DataStore(args.data_dir or default_data_dir()), progress=progress)
    except DataNotFound as exc:
        return _fail([f"--symbol/--timeframe/--from/--to: {exc}"], command=command)
    except DataFormatError as exc:
        return _fail([f"--data: {exc}"], code=1, command=command)
    except ValueError as exc:
        return _fail([_cli_words(str(exc))], command=command)
    except Exception as exc:  # noqa: BLE001 - a failing strategy or unreadable file: one line, exit 1
        return _fail([f"{command} failed: {type(exc).__name__}: {exc}"], code=1, command=command)
    finally:
        progress.clear()


def _run_local(args: argparse.Namespace, config: BacktestConfig) -> int:
    from engine.backtest import run_backtest  # noqa: PLC0415 - heavy imports after argument checks

    logger = _logger(args.verbose)
    result = run_on_data("backtest", args, config,
                         lambda **kw: run_backtest(config, logger=logger, **kw))
    if isinstance(result, int):
        return result
    result = {"backtest_id": f"local-{uuid.uuid4()}", **result,
              "timestamp": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_result(result))
    return 0


def _logger(verbose: bool) -> logging.Logger:
    logger = logging.getLogger("backtest.local")
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    for old in list(logger.handlers):  # a handler from an earlier run may hold a stale stderr
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


class ProgressPrinter:
    """Progress on stderr: a redrawn bar on a terminal, a plain line per 10 % otherwise."""

    def __init__(self, stream: TextIO, counts: bool = True) -> None:
        self.stream = stream
        self.counts = counts  # False when only a percentage is known (a daemon's sweep)
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last_step = -1
        self.drawn = False

    def __call__(self, p: Progress) -> None:
        pct = p.percent
        if self.tty:
            filled = int(pct / 100 * 30)
            detail = f"{p.current_date}  trades {p.trades_count}  pnl {p.current_pnl:,.2f}" if self.counts else ""
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {pct:5.1f}%  {detail}  ")
            self.drawn = True
        else:
            step = int(pct // 10)
            if step == self.last_step:
                return
            self.last_step = step
            detail = f" ({p.bars_processed}/{p.total_bars} bars, {p.trades_count} trades)" if self.counts else ""
            self.stream.write(f"progress {pct:.0f}%{detail}\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r" + " " * 90 + "\r")
            self.stream.flush()
            self.drawn = False


def _fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _regime_table(ra: Mapping[str, Any]) -> list[str]:
    """Per regime: share of bars, whether entries are blocked there, refusals and closed trades."""
    options = ra.get("options") or {}
    blocked = set(options.get("blocked_regimes") or []) if options.get("regime_filter", True) else set()
    bars, refused = ra.get("bars_per_regime") or {}, ra.get("filtered_by_regime") or {}
    perf = ra.get("performance_by_regime") or {}
    lines = [f"    {'regime':<14} {'bars %':>7}  {'entries':<7} {'refused':>7} {'trades':>6} {'win %':>6} {'PnL':>12}"]
    for name in ra.get("regimes") or []:
        p = perf.get(name) or {}
        lines.append(f"    {name:<14} {_fmt((bars.get(name) or {}).get('pct'), 1):>7}  "
                     f"{'blocked' if name in blocked else 'allowed':<7} {refused.get(name, 0):>7} "
                     f"{p.get('trades', 0):>6} {_fmt(p.get('win_rate'), 1):>6} {_fmt(p.get('pnl')):>12}")
    return lines


def format_result(result: Mapping[str, Any]) -> str:
    """The human-readable result table (SYNTHETIC DATA said loudly when it applies)."""
    res = result.get("results", {})
    cfg, data, m = res.get("config", {}), res.get("data", {}), res.get("metrics", {})
    lines: list[str] = []
    if data.get("synthetic"):
        lines += ["*" * 64, "***  SYNTHETIC DATA: generated prices, not a real market  ***", "*" * 64]
    params = " ".join(f"{k}={v}" for k, v in (cfg.get("params") or {}).items())
    lines.append(f"{cfg.get('strategy')}{' ' + params if params else ''} [{cfg.get('variant')}] on "
                 f"{data.get('symbol')} {data.get('timeframe')}  {data.get('start', '')[:10]} .. "
                 f"{data.get('end', '')[:10]}  ({data.get('bars')} bars, {data.get('source')})")
    if str(cfg.get("variant", "")).endswith("_full"):
        try:
            from server.report_text import format_full_report  # noqa: PLC0415
        except ImportError:
            pass
        else:
            return "\n".join(lines) + "\n" + format_full_report(result)
    rows = [("Final balance", _fmt(result.get("final_balance"))), ("Return", _fmt(result.get("return_pct"), 2, " %")),
            ("Trades", _fmt(result.get("total_trades"))), ("Win rate", _fmt(result.get("win_rate"), 2, " %")),
            ("Sharpe ratio", _fmt(result.get("sharpe_ratio"), 3)), ("Sortino ratio", _fmt(m.get("sortino_ratio"), 3)),
            ("Calmar ratio", _fmt(m.get("calmar_ratio"), 3)), ("Max drawdown", _fmt(result.get("drawdown"), 2, " %")),
            ("Profit factor", _fmt(m.get("profit_factor"), 3)), ("Expectancy", _fmt(m.get("expectancy"), 4, " %")),
            ("Best trade", _fmt(m.get("best_trade_pct"), 3, " %")), ("Worst trade", _fmt(m.get("worst_trade_pct"), 3, " %")),
            ("Avg trade", _fmt(m.get("avg_trade_pct"), 4, " %")), ("Exposure", _fmt(m.get("exposure_pct"), 1, " %")),
            ("Buy & hold", _fmt(m.get("buy_hold_return_pct"), 2, " %")),
            ("Duration", _fmt(result.get("duration_seconds"), 3, " s"))]
    lines += [f"  {k:<15} {v:>18}" for k, v in rows]
    ot = res.get("open_trade")
    if ot:
        lines.append(f"  Open trade: {ot['side']} {ot['size']:g} @ {ot['entry_price']:.5f} since "
                     f"{ot['entry_time'][:16]}, unrealised {_fmt(ot.get('unrealized_pnl'))}")
    ra = res.get("regime_analytics")
    if ra:
        lines.append(f"  Regimes: {ra.get('transitions_total', 'n/a')} transitions, "
                     f"{ra.get('filtered_total', 'n/a')} entries filtered")
        lines += _regime_table(ra)
    if data.get("synthetic"):
        lines.append("  (SYNTHETIC DATA)")
    return "\n".join(lines)
