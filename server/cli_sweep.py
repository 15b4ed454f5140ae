"""`qmx sweep`: evaluate a parameter grid and print the ranked results.

Locally it runs with a progress bar on stderr, on every core (``--jobs``, default: all cores once
the grid is big enough to gain from it): the valid combinations are dealt into one part per
process (``split_grid``), each process runs ``run_sweep`` on its part over the same bars, and the
parts are merged (``merge_sweeps``) into exactly the ranking one process gives. With
``--server URL`` it submits the grid to a daemon (``POST /api/sweeps``), which fans it out over
its worker pool, and polls it to the end. Exit codes: 0 done; 2 bad arguments (one line naming the option and what is
allowed), unknown data or no valid combination; 1 a file that cannot be read, an unreachable
daemon or a sweep that failed there; 130 interrupted (with ``--server``: the sweep is cancelled there too).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from engine.bars import TIMEFRAMES

_SWEEP_VARIANTS = ("vanilla", "spiced")
#: With ``--jobs auto`` a sweep goes parallel from this many bar evaluations (bars x valid
#: combinations; ~0.1-0.3 s on one core): below it, starting processes costs more than it saves.
AUTO_PARALLEL_MIN = 2_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of `qmx sweep`."""
    parser.epilog = ("example: qmx sweep --symbol EURUSD --timeframe H1 --strategy sma_cross "
                     "--grid fast=5:30:5 --grid slow=20:100:10 --objective 'return_pct / max(drawdown, 1)'")
    a = parser.add_argument
    a("--symbol", default=None,
      help="symbol in the data store (default SYNTH: synthetic data, always there; with --data: the file's name)")
    a("--timeframe", default="H1", help=f"one of {', '.join(TIMEFRAMES)} (default H1)")
    a("--from", dest="start_date", default=None, metavar="YYYY-MM-DD", help="first day (default: all data)")
    a("--to", dest="end_date", default=None, metavar="YYYY-MM-DD", help="last day, inclusive (default: all data)")
    a("--strategy", default="sma_cross", help="built-in name or path/to/file.py:ClassName (default sma_cross)")
    a("--grid", action="append", default=[], metavar="NAME=SPEC",
      help="parameter values: START:STOP:STEP (inclusive) or V1,V2,... (repeatable), or one JSON object "
           "of lists, e.g. '{\"fast\": [5, 10], \"slow\": [20, 40]}' (default: the strategy's default grid)")
    a("--param", action="append", default=[], metavar="NAME=VALUE", help="fixed strategy parameter (repeatable)")
    a("--objective", default="sharpe_ratio",
      help="sharpe_ratio (default), return_pct, profit_factor, calmar_ratio or an expression of metrics, "
           "e.g. 'return_pct / max(drawdown, 1)'")
    a("--top", default="20", metavar="N", help="rows to print (default 20; 0 = all)")
    a("--variant", default="vanilla", help="vanilla (default) or spiced: the run each combination gets")
    a("--spiced", action="append", default=[], metavar="KEY=VALUE",
      help="option of the spiced layer, as for qmx backtest (repeatable; with --variant spiced)")
    a("--balance", default=None, metavar="N", help="initial balance (default 10000)")
    a("--size", default=None, metavar="N", help="position size (default 10000 units)")
    a("--size-unit", dest="size_unit", default="units", help="units or lots (1 lot = 100,000 units)")
    for cost in ("spread", "commission", "slippage"):
        a(f"--{cost}", default=None, metavar="X", help=f"{cost} (as in qmx backtest; default 0)")
    a("--data", type=Path, default=None, metavar="FILE", help="run on this bar file without storing it")
    a("--data-dir", dest="data_dir", type=Path, default=None, metavar="DIR",
      help="data directory (default: $QMX_DATA_DIR, else ~/.quantmindx)")
    a("--jobs", default="auto", metavar="N",
      help="processes to run the grid on: an integer >= 1, or auto (the default: every core once the grid "
           f"has {AUTO_PARALLEL_MIN:,} bar evaluations or more, else 1)")
    a("--json", action="store_true", help="print the sweep result object as JSON")
    a("--server", default=None, metavar="URL",
      help="run on a daemon (e.g. http://127.0.0.1:8000) across all its workers instead of locally")
    parser.set_defaults(robustness=[], seed=None)


def _fail(lines: list[str], code: int = 2) -> int:
    for line in lines:
        print(f"qmx sweep: error: {line}", file=sys.stderr)
    return code


def _check(args: argparse.Namespace, errors: list[str]) -> tuple[Any, dict[str, list[Any]] | None, int]:
    """(config, grid, top) from the options; every problem appended to ``errors``."""
    from engine.config import ConfigError, parse_config  # noqa: PLC0415 - after argparse's --help
    from engine.robustness import DEFAULT_GRIDS  # noqa: PLC0415
    from engine.sweep import compile_objective, normalize_grid, parse_grid_args  # noqa: PLC0415
    from server.cli_backtest import build_body  # noqa: PLC0415

    if args.variant not in _SWEEP_VARIANTS:
        errors.append(f"--variant must be one of {list(_SWEEP_VARIANTS)}, got {args.variant!r}")
        args.variant = "vanilla"
    body = build_body(args, errors)
    config = grid = None
    try:
        config = parse_config(body)
    except ConfigError as exc:
        errors += [f"{_option(k)}: {v}" for k, v in exc.errors.items()]
    try:
        if len(args.grid) == 1 and args.grid[0].lstrip().startswith("{"):
            grid = normalize_grid(_json_grid(args.grid[0]))
        elif args.grid:
            grid = parse_grid_args(args.grid)
        elif args.strategy in DEFAULT_GRIDS:
            grid = normalize_grid(DEFAULT_GRIDS[args.strategy])
        else:
            errors.append(f"--grid is required for strategy {args.strategy!r} (built-ins have defaults: "
                          f"{sorted(DEFAULT_GRIDS)})")
    except ValueError as exc:
        errors.append(f"--grid: {exc}")
    try:
        compile_objective(args.objective)
    except ValueError as exc:
        errors.append(f"--objective: {exc}")
    top = int(args.top) if str(args.top).isdigit() else -1
    if top < 0:
        errors.append(f"--top must be an integer >= 0, got {args.top!r}")
    if args.jobs != "auto" and not (str(args.jobs).isdigit() and int(args.jobs) >= 1):
        errors.append(f"--jobs must be an integer >= 1 or auto, got {args.jobs!r}")
    if args.data is not None and not args.data.is_file():
        errors.append(f"--data: file {str(args.data)!r} does not exist or is not a file")
    return config, grid, top


def _json_grid(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"`--grid` JSON object is not valid JSON: {exc}") from None


def _option(field: str) -> str:
    names = {"symbol": "--symbol", "timeframe": "--timeframe", "start_date": "--from", "end_date": "--to",
             "strategy": "--strategy", "initial_balance": "--balance", "size": "--size",
             "size_unit": "--size-unit", "variant": "--variant", "spiced": "--spiced"}
    if field.startswith("params."):
        return f"--param {field[7:]}"
    if field.startswith("spiced."):
        return f"--spiced {field[7:]}"
    if field.startswith("costs."):
        return f"--{field[6:]}"
    return names.get(field, field)


def run(args: argparse.Namespace) -> int:
    """Run `qmx sweep`; returns the exit code."""
    errors: list[str] = []
    config, grid, top = _check(args, errors)
    if args.server and (args.data is not None or args.data_dir is not None):
        errors.append("--data/--data-dir cannot be used with --server (the daemon uses its own data directory)")
    if args.server and args.jobs != "auto":
        errors.append("--jobs cannot be used with --server (the daemon runs the grid on all its workers)")
    if errors or config is None or grid is None:
        return _fail(errors)
    if args.server:
        return _remote(args, config, grid, top)
    from server.cli_backtest import run_on_data  # noqa: PLC0415 - heavy imports after checks
    from server.report_text import format_sweep  # noqa: PLC0415

    jobs = None if args.jobs == "auto" else int(args.jobs)
    result = run_on_data("sweep", args, config,
                         lambda **kw: local_sweep(config, grid, args.objective, jobs, **kw))
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_sweep(result, top=top or None))
    return 0


def _request(url: str, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of a GET (or a POST when ``body`` is given, or ``method``) to the daemon."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("GET" if body is None else "POST"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _remote(args: argparse.Namespace, config: Any, grid: dict[str, list[Any]], top: int) -> int:
    """Submit the sweep to a daemon and poll it to the end with the same progress bar and table."""
    import time  # noqa: PLC0415

    from engine.progress import Progress  # noqa: PLC0415
    from server.cli_backtest import ProgressPrinter  # noqa: PLC0415
    from server.client import base_url  # noqa: PLC0415
    from server.report_text import format_sweep  # noqa: PLC0415

    try:
        base = base_url(args.server)
        status, body = _request(f"{base}/api/sweeps", {**config.to_dict(), "grid": grid, "objective": args.objective})
    except ValueError as exc:
        return _fail([f"--server: {exc}"])
    except OSError as exc:
        return _fail([f"--server: cannot reach {args.server!r}: {exc}"], code=1)
    if status == 404:  # unknown data, as a local run reports it
        return _fail([f"--symbol/--timeframe/--from/--to: {(body or {}).get('error', 'no such data')}"])
    if status != 202:
        errors = (body or {}).get("errors") or {"--server": (body or {}).get("error", f"HTTP {status}")}
        return _fail([f"{_option(k)}: {v}" for k, v in errors.items()], code=2 if status == 400 else 1)
    progress = ProgressPrinter(sys.stderr, counts=False)
    url = f"{base}/api/sweeps/{body['sweep_id']}"
    try:
        while True:  # a terminal client: polling the daemon's REST state is the simple, robust choice
            _, run = _request(url)
            pct = float(run.get("progress") or 0.0)
            progress(Progress(int(pct * 10), 1000, "", 0, 0.0))
            if run["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
    except OSError as exc:  # the daemon went away mid-sweep
        progress.clear()
        return _fail([f"--server: lost the daemon at {args.server!r} during sweep {body['sweep_id']}: {exc}"], code=1)
    except KeyboardInterrupt:
        # Ctrl-C means "stop this sweep", not "leave it holding every worker of the daemon".
        progress.clear()
        status, _ = _request(url, method="DELETE")
        print(f"qmx sweep: sweep {body['sweep_id']} " + ("cancelled on the daemon" if status == 202 else
              f"could not be cancelled (HTTP {status})"), file=sys.stderr)
        return 130
    progress.clear()
    if run["status"] != "completed":
        return _fail([f"sweep {body['sweep_id']} {run['status']}: {run.get('error')}"], code=1)
    result = {"sweep_id": body["sweep_id"], **run["results"]}
    print(json.dumps(result, allow_nan=False) if args.json else format_sweep(result, top=top or None))
    return 0


# ------------------------------------------------------------------ local sweep on several cores
def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_sweep(config: Any, grid: dict[str, list[Any]], objective: str, jobs: int | None, *,
                bars: Any = None, store: Any = None, progress: Any = None) -> dict[str, Any]:
    """``engine.run_sweep`` of ``grid``, on ``jobs`` processes (None: auto, see ``AUTO_PARALLEL_MIN``).

    The result is what one ``run_sweep`` returns (the same rows in the same order), plus
    ``processes`` and ``cpu_seconds``; ``elapsed_seconds`` is the wall time. Progress runs once
    from 0 to bars x valid combinations across all processes.
    """
    from engine.backtest import load_bars  # noqa: PLC0415
    from engine.sweep import expand_grid, merge_sweeps, run_sweep, split_grid  # noqa: PLC0415
    from engine.sweep_eval import split_valid  # noqa: PLC0415

    started = time.perf_counter()
    combos = expand_grid(grid, base=config.params)
    valid, skipped = split_valid(config.strategy, combos)
    bars = load_bars(config, bars, store)
    n = min(cores() if jobs is None else jobs, len(valid))
    if jobs is None and len(bars) * len(valid) < AUTO_PARALLEL_MIN:
        n = 1
    if n <= 1:  # also reports "no valid combination" exactly as a plain sweep does
        return {**run_sweep(config, grid, objective=objective, bars=bars, progress=progress), "processes": 1}
    parts = split_grid(valid, n)
    results = _run_parts(config, parts, objective, bars, progress, len(bars) * len(valid))
    merged = merge_sweeps(results, objective, order=valid)
    merged.update(grid=grid, combinations=len(combos), skipped=len(skipped), skipped_examples=skipped[:5],
                  elapsed_seconds=round(time.perf_counter() - started, 4), processes=len(parts))
    return merged


def _part(config: Any, combos: list[dict[str, Any]], objective: str, bars: Any, index: int, queue: Any) -> None:
    """Child process: one part of the grid; progress, then the result (or the error) on ``queue``."""
    import signal  # noqa: PLC0415

    from engine.sweep import run_sweep  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends us
    parent = os.getppid()

    def progress(p: Any) -> None:
        if os.getppid() != parent:  # the parent was killed: nobody will read this result
            os._exit(1)
        queue.put(("progress", index, p))

    try:
        queue.put(("done", index, run_sweep(config, combos, objective=objective, bars=bars, progress=progress)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the sweep with it
        queue.put(("error", index, (type(exc).__name__, str(exc))))


def _run_parts(config: Any, parts: list[list[dict[str, Any]]], objective: str, bars: Any,
               progress: Callable[[Any], None] | None, total: int) -> list[dict[str, Any]]:
    """Run each part in its own process; returns their results in part order."""
    import multiprocessing as mp  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    # fork shares the loaded bars with every child for free; elsewhere spawn pickles them.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_part, args=(config, part, objective, bars, i, queue), daemon=True)
             for i, part in enumerate(parts)]
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns when forking a process with threads; a CLI process's only other
            # threads are numpy's BLAS pool, which registers fork handlers, and the children only
            # run the engine and put on their queue.
            warnings.simplefilter("ignore", DeprecationWarning)
            for proc in procs:
                proc.start()
        return _collect(procs, queue, progress, total)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
        queue.close()


def _collect(procs: list[Any], queue: Any, progress: Callable[[Any], None] | None, total: int) -> list[dict[str, Any]]:
    """Gather the parts' progress into one monotonic bar and their results; a part's error or a
    dead process fails the whole sweep."""
    import builtins  # noqa: PLC0415
    import queue as queue_mod  # noqa: PLC0415

    from engine.progress import Progress  # noqa: PLC0415

    state: dict[int, Any] = {}
    results: dict[int, dict[str, Any]] = {}
    missing_once: set[int] = set()
    while len(results) < len(procs):
        try:
            kind, index, payload = queue.get(timeout=0.2)
        except queue_mod.Empty:
            # A process that ended without its result: crashed (exit code != 0), or its result is
            # lost; one more quiet wait first, as a result can trail the exit by a moment.
            gone = {i for i, p in enumerate(procs) if i not in results and p.exitcode is not None}
            if gone & missing_once or any(procs[i].exitcode for i in gone):
                i = min(gone)
                raise RuntimeError(f"sweep process {i + 1} of {len(procs)} ended without a result "
                                   f"(exit code {procs[i].exitcode})")
            missing_once = gone
            continue
        if kind == "error":
            name, message = payload
            exc_type = getattr(builtins, name, None)
            if isinstance(exc_type, type) and issubclass(exc_type, Exception):
                raise exc_type(message)  # the same error a one-process sweep reports
            raise RuntimeError(f"{name}: {message}")
        if kind == "done":
            results[index] = payload
        else:
            state[index] = payload
            if progress is not None:
                progress(Progress(sum(p.bars_processed for p in state.values()), total, payload.current_date,
                                  sum(p.trades_count for p in state.values()),
                                  max(p.current_pnl for p in state.values())))
    return [results[i] for i in range(len(procs))]
