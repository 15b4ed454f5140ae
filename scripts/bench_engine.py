"""Engine benchmark: SMA(10/20) reversal with metrics on 1M hourly bars, QuantMindX vs peers.

Usage: ``python scripts/bench_engine.py [--bars 1000000] [--peer-bars 100000] [--repeat 3]
[--no-vectorbt]``. Prints one table; every figure comes from the same run on the same machine.

Sections (each a function in :data:`SECTIONS`, run in order by :func:`main`; add one by appending
a ``section(ctx: Context) -> list[Row]`` to the list, e.g. a parameter-sweep section):

* QuantMindX built-in ``sma_cross`` fast path: simulate + all metrics; and a full ``run_backtest``
  (also builds the JSON trade list and equity curve);
* a per-bar Python user strategy (``scripts/examples_strategy.py:UserSmaCross``);
* peak memory of the built-in run (tracemalloc peak of new allocations, and RSS growth);
* a bare numpy vectorised reference (no fills or metrics beyond equity, drawdown, Sharpe);
* backtesting.py 0.6.6 on ``--peer-bars`` bars (1M bars takes many minutes there);
* vectorbt, installed for the benchmark only into a private virtualenv
  (``~/.cache/quantmindx/bench-venv``, ``pip install vectorbt``) and run in a subprocess; if it
  cannot be installed the table says so.

Goals (issue 2): built-ins >= 10M bars/s with metrics on 1M bars; per-bar Python >= 10x
backtesting.py; peak memory < 300 MB at 1M bars. On a shared machine timings are noisy: the
best of ``--repeat`` runs is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.backtest import run_backtest  # noqa: E402
from engine.bars import Bars  # noqa: E402
from engine.config import BacktestConfig  # noqa: E402
from engine.metrics import compute_metrics  # noqa: E402
from engine.simulator import simulate_strategy  # noqa: E402
from engine.strategies import SmaCross, load_strategy  # noqa: E402

VENV = Path.home() / ".cache" / "quantmindx" / "bench-venv"


@dataclass
class Row:
    """One line of the table."""

    name: str
    bars: int
    seconds: float | None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.bars / self.seconds if self.seconds else None


@dataclass
class Context:
    """What every section gets: the bars, the config and the options."""

    bars: Bars
    peer_bars: Bars
    config: BacktestConfig
    repeat: int
    vectorbt: bool
    results: dict[str, Row] = field(default_factory=dict)


def random_walk_bars(n: int, seed: int = 7) -> Bars:
    """Seeded hourly random-walk OHLC bars (weekdays and weekends alike)."""
    rng = np.random.default_rng(seed)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.empty(n)
    open_[0] = 1.1
    open_[1:] = close[:-1]
    wick = np.abs(rng.normal(0, 0.0005, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    t = np.int64(1_500_000_000) * 10**9 + np.arange(n, dtype=np.int64) * 3600 * 10**9
    return Bars("BENCH", "H1", t, open_, high, low, close, np.ones(n), synthetic=True, source="random walk")


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _builtin(ctx: Context) -> Any:
    sim = simulate_strategy(ctx.bars, SmaCross(fast=10, slow=20), ctx.config)
    compute_metrics(ctx.bars.time, ctx.bars.close, sim.equity, pnl=sim.pnl, return_pct=sim.return_pct,
                    entry_bar=sim.entry_bar, exit_bar=sim.exit_bar, commission=sim.commission, warmup=sim.warmup)
    return sim


def section_qmx_builtin(ctx: Context) -> list[Row]:
    """QuantMindX built-in fast path, with metrics; and a full run_backtest with JSON results."""
    n = len(ctx.bars)
    secs, sim = best_of(ctx.repeat, lambda: _builtin(ctx))
    full, out = best_of(ctx.repeat, lambda: run_backtest(ctx.config, bars=ctx.bars))
    risky = SmaCross(fast=10, slow=20, stop_loss_pct=0.5, take_profit_pct=1.0)
    stops, ssim = best_of(ctx.repeat, lambda: simulate_strategy(ctx.bars, risky, ctx.config))
    return [Row("QuantMindX built-in sma_cross + metrics", n, secs, f"{sim.n_trades} trades"),
            Row("QuantMindX built-in sma_cross, stop 0.5% target 1%", n, stops,
                f"{ssim.n_trades} trades, {ssim.path} path, no metrics"),
            Row("QuantMindX run_backtest (+ JSON trades/equity)", n, full, f"{out['total_trades']} trades")]


def section_qmx_per_bar(ctx: Context) -> list[Row]:
    """A per-bar Python user strategy loaded from a file (the same trades as the built-in)."""
    cls = load_strategy(f"{ROOT / 'scripts' / 'examples_strategy.py'}:UserSmaCross")
    secs, sim = best_of(ctx.repeat, lambda: simulate_strategy(ctx.bars, cls(fast=10, slow=20), ctx.config))
    return [Row("QuantMindX per-bar Python strategy", len(ctx.bars), secs, f"{sim.n_trades} trades")]


def section_memory(ctx: Context) -> list[Row]:
    """Peak memory of one built-in run with metrics (input bars excluded)."""
    import psutil

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    _builtin(ctx)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = proc.memory_info().rss - rss0
    input_mb = sum(a.nbytes for a in (ctx.bars.time, ctx.bars.open, ctx.bars.high, ctx.bars.low,
                                      ctx.bars.close, ctx.bars.volume)) / 1e6
    return [Row("QuantMindX peak memory (built-in run)", len(ctx.bars), None,
                f"tracemalloc peak {peak / 1e6:.0f} MB, RSS growth {max(rss, 0) / 1e6:.0f} MB, "
                f"input bars {input_mb:.0f} MB", {"peak_mb": peak / 1e6})]


def numpy_reference(close: np.ndarray, fast: int = 10, slow: int = 20) -> tuple[float, float]:
    """Bare vectorised SMA reversal: positions from crosses, equity, max drawdown, Sharpe (per bar)."""
    c = np.cumsum(close - close[0])
    f = (c[fast - 1:] - np.concatenate(([0.0], c[:-fast]))) / fast
    s = (c[slow - 1:] - np.concatenate(([0.0], c[:-slow]))) / slow
    f = f[slow - fast:]
    above = f > s
    cross = np.flatnonzero(above[1:] != above[:-1]) + 1
    side = np.zeros(above.size)
    side[cross] = np.where(above[cross], 1.0, -1.0)
    idx = np.maximum.accumulate(np.where(side != 0, np.arange(side.size), 0))
    pos = side[idx]
    pnl = pos[:-1] * np.diff(close[slow - 1:])
    equity = 1e6 + 1e5 * np.cumsum(pnl)
    dd = float((1 - equity / np.maximum.accumulate(equity)).max())
    r = np.diff(equity) / equity[:-1]
    return dd, float(r.mean() / r.std())


def section_numpy(ctx: Context) -> list[Row]:
    """The bare numpy reference (no next-open fills, no trade list, no backtesting.py metrics)."""
    secs, _ = best_of(ctx.repeat, lambda: numpy_reference(ctx.bars.close))
    return [Row("bare numpy vectorised reference", len(ctx.bars), secs)]


def section_backtesting_py(ctx: Context) -> list[Row]:
    """backtesting.py running the same strategy (stats included) on ``--peer-bars`` bars."""
    # bench_sweep holds the one backtesting.py twin of sma_cross (10/20 reversal, 100,000 units).
    from bench_sweep import _BT_ERROR, BtCross, peer_frame  # noqa: PLC0415 - scripts/ is on sys.path

    if BtCross is None:
        return [Row("backtesting.py", 0, None, f"not installed ({_BT_ERROR}); pip install backtesting")]
    from backtesting import Backtest  # noqa: PLC0415

    b = ctx.peer_bars
    df = peer_frame(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        secs, stats = best_of(1, lambda: Backtest(df, BtCross, cash=1_000_000).run())
    return [Row("backtesting.py 0.6.6 (same strategy + stats)", len(b), secs, f"{stats['# Trades']} trades; "
                f"run on {len(b):,} bars (1M takes many minutes)")]


_VBT_SCRIPT = r"""
import json, sys, time
import numpy as np, vectorbt as vbt
close = np.load(sys.argv[1])
def run(c):
    fast, slow = vbt.MA.run(c, 10), vbt.MA.run(c, 20)
    entries, exits = fast.ma_crossed_above(slow), fast.ma_crossed_below(slow)
    pf = vbt.Portfolio.from_signals(c, entries, exits, direction="both", size=100000, size_type="amount",
                                    init_cash=1e6, freq="1h")
    return [pf.total_return(), pf.max_drawdown(), pf.sharpe_ratio(), pf.trades.count(), pf.trades.win_rate()]
run(close[:5000])  # numba compiles on first use; not timed
best = float("inf")
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); out = run(close); best = min(best, time.perf_counter() - t)
print(json.dumps({"seconds": best, "trades": int(out[3])}))
"""


def _vectorbt_python() -> tuple[str | None, str]:
    """A Python with vectorbt importable: this one, or a private venv installed on demand."""
    if subprocess.run([sys.executable, "-c", "import vectorbt"], capture_output=True).returncode == 0:
        return sys.executable, "installed"
    py = VENV / "bin" / "python"
    if not py.exists():
        made = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)],
                              capture_output=True, text=True)
        if made.returncode:
            return None, f"cannot create a venv: {made.stderr.strip()[-200:]}"
    if subprocess.run([str(py), "-c", "import vectorbt"], capture_output=True).returncode:
        print("installing vectorbt into", VENV, "(benchmark only) ...", file=sys.stderr)
        got = subprocess.run([str(py), "-m", "pip", "install", "-q", "vectorbt"], capture_output=True, text=True)
        if got.returncode:
            return None, f"pip install vectorbt failed: {got.stderr.strip()[-200:]}"
    return str(py), "private venv"


def section_vectorbt(ctx: Context) -> list[Row]:
    """vectorbt's MA crossover with Portfolio.from_signals (both directions) and its stats."""
    if not ctx.vectorbt:
        return [Row("vectorbt", 0, None, "skipped (--no-vectorbt)")]
    py, how = _vectorbt_python()
    if py is None:
        return [Row("vectorbt", 0, None, f"could not be installed: {how}")]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "close.npy")
        np.save(path, ctx.bars.close)
        got = subprocess.run([py, "-c", _VBT_SCRIPT, path, str(ctx.repeat)], capture_output=True, text=True)
    if got.returncode:
        return [Row("vectorbt", 0, None, f"failed: {got.stderr.strip()[-200:]}")]
    out = json.loads(got.stdout.strip().splitlines()[-1])
    return [Row("vectorbt (MA cross, from_signals, stats)", len(ctx.bars), out["seconds"],
                f"{out['trades']} trades; fills at close; {how}")]


#: Sections run in order by main(); append more (e.g. a sweep section) here.
SECTIONS: list[Callable[[Context], list[Row]]] = [
    section_qmx_builtin, section_qmx_per_bar, section_memory, section_numpy, section_backtesting_py,
    section_vectorbt,
]



def section_sweep(ctx: Context) -> list[Row]:
    """The 45-pair SMA grid on 100k bars vs peers (scripts/bench_sweep.py, issue 3)."""
    from bench_sweep import sweep_rows  # noqa: PLC0415 - scripts/ is on sys.path when run as a script

    bars = ctx.bars.window(0, min(len(ctx.bars), 100_000))
    return sweep_rows(bars, bars.window(0, min(len(bars), 10_000)), ctx.repeat, ctx.vectorbt)


SECTIONS.append(section_sweep)

def print_table(rows: list[Row]) -> None:
    print(f"{'what':<50} {'bars':>10} {'seconds':>9} {'bars/s':>12}  note")
    for r in rows:
        secs = f"{r.seconds:.3f}" if r.seconds else "-"
        rate = f"{r.rate / 1e6:.2f}M" if r.rate else "-"
        print(f"{r.name:<50} {r.bars:>10,} {secs:>9} {rate:>12}  {r.note}")


def print_goals(rows: list[Row]) -> None:
    by = {r.name.split(" (")[0]: r for r in rows}
    built = by.get("QuantMindX built-in sma_cross + metrics")
    per_bar = by.get("QuantMindX per-bar Python strategy")
    bt = by.get("backtesting.py 0.6.6")
    vbt = by.get("vectorbt")
    mem = next((r for r in rows if "peak_mb" in r.extra), None)
    print("\ngoals (timings on a shared, busy 2-core machine are noisy):")
    if built and built.rate:
        print(f"  built-in with metrics >= 10M bars/s: {built.rate / 1e6:.1f}M "
              f"[{'ok' if built.rate >= 10e6 else 'MISSED'}]")
        if vbt and vbt.rate:
            print(f"  built-in vs vectorbt: {built.rate / vbt.rate:.1f}x")
        if bt and bt.rate:
            print(f"  built-in vs backtesting.py: {built.rate / bt.rate:.0f}x")
    if per_bar and per_bar.rate and bt and bt.rate:
        ratio = per_bar.rate / bt.rate
        print(f"  per-bar Python >= 10x backtesting.py: {ratio:.1f}x [{'ok' if ratio >= 10 else 'MISSED'}]")
    if mem:
        print(f"  peak memory < 300 MB: {mem.extra['peak_mb']:.0f} MB [{'ok' if mem.extra['peak_mb'] < 300 else 'MISSED'}]")


def main(argv: list[str] | None = None) -> int:
    """Run every section and print the table; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000, help="bars for QuantMindX, numpy and vectorbt")
    ap.add_argument("--peer-bars", type=int, default=100_000, help="bars for backtesting.py")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is reported)")
    ap.add_argument("--no-vectorbt", action="store_true", help="skip installing and running vectorbt")
    args = ap.parse_args(argv)
    bars = random_walk_bars(args.bars)
    config = BacktestConfig(symbol="BENCH", initial_balance=1_000_000.0, size=100_000.0,
                            params={"fast": 10, "slow": 20})
    ctx = Context(bars, bars.window(0, min(args.peer_bars, args.bars)), config, args.repeat, not args.no_vectorbt)
    rows: list[Row] = []
    for section in SECTIONS:
        for row in section(ctx):
            ctx.results[row.name] = row
            rows.append(row)
    print(f"SMA(10/20) reversal, {args.bars:,} hourly random-walk bars, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    print_table(rows)
    print_goals(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
