"""The shape of a neuron's map over an operand grid: how much of its variance each function of the operands explains.

After the Anthropic 2025 addition case study, which sorts units by the look of their operand plot (sum, lookup table,
operand, mostly active), automated as in ``../shared/anatomy.md`` section 1: for each grouping key g(a, b) the
correlation ratio R2[g] = 1 - SS_within / SS_tot and its adjusted form (keys with many groups overfit), the two-way
additive fit mu + row(a) + col(b) and its interaction share, and the active share. Every key is a projection of
the map onto group indicators, so it needs only each group's sum: five keys (a, b, r and the two digit lookups) are
summed from the centred maps of all neurons of a layer at once, every other key (residues, digits) is a function of
one of them and merges their sums. The additive fit is solved from the same sums through the (a, b) design's Gram
matrix, exact on incomplete grids (``-``, ``/``: least squares over the valid prompts only, never a filled-in cell).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..errors import InputError

LABELS = ("constant", "operand-1", "operand-2", "additive", "result-modular", "sum", "lookup-table", "mostly-active",
          "mixed")
MODULI = tuple(range(2, 11))


@dataclass(frozen=True)
class ShapeThresholds:
    """Where one label ends and the next begins. Chosen on planted maps (tests/test_anatomy.py): each planted
    shape clears its own threshold by a wide margin and stays far below the others'; every number is stored beside
    the label, so any other threshold can be applied afterwards."""

    constant_std: float = 1e-3  # a map with a smaller standard deviation is constant (float16 storage noise)
    additive: float = 0.8  # R2 of mu + row(a) + col(b) at least this: an operand or add-function unit
    operand: float = 0.9  # share of the additive fit one operand alone explains to call it that operand's unit
    key: float = 0.6  # adjR2 of r (sum) or of a digit lookup key (lookup table)
    modular: float = 0.6  # adjR2 of r mod n for a result-modular unit, which also needs ...
    auroc: float = 0.95  # ... residue separability: the best one-vs-rest AUROC of the map for r mod n
    active_fraction: float = 0.1  # active: the post-activation exceeds this fraction of its maximum
    mostly_active: float = 0.9  # active share at least this, with no structure above: mostly active

    def spec(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Operands:
    """The valid prompts of one operator's grid: op1 (a), op2 (b) and the answer (r), ``[N]`` each."""

    a: np.ndarray
    b: np.ndarray
    r: np.ndarray

    @classmethod
    def from_prompts(cls, prompts: pd.DataFrame) -> Operands:
        return cls(*(prompts[c].to_numpy().astype(np.int64) for c in ("op1", "op2", "answer")))

    def __len__(self) -> int:
        return len(self.a)

    def base_keys(self) -> dict[str, np.ndarray]:
        """The keys whose group sums are read from the maps; every other key is a function of one of them."""
        a, b = self.a, self.b
        return {"a": a, "b": b, "r": self.r, "ones lookup": (a % 10) * 10 + b % 10,
                "tens lookup": (a // 10) * (int(b.max()) // 10 + 1) + b // 10}


#: keys that are functions of a base key's value: name -> (base key, function of its values)
DERIVED: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    **{f"{q} mod {n}": (q, lambda v, n=n: v % n) for n in MODULI for q in ("a", "b", "r")},
    "r tens digit": ("r", lambda v: (v // 10) % 10),
    "r hundreds digit": ("r", lambda v: v // 100),
    "ones sum": ("ones lookup", lambda v: v // 10 + v % 10),  # a's ones digit + b's (0..18)
    "carry": ("ones lookup", lambda v: (v // 10 + v % 10) >= 10),
}


def _group_sums(maps: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each group's sum of each row of ``maps`` ``[n, N]`` (``[n, G]``, by sorting the prompts once and adding
    runs: cheaper than a product with indicator columns), the groups' counts and values."""
    values, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.argsort(index, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    return np.add.reduceat(maps[:, order], starts, axis=1).astype(np.float64), counts, values


def _derived_sums(sums: np.ndarray, counts: np.ndarray, values: np.ndarray,
                  function: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group sums and counts of a key that is ``function`` of a base key, from the base key's."""
    _, index = np.unique(function(values), return_inverse=True)
    merge = np.zeros((len(values), int(index.max()) + 1))
    merge[np.arange(len(values)), index] = 1
    return sums @ merge, counts @ merge


def variance_explained(maps: np.ndarray, operands: Operands) -> pd.DataFrame:
    """Per neuron (rows of ``maps`` ``[n, N]``): R2 and adjR2 of every key, R2 of the additive fit, SS_tot.

    Columns ``r2[key]``, ``adj[key]``, ``r2_additive``, ``interaction`` (= 1 - r2_additive), ``std``."""
    maps = np.asarray(maps, np.float32)
    n_prompts = maps.shape[1]
    if n_prompts != len(operands):
        raise InputError(f"maps have {n_prompts} prompts, the grid {len(operands)}")
    if n_prompts < 3:
        raise InputError("a shape needs at least 3 prompts")
    centred = maps - maps.mean(1, keepdims=True)
    ss_tot = np.einsum("ij,ij->i", centred, centred).astype(np.float64)
    safe = np.where(ss_tot > 0, ss_tot, 1.0)
    base = {name: _group_sums(centred, groups) for name, groups in operands.base_keys().items()}
    grouped = {name: found[:2] for name, found in base.items()}
    for name, (source, function) in DERIVED.items():
        grouped[name] = _derived_sums(*base[source], function)
    columns: dict[str, np.ndarray] = {}
    for name, (sums, counts) in grouped.items():
        r2 = np.clip((sums ** 2 / counts).sum(1) / safe, 0, 1)
        columns[f"r2[{name}]"] = r2
        columns[f"adj[{name}]"] = 1 - (1 - r2) * (n_prompts - 1) / max(n_prompts - len(counts), 1)
    # additive fit: least squares on [onehot(a), onehot(b)] through its Gram matrix [[diag n_a, C], [C', diag n_b]]
    # (C: prompts per (a, b) cell). The two blocks share the constant, so b's first column is left out; with the
    # grid's (a, b) pairs connected (every operator's are) the rest is full rank and a plain solve does
    (sums_a, counts_a, values_a), (sums_b, counts_b, values_b) = base["a"], base["b"]
    cells = np.zeros((len(values_a), len(values_b)))
    np.add.at(cells, (np.searchsorted(values_a, operands.a), np.searchsorted(values_b, operands.b)), 1)
    gram = np.block([[np.diag(counts_a.astype(np.float64)), cells], [cells.T, np.diag(counts_b.astype(np.float64))]])
    projected = np.concatenate([sums_a, sums_b], axis=1)  # [n, Ga + Gb]: X' y
    keep = np.r_[0:len(values_a), len(values_a) + 1:gram.shape[0]]
    try:
        solved = np.linalg.solve(gram[np.ix_(keep, keep)], projected[:, keep].T).T
    except np.linalg.LinAlgError:  # pairs that fall apart into blocks: the minimum-norm solution
        solved = projected[:, keep] @ np.linalg.pinv(gram[np.ix_(keep, keep)])
    fit = np.einsum("ig,ig->i", solved, projected[:, keep])
    columns["r2_additive"] = np.clip(fit / safe, 0, 1)
    columns["interaction"] = 1 - columns["r2_additive"]
    columns["std"] = np.sqrt(ss_tot / n_prompts)
    frame = pd.DataFrame(columns)
    frame.loc[ss_tot <= 0, [c for c in frame.columns if c.startswith(("r2", "adj"))]] = 0.0
    return frame


def active_share(post: np.ndarray, fraction: float) -> np.ndarray:
    """Per neuron: the share of prompts where the post-activation exceeds ``fraction`` of its maximum (0 for a
    neuron that is never positive)."""
    post = np.asarray(post, np.float32)
    top = post.max(1, keepdims=True)
    return np.where(top[:, 0] > 0, (post > fraction * top).mean(1), 0.0)


def label_shapes(numbers: pd.DataFrame, thresholds: ShapeThresholds) -> pd.DataFrame:
    """The label of each row of ``numbers`` (:func:`variance_explained` plus ``active_share``, ``best_mod``,
    ``mod_auroc``), with ``lookup_key`` and the modulus of a result-modular unit; first matching rule wins:
    constant, then the additive family (operand-1, operand-2, additive), result-modular, sum, lookup-table,
    mostly-active, mixed."""
    t = thresholds
    best_lookup = np.where(numbers["adj[ones lookup]"] >= numbers["adj[tens lookup]"], "ones", "tens")
    lookup = np.maximum(numbers["adj[ones lookup]"], numbers["adj[tens lookup]"])
    additive = numbers["r2_additive"] >= t.additive
    modular = (numbers["best_mod_adj"] >= t.modular) & (numbers["mod_auroc"] >= t.auroc)
    conditions = [
        numbers["std"] < t.constant_std,
        additive & (numbers["r2[a]"] >= t.operand * numbers["r2_additive"]),
        additive & (numbers["r2[b]"] >= t.operand * numbers["r2_additive"]),
        additive,
        modular,
        numbers["adj[r]"] >= t.key,
        (lookup >= t.key) & (numbers["adj[r]"] < t.key),
        numbers["active_share"] >= t.mostly_active,
    ]
    labels = np.select(conditions, LABELS[:-1], default="mixed")
    return pd.DataFrame({"shape": labels, "lookup_key": np.where(labels == "lookup-table", best_lookup, ""),
                         "modulus": np.where(labels == "result-modular", numbers["best_mod"], 0)})


def best_result_modulus(numbers: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: the modulus n in 2..10 whose ``r mod n`` explains most (adjusted) and that adjR2."""
    table = numbers[[f"adj[r mod {n}]" for n in MODULI]].to_numpy()
    best = table.argmax(1)
    return np.asarray(MODULI)[best], table[np.arange(len(table)), best]


def additive_decomposition(values: np.ndarray, operands: Operands) -> tuple[float, np.ndarray, np.ndarray,
                                                                            np.ndarray]:
    """One map as mu + row(a) + col(b) + interaction: the least-squares main effects (``row`` indexed by a's values
    0..max a, ``col`` by b's; NaN for a value no prompt has, each centred over the prompts) and the interaction per
    prompt."""
    values = np.asarray(values, np.float64)
    a_values, a_index = np.unique(operands.a, return_inverse=True)
    b_values, b_index = np.unique(operands.b, return_inverse=True)
    mu = values.mean()
    cells = len(a_values) * len(b_values)
    if len(values) == cells and np.unique(a_index * len(b_values) + b_index).size == cells:
        # every (a, b) once: the least-squares main effects are the row and column means (a balanced two-way layout)
        row_fit = np.bincount(a_index, values - mu) / np.bincount(a_index)
        col_fit = np.bincount(b_index, values - mu) / np.bincount(b_index)
    else:
        design = np.zeros((len(values), len(a_values) + len(b_values)))
        design[np.arange(len(values)), a_index] = 1
        design[np.arange(len(values)), len(a_values) + b_index] = 1
        beta, *_ = np.linalg.lstsq(design, values - mu, rcond=None)
        row_fit, col_fit = beta[:len(a_values)], beta[len(a_values):]
    row_shift, col_shift = row_fit[a_index].mean(), col_fit[b_index].mean()
    row = np.full(int(a_values.max()) + 1, np.nan)
    col = np.full(int(b_values.max()) + 1, np.nan)
    row[a_values] = row_fit - row_shift
    col[b_values] = col_fit - col_shift
    interaction = values - mu - row_fit[a_index] - col_fit[b_index]
    return float(mu + row_shift + col_shift), row, col, interaction
