"""Monte Carlo resampling of trades: how much of a backtest's result was the luck of the order.

Each run rebuilds a whole equity path by compounding per-trade account returns from the starting
balance, so both the final return and the maximum drawdown get a real distribution:

- ``shuffle`` permutes the order of the trades. The product of ``(1 + r)`` is unchanged, so the
  final return is the same in every run; only the path, and therefore the drawdown, changes.
- ``bootstrap`` draws as many trades as there were, with replacement. Both the final return and
  the drawdown change.

All runs of one method are one ``runs x trades`` numpy matrix; nothing loops per run.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
METHODS: tuple[str, ...] = ("bootstrap", "shuffle")
DEFAULT_RUNS = 1000


def trade_account_returns(pnls: ArrayLike, initial_balance: float) -> np.ndarray:
    """Per-trade returns on the account: each trade's PnL over the closed balance before it.

    Trades are taken in the order given (one position at a time, as the engine trades).
    """
    pnl = np.asarray(pnls, dtype=float)
    if initial_balance <= 0:
        raise ValueError(f"`initial_balance` must be > 0, got {initial_balance!r}")
    before = initial_balance + np.concatenate(([0.0], np.cumsum(pnl)[:-1]))
    # A balance at or below zero has no meaningful return; treat such a trade as total ruin.
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(before > 0, pnl / before, -1.0)
    return np.maximum(r, -1.0)


def equity_paths(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Final return % and max drawdown % (positive) of each row of a ``runs x trades`` matrix."""
    growth = np.cumprod(1.0 + returns, axis=1)
    # The starting balance (growth 1.0) is the first peak, so a first losing trade is a drawdown.
    peak = np.maximum.accumulate(np.maximum(growth, 1.0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - growth / peak, 0.0)
    final_pct = (growth[:, -1] - 1.0) * 100.0
    max_dd_pct = dd.max(axis=1) * 100.0
    return final_pct, max_dd_pct


def _percentiles(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, q)}


def _summary(final_pct: np.ndarray, max_dd_pct: np.ndarray) -> dict[str, Any]:
    p5 = float(np.percentile(final_pct, 5))
    tail = final_pct[final_pct <= p5]
    return {
        "final_return_pct": _percentiles(final_pct),
        "max_drawdown_pct": _percentiles(max_dd_pct),
        "mean_final_return_pct": float(final_pct.mean()),
        "prob_loss": float(np.mean(final_pct < 0.0)),
        # Losses as positive percents of the starting balance; negative means even the bad tail gains.
        "var_95_pct": -p5,
        "es_95_pct": -float(tail.mean()),
    }


def run_monte_carlo(trade_returns: ArrayLike, *, runs: int = DEFAULT_RUNS, seed: int | None = 42,
                    methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """Resample per-trade account returns ``runs`` times per method and summarise the paths.

    ``trade_returns`` are fractions (0.01 = +1 % of the account), e.g. from
    :func:`trade_account_returns`. Returns ``{"runs", "seed", "trades", "original": {...},
    "bootstrap": {...}, "shuffle": {...}}``; each method holds percentiles 5/25/50/75/95 of the
    final return % and of the max drawdown %, ``prob_loss`` (share of runs ending below the
    start), ``var_95_pct`` (minus the 5th percentile of the final return %) and ``es_95_pct``
    (minus the mean final return % of the runs at or below that percentile).
    With no trades every method is ``None``.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"`mc_runs` must be an integer >= 1, got {runs!r}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"`methods` must be among {list(METHODS)}, got {m!r}")
    r = np.asarray(trade_returns, dtype=float)
    out: dict[str, Any] = {"runs": runs, "seed": seed, "trades": int(r.size)}
    if r.size == 0:
        out["original"] = None
        out.update({m: None for m in methods})
        return out
    final, dd = equity_paths(r[None, :])
    out["original"] = {"final_return_pct": float(final[0]), "max_drawdown_pct": float(dd[0])}
    rng = np.random.default_rng(seed)
    for m in methods:
        if m == "bootstrap":
            sample = r[rng.integers(0, r.size, size=(runs, r.size))]
        else:
            # argsort of uniform noise gives an independent permutation per row, all at once.
            sample = r[np.argsort(rng.random((runs, r.size)), axis=1)]
        out[m] = _summary(*equity_paths(sample))
    return out
