"""The helix fit of a neuron's pre-activation, and patching the fits back in.

Kantamneni & Tegmark ("Language Models Use Trigonometry to Do Addition", arXiv 2502.00873) fit each top neuron's
pre-activation over the operands with N(a, b) = sum over t in {a, b, a+b} of [c_t t + sum over T in {2, 5, 10, 100}
of c_{T,t} cos(2 pi (t - d_{T,t}) / T)]. The phase form is linear in cos and sin, so least squares on the basis
{1, t, cos(2 pi t / T), sin(2 pi t / T)} gives it in closed form, for every neuron of a layer at once (one solve,
many right-hand sides). For other operators t runs over a, b and the result r. A linear term of r that the linear
terms of a and b already span (r = a + b, r = a - b) is left out: its coefficient would not be defined.

NRMSE is the fit's root-mean-square error divided by the standard deviation of the pre-activation over the grid
(0: exact, 1: no better than the neuron's mean). The result fraction is sum_T |c_{T,r}| / sum_t sum_T |c_{T,t}|.
Their causal check, patch-the-fit, replaces a layer's top neurons by the activation function of their fitted
pre-activation on every prompt of the grid (a :class:`~neurolab.capture.interventions.GridPatch`) and compares the
accuracy with the clean model's and with the neurons mean-ablated (they recover ~75%).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..analysis.ablation import grid_answers, neuron_ablation, top_n
from ..capture.interventions import CLEAN, GridPatch, GridRef, Intervention
from ..capture.trace import pre_activations
from ..models.adapters import get_module
from ..models.loading import LoadedModel
from ..progress import Progress, report
from ..store import Store
from ..tasks.grid import OperandGrid
from .shape import Operands

PERIODS = (2, 5, 10, 100)
TERMS = ("a", "b", "r")
HELIX_VERSION = 1  # bump when the fit changes: it is part of every cached fit's key


@dataclass(frozen=True)
class HelixBasis:
    """The design matrix ``[N, p]`` over a grid's prompts and what each column is: (t, T) with T = 0 for the
    linear term, and "1", "lin", "cos" or "sin"."""

    matrix: np.ndarray
    columns: tuple[tuple[str, int, str], ...]

    @classmethod
    def of(cls, operands: Operands, periods: Sequence[int] = PERIODS) -> HelixBasis:
        values = {"a": operands.a.astype(np.float64), "b": operands.b.astype(np.float64),
                  "r": operands.r.astype(np.float64)}
        cols, names = [np.ones(len(operands))], [("", 0, "1")]
        base = np.stack([cols[0], values["a"], values["b"]], 1)
        for t in TERMS:
            linear = values[t]
            if t == "r":  # only when a and b's linear terms do not already span it
                residual = linear - base @ np.linalg.lstsq(base, linear, rcond=None)[0]
                if np.abs(residual).max() <= 1e-6 * max(1.0, np.abs(linear).max()):
                    linear = None
            if linear is not None:
                cols.append(linear)
                names.append((t, 0, "lin"))
            for period in periods:
                angle = 2 * np.pi * values[t] / period
                cols.append(np.cos(angle))
                names.append((t, period, "cos"))
                if period > 2:  # sin(pi t) = 0 on integers
                    cols.append(np.sin(angle))
                    names.append((t, period, "sin"))
        return cls(np.stack(cols, 1), tuple(names))


def fit_helix(pre: np.ndarray, operands: Operands, periods: Sequence[int] = PERIODS
              ) -> tuple[pd.DataFrame, np.ndarray]:
    """Fit every row of ``pre`` ``[n, N]``; returns the per-neuron table and the fitted maps ``[n, N]``.

    Columns: ``nrmse``, ``dominant`` (the term whose contribution varies most over the grid, e.g. ``r T=10``),
    ``dominant_amplitude``, ``dominant_phase`` (d in cos(2 pi (t - d) / T)), ``result_fraction``, and per term
    ``amp[t,T]`` (periodic amplitude sqrt(cos^2 + sin^2)), ``phase[t,T]``, ``lin[t]``."""
    basis = HelixBasis.of(operands, periods)
    y = np.asarray(pre, np.float64)
    coefficients, *_ = np.linalg.lstsq(basis.matrix, y.T, rcond=None)  # [p, n]
    fitted = (basis.matrix @ coefficients).T
    std = y.std(1)
    rmse = np.sqrt(((y - fitted) ** 2).mean(1))
    columns: dict[str, np.ndarray] = {"nrmse": np.where(std > 0, rmse / np.where(std > 0, std, 1), 0.0)}
    index = {name: i for i, name in enumerate(basis.columns)}
    spread: dict[str, np.ndarray] = {}  # term -> how much its contribution varies over the grid (std)
    terms: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # term -> (amplitude or slope, phase)
    amplitude_sum = np.zeros(len(y))
    result_sum = np.zeros(len(y))
    for t in TERMS:
        if (t, 0, "lin") in index:
            i = index[(t, 0, "lin")]
            columns[f"lin[{t}]"] = coefficients[i]
            spread[f"{t} linear"] = np.abs(coefficients[i]) * basis.matrix[:, i].std()
            terms[f"{t} linear"] = (coefficients[i], np.full(len(y), np.nan))
        for period in periods:
            c = coefficients[index[(t, period, "cos")]]
            s = coefficients[index[(t, period, "sin")]] if (t, period, "sin") in index else np.zeros_like(c)
            amplitude = np.hypot(c, s)
            columns[f"amp[{t},{period}]"] = amplitude
            columns[f"phase[{t},{period}]"] = np.mod(period * np.arctan2(s, c) / (2 * np.pi), period)
            rows = [index[k] for k in ((t, period, "cos"), (t, period, "sin")) if k in index]
            spread[f"{t} T={period}"] = (basis.matrix[:, rows] @ coefficients[rows]).std(0)
            terms[f"{t} T={period}"] = (amplitude, columns[f"phase[{t},{period}]"])
            amplitude_sum += amplitude
            if t == "r":
                result_sum += amplitude
    columns["result_fraction"] = np.where(amplitude_sum > 0, result_sum / np.where(amplitude_sum > 0,
                                                                                    amplitude_sum, 1), 0.0)
    names = list(spread)
    table = np.stack([spread[name] for name in names], 1)
    best = table.argmax(1)
    rows = np.arange(len(y))
    columns["dominant"] = np.asarray(names)[best]
    columns["dominant_amplitude"] = np.stack([terms[name][0] for name in names], 1)[rows, best]
    columns["dominant_phase"] = np.stack([terms[name][1] for name in names], 1)[rows, best]
    return pd.DataFrame(columns), fitted


def sign_combinations(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Per prompt of a gated neuron: which of the four sign combinations of gate x up it is in (0: ++, 1: +-,
    2: -+, 3: --), the map GLUScope (arXiv 2602.23826) reads gated neurons by."""
    return 2 * (np.asarray(gate) < 0) + (np.asarray(up) < 0)


def grid_ref(grid: OperandGrid) -> GridRef:
    template = grid.template
    return GridRef(grid.op, grid.max_op, template.format, template.fewshot, template.seed)


def layer_pre_activations(model: LoadedModel, grid: OperandGrid, layer: int, neurons: Sequence[int],
                          intervention: Intervention | None = None) -> dict[str, np.ndarray]:
    """The neurons' last-position pre-activations over the grid (one pass): {"pre": [k, N]} or, gated,
    {"gate": ..., "up": ...}."""
    found = pre_activations(model, grid.prompts, {layer: list(neurons)}, intervention)[layer]
    return {name: values.numpy().T for name, values in found.items()}


def helix_fits(model: LoadedModel, store: Store, grid: OperandGrid, layer: int, neurons: Sequence[int],
               intervention: Intervention | None = None) -> pd.DataFrame:
    """The helix fit of each neuron's pre-activation (each of gate and up for a gated model), cached in the store
    under the model, grid, intervention, layer and neurons."""
    intervention = intervention or CLEAN
    neurons = [int(n) for n in neurons]
    spec = {"fingerprint": model.fingerprint, "op": grid.op, "max_op": grid.max_op, "template": grid.template.key,
            "intervention": intervention.key, "layer": layer, "neurons": neurons, "version": HELIX_VERSION}

    def compute() -> pd.DataFrame:
        operands = _operands(grid)
        frames = []
        for point, values in layer_pre_activations(model, grid, layer, neurons, intervention).items():
            table, _ = fit_helix(values, operands)
            frames.append(table.assign(layer=layer, neuron=neurons, point=point))
        return pd.concat(frames, ignore_index=True)

    return store.cached_frame("anatomy-helix", spec, compute)


def neuron_helix(model: LoadedModel, store: Store, grid: OperandGrid, layer: int, neuron: int,
                 intervention: Intervention | None = None) -> pd.DataFrame:
    """One neuron's pre-activation map, its fit and the residual per prompt (op1, op2, point, pre, fit,
    residual), cached: what the page draws."""
    intervention = intervention or CLEAN
    spec = {"fingerprint": model.fingerprint, "op": grid.op, "max_op": grid.max_op, "template": grid.template.key,
            "intervention": intervention.key, "layer": layer, "neuron": int(neuron), "version": HELIX_VERSION}

    def compute() -> pd.DataFrame:
        operands = _operands(grid)
        frames = []
        for point, values in layer_pre_activations(model, grid, layer, [neuron], intervention).items():
            _, fitted = fit_helix(values, operands)
            frames.append(pd.DataFrame({"op1": operands.a, "op2": operands.b, "answer": operands.r, "point": point,
                                        "pre": values[0], "fit": fitted[0], "residual": values[0] - fitted[0]}))
        return pd.concat(frames, ignore_index=True)

    return store.cached_frame("anatomy-helix-map", spec, compute)


def _operands(grid: OperandGrid) -> Operands:
    pairs = np.asarray(grid.pairs, np.int64).reshape(-1, 2)
    return Operands(pairs[:, 0], pairs[:, 1], np.asarray(grid.answers, np.int64))


def fitted_activations(model: LoadedModel, layer: int, fitted: dict[str, np.ndarray]) -> np.ndarray:
    """The neurons' values ``[k, N]`` from fitted pre-activations: the MLP's activation function applied (gated:
    act(gate) * up), with the model's own activation module."""
    act = get_module(model.hf, f"{model.adapter.layer_path(layer)}.{model.adapter.mlp_act}")
    with torch.no_grad():
        def tensor(name: str) -> torch.Tensor:
            return torch.as_tensor(fitted[name], dtype=torch.float32, device=model.device)

        values = act(tensor("gate")) * tensor("up") if "gate" in fitted else act(tensor("pre"))
    return values.float().cpu().numpy()


def fit_patch(model: LoadedModel, grid: OperandGrid, layer: int, neurons: Sequence[int],
              intervention: Intervention | None = None) -> Intervention:
    """``intervention`` plus the neurons replaced on every prompt of the grid by their fitted values."""
    operands = _operands(grid)
    fitted = {point: fit_helix(values, operands)[1]
              for point, values in layer_pre_activations(model, grid, layer, neurons, intervention).items()}
    values = fitted_activations(model, layer, fitted)  # [k, N]
    patch = GridPatch(tuple((layer, int(n)) for n in neurons), grid_ref(grid), torch.as_tensor(values.T),
                      "helix fit")
    return (intervention or CLEAN) + Intervention((patch,), f"helix fit of {len(neurons)} L{layer} neurons",
                                                  "patch the fit")


def patch_the_fit(model: LoadedModel, store: Store, grid: OperandGrid, layer: int, count: int = 20,
                  intervention: Intervention | None = None, progress: Progress | None = None) -> pd.DataFrame:
    """Accuracy over the grid with the layer's top-``count`` neurons (by importance) as they are (clean), replaced
    by their helix fits, and mean-ablated; ``recovered`` = (fit - mean) / (clean - mean). Cached."""
    intervention = intervention or CLEAN
    spec = {"fingerprint": model.fingerprint, "op": grid.op, "max_op": grid.max_op, "template": grid.template.key,
            "intervention": intervention.key, "layer": layer, "count": count, "version": HELIX_VERSION}

    def compute() -> pd.DataFrame:
        neurons = [n for _, n in top_n(model, store, grid, layer, count)]
        report(progress, 0, 2, "fitting")
        patched = fit_patch(model, grid, layer, neurons, intervention)
        mean = intervention + neuron_ablation([(layer, n) for n in neurons], "mean", grid)
        report(progress, 1, 2, "accuracy")
        clean, fit, ablated = (float(frame["correct"].mean())
                               for frame in grid_answers(model, store, grid, [intervention, patched, mean]))
        report(progress, 2, 2, "accuracy")
        span = clean - ablated
        return pd.DataFrame([{"layer": layer, "neurons": len(neurons), "clean": clean, "fit": fit,
                              "mean_ablated": ablated, "recovered": (fit - ablated) / span if span else np.nan,
                              "patch": patched.key}])

    return store.cached_frame("anatomy-patch-fit", spec, compute)
