"""Spectra of neuron maps, and whether a period the spectrum shows actually separates residues.

Zhou et al. (2024) read Fourier spectra of number representations; "Convergent Evolution" (arXiv 2604.20817) shows
that a spectral peak is necessary but not sufficient for a neuron to separate residues. So beside every period this
module reports both (``../shared/anatomy.md`` section 2):

- the 2-D DFT of a full-grid map (mean removed): the top frequency pairs, the diagonal share (a function of a+b puts
  its energy on k1 = k2) and the shares at periods T = max_op / k per axis. Only complete grids (every (a, b) with
  0 <= a, b < max_op valid, e.g. ``+``) have one;
- on every grid, complete or not, the 1-D spectrum of the map's group means over a, b and r: the share of their
  variance a cosine of period T explains (a least-squares fit at that period, so it is defined for any number of
  values, e.g. the 199 sums of ``+``);
- the 1-D DFT of a neuron's number-line logit lens (its value vector's logits on the numbers 0..max);
- separability: the best one-vs-rest AUROC of the map for q mod T = rho over rho (either direction: a neuron may
  mark a residue by firing less).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .shape import Operands

PERIODS = (2, 5, 10, 100)
QUANTITIES = ("a", "b", "r")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of each row of ``values`` ``[n, N]``, ties sharing their average rank (AUROC needs that: maps
    stored as float16 tie often)."""
    values = np.asarray(values)
    n, size = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    new = np.ones((n, size), bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    positions = np.broadcast_to(np.arange(size), (n, size))
    first = np.maximum.accumulate(np.where(new, positions, 0), axis=1)
    ends = np.ones((n, size), bool)
    ends[:, :-1] = new[:, 1:]
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, positions, size), axis=1), axis=1), axis=1)
    ranks = np.empty((n, size), np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=1)
    return ranks


def residue_auroc(maps: np.ndarray | None, quantity: np.ndarray, period: int, ranks: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: the best one-vs-rest AUROC of the map for ``quantity mod period`` (max over residues rho of
    max(AUROC, 1 - AUROC)) and that residue. ``ranks`` (:func:`average_ranks` of ``maps``) may be passed to reuse."""
    ranks = average_ranks(maps) if ranks is None else ranks
    residue = np.asarray(quantity) % period
    present = np.unique(residue)
    onehot = (residue[:, None] == present[None, :]).astype(np.float64)
    inside = onehot.sum(0)
    outside = len(residue) - inside
    auc = (ranks @ onehot - inside * (inside + 1) / 2) / np.maximum(inside * outside, 1)
    auc = np.where(outside > 0, auc, 0.5)
    both = np.maximum(auc, 1 - auc)
    best = both.argmax(1)
    return both[np.arange(len(both)), best], present[best]


def group_means(maps: np.ndarray, quantity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The maps' mean per value of ``quantity`` (``[n, values]``) and those values."""
    values, index = np.unique(np.asarray(quantity), return_inverse=True)
    onehot = np.zeros((len(index), len(values)), np.float32)
    onehot[np.arange(len(index)), index] = 1
    return (np.asarray(maps, np.float32) @ onehot) / onehot.sum(0), values


def periodic_share(means: np.ndarray, values: np.ndarray, period: int) -> np.ndarray:
    """Per row of ``means`` (group means over ``values``): the share of their variance that a cosine of
    ``period`` (any phase) explains."""
    centred = means - means.mean(1, keepdims=True)
    angle = 2 * np.pi * values / period
    basis = [np.cos(angle)] + ([np.sin(angle)] if period > 2 else [])  # sin(pi t) = 0 on integers
    basis = np.stack(basis, 1)
    basis = basis - basis.mean(0)
    coefficients, *_ = np.linalg.lstsq(basis, centred.T, rcond=None)
    fitted = basis @ coefficients
    total = (centred ** 2).sum(1)
    return np.where(total > 0, (fitted ** 2).sum(0) / np.where(total > 0, total, 1), 0.0)


def line_spectra(maps: np.ndarray, operands: Operands, periods: tuple[int, ...] = PERIODS) -> pd.DataFrame:
    """Per neuron, for q in a, b, r and T in ``periods``: ``share[q,T]`` (periodic share of the group means) and
    ``auroc[q,T]`` (residue separability of the map). Defined on every grid, complete or not."""
    ranks = average_ranks(maps)
    columns: dict[str, np.ndarray] = {}
    for name in QUANTITIES:
        quantity = getattr(operands, name)
        means, values = group_means(maps, quantity)
        for period in periods:
            columns[f"share[{name},{period}]"] = periodic_share(means, values, period)
            columns[f"auroc[{name},{period}]"] = residue_auroc(maps, quantity, period, ranks)[0]
    return pd.DataFrame(columns)


def is_complete(operands: Operands, max_op: int) -> bool:
    """Whether every (a, b) with 0 <= a, b < max_op is a prompt (a 2-D DFT needs the whole square)."""
    return len(operands) == max_op * max_op and len(set(zip(operands.a.tolist(), operands.b.tolist()))) == len(
        operands) and operands.a.max() < max_op and operands.b.max() < max_op


def grid_spectra(maps: np.ndarray, operands: Operands, max_op: int, top: int = 3,
                 periods: tuple[int, ...] = PERIODS) -> pd.DataFrame:
    """Per neuron of a complete grid: the 2-D DFT's ``top`` frequency pairs (k1 for a, k2 for b, signed, with
    their energy share; a pair and its mirror (-k1, -k2) counted together), the diagonal share (k1 = k2) and per
    period T the share on each axis (``axis_a[T]``: k1 = +-max_op/T, any k2), and on the diagonal."""
    n = len(maps)
    square = np.zeros((n, max_op, max_op), np.float32)
    square[:, operands.a, operands.b] = maps
    square -= square.mean((1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(square)) ** 2
    total = power.sum((1, 2))
    power = power / np.where(total > 0, total, 1)[:, None, None]
    k = np.arange(max_op)
    signed = np.where(k > max_op // 2, k - max_op, k)
    columns: dict[str, np.ndarray] = {"diagonal_share": np.einsum("ikk->i", power)}
    for period in periods:
        if max_op % period:
            continue
        f = max_op // period
        rows = sorted({f % max_op, (-f) % max_op})
        columns[f"axis_a[{period}]"] = power[:, rows, :].sum((1, 2))
        columns[f"axis_b[{period}]"] = power[:, :, rows].sum((1, 2))
        columns[f"diagonal[{period}]"] = sum(power[:, i, i] for i in rows)
    # a real map's power is symmetric: P(k1, k2) = P(-k1, -k2); count each pair once, with its mirror
    own_mirror_row = ((2 * k) % max_op == 0)[:, None]  # k1 = 0 or max_op / 2: the mirror stays in the row
    half = (~own_mirror_row & (signed[:, None] > 0)) | (own_mirror_row & (signed[None, :] >= 0))
    self_mirror = own_mirror_row & ((2 * k) % max_op == 0)[None, :]
    folded = np.where(self_mirror, power, np.where(half, 2 * power, 0)).reshape(n, -1)
    best = np.argsort(-folded, axis=1)[:, :top]
    for i in range(top):
        columns[f"pair{i + 1}"] = [f"({signed[j // max_op]},{signed[j % max_op]})" for j in best[:, i]]
        columns[f"pair{i + 1}_share"] = folded[np.arange(n), best[:, i]]
    return pd.DataFrame(columns)


def number_line_periods(lens: np.ndarray, top: int = 3) -> pd.DataFrame:
    """Per neuron: the ``top`` periods of the 1-D DFT of its number-line logit lens ``[n, numbers]`` (mean removed),
    with their energy shares (Zhou et al. find periods 2, 2.5, 5 and 10 in models' number outputs)."""
    lens = np.asarray(lens, np.float64)
    power = np.abs(np.fft.rfft(lens - lens.mean(1, keepdims=True), axis=1)) ** 2
    power[:, 0] = 0
    total = power.sum(1, keepdims=True)
    power = power / np.where(total > 0, total, 1)
    best = np.argsort(-power, axis=1)[:, :top]
    size = lens.shape[1]
    columns: dict[str, np.ndarray] = {}
    for i in range(top):
        columns[f"lens_period{i + 1}"] = size / np.maximum(best[:, i], 1)
        columns[f"lens_period{i + 1}_share"] = power[np.arange(len(lens)), best[:, i]]
    return pd.DataFrame(columns)
