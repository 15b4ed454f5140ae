"""Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

Bailey, Borwein, Lopez de Prado and Zhu, "The Probability of Backtest Overfitting" (2015):

1. Take the ``T x N`` matrix of per-period returns of the N configurations a sweep tried.
2. Cut the T rows into S contiguous blocks (S even). For each of the C(S, S/2) ways to pick half
   the blocks as in-sample (the rest out-of-sample), find the configuration with the best
   in-sample Sharpe ratio and its relative rank ``w`` among all N out-of-sample (0..1).
3. The logit ``ln(w / (1 - w))`` is positive when the in-sample winner beats the out-of-sample
   median. PBO is the share of splits with a logit <= 0: how often picking the best in-sample
   config gives a below-median config out of sample. Near 0.5 means the choice is noise.
4. The performance degradation is the least-squares slope of the winner's out-of-sample Sharpe
   on its in-sample Sharpe across splits (negative: the better it looked, the worse it did).

Sharpe here is per period (mean / standard deviation, not annualised): only ranks and the
slope's sign matter. Blocks are ``numpy.array_split`` of the rows, so they differ by at most one row.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

DEFAULT_BLOCKS = 16
_CHUNK = 4096  # splits evaluated per matrix product; bounds memory at ~_CHUNK x N floats


def check_blocks(blocks: object, name: str = "pbo_blocks") -> int:
    """Return ``blocks`` if it is an even integer from 2 to 24, else raise ``ValueError``."""
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 2 or blocks > 24 or blocks % 2:
        raise ValueError(f"`{name}` must be an even integer from 2 to 24, got {blocks!r}")
    return blocks


def _split_masks(blocks: int) -> np.ndarray:
    """All C(S, S/2) in-sample block masks as a boolean ``splits x S`` matrix."""
    combos = list(itertools.combinations(range(blocks), blocks // 2))
    mask = np.zeros((len(combos), blocks), dtype=bool)
    rows = np.repeat(np.arange(len(combos)), blocks // 2)
    mask[rows, np.asarray(combos).ravel()] = True
    return mask


def _sharpe(s: np.ndarray, sq: np.ndarray, n: np.ndarray) -> np.ndarray:
    mean = s / n
    var = np.maximum(sq / n - mean * mean, 0.0)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 1e-15, mean / std, 0.0)


def _relative_rank(oos: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Rank of the chosen column in each row of ``oos`` (ties averaged), scaled to (0, 1)."""
    chosen = oos[np.arange(oos.shape[0]), best][:, None]
    below = (oos < chosen).sum(axis=1)
    equal = (oos == chosen).sum(axis=1)
    rank = below + (equal + 1) / 2.0  # 1..N
    return rank / (oos.shape[1] + 1.0)


def compute_pbo(returns: np.ndarray, *, blocks: int = DEFAULT_BLOCKS) -> dict[str, Any]:
    """CSCV on a ``T x N`` per-period returns matrix (rows: periods, columns: configurations).

    Returns ``{"pbo", "blocks", "splits", "configs", "periods", "logit_mean", "logit_median",
    "degradation_slope", "degradation_intercept", "prob_oos_loss", "logits_histogram"}``.
    ``prob_oos_loss`` is the share of splits where the in-sample winner's out-of-sample Sharpe < 0.
    Raises ``ValueError`` when there are fewer than 2 configurations or fewer periods than blocks.
    """
    check_blocks(blocks)
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"PBO needs a periods x configurations matrix with >= 2 configurations, got shape {m.shape}")
    if m.shape[0] < blocks:
        raise ValueError(f"`pbo_blocks` ({blocks}) must not exceed the number of return periods ({m.shape[0]})")
    m = np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
    parts = np.array_split(np.arange(m.shape[0]), blocks)
    b_sum = np.stack([m[p].sum(axis=0) for p in parts])
    b_sq = np.stack([(m[p] ** 2).sum(axis=0) for p in parts])
    b_n = np.array([len(p) for p in parts], dtype=float)
    lam, x, y = _cscv(b_sum, b_sq, b_n, _split_masks(blocks))
    slope, intercept = _fit(x, y)
    counts, edges = np.histogram(lam, bins=20)
    return {
        "pbo": float(np.mean(lam <= 0.0)),
        "blocks": blocks,
        "splits": int(lam.size),
        "configs": int(m.shape[1]),
        "periods": int(m.shape[0]),
        "logit_mean": float(lam.mean()),
        "logit_median": float(np.median(lam)),
        "degradation_slope": slope,
        "degradation_intercept": intercept,
        "prob_oos_loss": float(np.mean(y < 0.0)),
        "logits_histogram": {"counts": counts.tolist(), "edges": [float(e) for e in edges]},
    }


def _cscv(b_sum: np.ndarray, b_sq: np.ndarray, b_n: np.ndarray,
          masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, in-sample Sharpe of the winner, its out-of-sample Sharpe) for every split."""
    tot_sum, tot_sq, tot_n = b_sum.sum(axis=0), b_sq.sum(axis=0), b_n.sum()
    logits, is_best, oos_best = [], [], []
    for lo in range(0, masks.shape[0], _CHUNK):
        mk = masks[lo:lo + _CHUNK].astype(float)
        s_is, sq_is, n_is = mk @ b_sum, mk @ b_sq, (mk @ b_n)[:, None]
        is_sr = _sharpe(s_is, sq_is, n_is)
        oos_sr = _sharpe(tot_sum - s_is, tot_sq - sq_is, tot_n - n_is)
        best = np.argmax(is_sr, axis=1)
        w = _relative_rank(oos_sr, best)
        logits.append(np.log(w / (1.0 - w)))
        rows = np.arange(mk.shape[0])
        is_best.append(is_sr[rows, best])
        oos_best.append(oos_sr[rows, best])
    return np.concatenate(logits), np.concatenate(is_best), np.concatenate(oos_best)


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """Least-squares line y = a*x + b; None when x does not vary."""
    if x.size < 2 or float(np.ptp(x)) == 0.0:
        return None, None
    a, b = np.polyfit(x, y, 1)
    return (float(a), float(b)) if math.isfinite(a) and math.isfinite(b) else (None, None)
