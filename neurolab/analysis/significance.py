"""How often a heuristic score would arise by chance: hypergeometric p-values and Benjamini-Hochberg FDR.

A raw share of top neurons "with a heuristic" counts heuristics that hold for most prompts (on the embedded model's
`-` grid ``result_range_0_50`` holds for 75% of prompts), so it can reach 100% by chance. The null here: a neuron's
top-k prompts are k prompts drawn without replacement from the P valid ones, |S| of which satisfy the heuristic; the
p-value is P(X >= the observed count), X hypergeometric. Everything is computed at read time from stored numbers
(score x k = the count, base_rate x P = |S|), exactly, with a log-factorial table (no scipy).

Caveats, stated rather than hidden: digit patterns and `/` multi-values are chosen per neuron after looking at its top
prompts, so their p-values are optimistic; a gated model's score is the better of its top and bottom sides (two
tests), which the p-value does not correct for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: the false discovery rate at which a match counts as significant
FDR = 0.01


def _log_factorials(n: int) -> np.ndarray:
    """log(i!) for i in 0..n."""
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _upper_tail(logf: np.ndarray, total: int, good: int, draws: int) -> np.ndarray:
    """P(X >= c) for c in 0..draws, X ~ Hypergeometric(total, good, draws), summed from the smallest terms up."""
    x = np.arange(draws + 1)
    possible = (x <= good) & (draws - x <= total - good)
    xs = np.where(possible, x, 0)
    log_pmf = (logf[good] - logf[xs] - logf[np.maximum(good - xs, 0)]
               + logf[total - good] - logf[np.maximum(draws - xs, 0)] - logf[np.maximum(total - good - draws + xs, 0)]
               - (logf[total] - logf[draws] - logf[total - draws]))
    pmf = np.where(possible, np.exp(log_pmf), 0.0)
    return np.minimum(np.cumsum(pmf[::-1])[::-1], 1.0)


def hypergeometric_p(count: np.ndarray, k: np.ndarray, satisfied: np.ndarray, total: np.ndarray) -> np.ndarray:
    """P(X >= count) for each row: ``k`` prompts drawn from ``total``, ``satisfied`` of which satisfy the heuristic."""
    count, k, satisfied, total = (np.asarray(a, dtype=np.int64) for a in (count, k, satisfied, total))
    p = np.ones(len(count))
    if not len(count):
        return p
    if (k > total).any() or (satisfied > total).any() or (k < 0).any() or (satisfied < 0).any():
        raise ValueError("k and |S| must lie in 0..P")
    logf = _log_factorials(int(total.max()))
    keys = pd.DataFrame({"total": total, "good": satisfied, "draws": k})
    for (n, good, draws), rows in keys.groupby(["total", "good", "draws"]).indices.items():
        tail = _upper_tail(logf, int(n), int(good), int(draws))
        p[rows] = tail[np.clip(count[rows], 0, draws)]
    return p


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """The BH-adjusted q-value of each p (q <= alpha: significant at false discovery rate alpha)."""
    p = np.asarray(p, dtype=np.float64)
    if not len(p):
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(q, 1.0)
    return out


def with_significance(scores: pd.DataFrame, n_prompts: int | pd.Series, runs: list[str] | None = None,
                      alpha: float = FDR) -> pd.DataFrame:
    """``scores`` (rows of ``heuristic_scores``: score, k, base_rate, matched) plus ``p_value``, ``q_value`` (BH
    over every row of the same run: rows sharing the ``runs`` columns; all rows when None) and ``significant``
    (matched and q <= alpha). ``n_prompts``: the grid's P, one number or one per row."""
    k = scores["k"].to_numpy()
    total = np.broadcast_to(np.asarray(n_prompts, dtype=np.int64), k.shape)
    count = np.rint(scores["score"].to_numpy() * k)
    satisfied = np.rint(scores["base_rate"].to_numpy() * total)
    out = scores.assign(p_value=hypergeometric_p(count, k, satisfied, total))
    if runs:
        q = out.groupby(runs, dropna=False)["p_value"].transform(lambda p: benjamini_hochberg(p.to_numpy()))
    else:
        q = benjamini_hochberg(out["p_value"].to_numpy())
    return out.assign(q_value=np.asarray(q, dtype=np.float64),
                      significant=out["matched"].to_numpy() & (np.asarray(q) <= alpha))


def grouped_q_values(groups: pd.DataFrame, runs: list[str]) -> pd.DataFrame:
    """BH over tests given as groups of identical ones: ``groups`` has the ``runs`` columns, ``count``, ``k``,
    ``satisfied``, ``total`` and ``rows`` (how many tests share them). Adds ``p_value`` and ``q_value``: the same
    q every test of the group gets from :func:`benjamini_hochberg` on the expanded rows (ties share the q of the
    highest rank among them), without expanding a million rows."""
    out = groups.assign(p_value=hypergeometric_p(groups["count"], groups["k"], groups["satisfied"], groups["total"]))
    out = out.sort_values([*runs, "p_value"], kind="stable")
    q = np.empty(len(out))
    for rows in out.groupby(runs, dropna=False, sort=False).indices.values():
        part = out.iloc[rows]
        p, n = part["p_value"].to_numpy(), part["rows"].to_numpy()
        rank = np.cumsum(n)  # the rank of the last test of each group (p ascending)
        # groups with the same p are one tie: each takes the rank of the last of them
        last = pd.Series(rank).groupby(p).transform("max").to_numpy()
        q[rows] = np.minimum(np.minimum.accumulate((p * rank[-1] / last)[::-1])[::-1], 1.0)
    return out.assign(q_value=q)
