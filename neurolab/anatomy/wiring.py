"""How neurons of different layers wire together: virtual weights, and TWERA (Anthropic's global weights).

The virtual weight from neuron i of layer l to neuron j of layer l' > l is V_ij = (gamma_j * w_in_j) . w_out_i:
neuron i's value vector (what it adds to the residual stream) read by neuron j's input row of the up projection,
through the scale gamma of the norm in front of j's MLP. It is the direct path through the residual stream only:
attention moving information between positions, the norm's centring and division, and (gated models) the gate are
left out. With GPT-NeoX's parallel residual (the embedded model) a block's MLP reads the residual entering the block,
so every earlier layer's neurons reach it directly and none of its own layer's, as in a sequential model.

Interference makes V large between neurons that never fire together. TWERA (target-weighted expected residual
attribution) weights it by how they co-fire over the grid's prompts at the last position:
TWERA_ij = V_ij * E[a_i a_j] / E[a_j], computed from the stored activations (no forward pass), for neurons active
(above a fraction of their maximum) on at least ``min_active`` prompts; elsewhere, and where E[a_j] <= 0, it is NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from ..models.adapters import get_module, neuron_label, weight_as_out_in
from ..models.loading import LoadedModel
from ..store import Store

MIN_ACTIVE = 10


def input_rows(model: LoadedModel, layer: int) -> np.ndarray:
    """``[d_mlp, d_model]``: each neuron's input row of the up projection times the MLP norm's scale (where the
    norm has one)."""
    adapter = model.adapter
    rows = weight_as_out_in(get_module(model.hf, f"{adapter.layer_path(layer)}.{adapter.mlp_in}")).detach().float()
    scale = getattr(get_module(model.hf, f"{adapter.layer_path(layer)}.{adapter.mlp_norm}"), "weight", None)
    if scale is not None:
        rows = rows * scale.detach().float()
    return rows.cpu().numpy()


def virtual_weights(model: LoadedModel, source: int, target: int) -> np.ndarray:
    """``[d_mlp, d_mlp]``: V[i, j] from neuron i of layer ``source`` to neuron j of layer ``target`` > source."""
    if not 0 <= source < target < model.n_layers:
        raise InputError(f"virtual weights run from an earlier to a later layer (0..{model.n_layers - 1}), "
                         f"not L{source} -> L{target}")
    return model.value_vectors(source).float().cpu().numpy() @ input_rows(model, target).T


def twera(virtual: np.ndarray, source_acts: np.ndarray, target_acts: np.ndarray, min_active: int = MIN_ACTIVE,
          active_fraction: float = 0.1) -> np.ndarray:
    """TWERA ``[n_source, n_target]`` from the virtual weights between the chosen neurons and their activations over
    the same prompts (``[n_source, N]``, ``[n_target, N]``)."""
    source_acts = np.asarray(source_acts, np.float64)
    target_acts = np.asarray(target_acts, np.float64)
    n_prompts = source_acts.shape[1]
    joint = source_acts @ target_acts.T / n_prompts  # E[a_i a_j]
    mean_target = target_acts.mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        weighted = virtual * joint / mean_target[None, :]
    usable = (_active_count(source_acts, active_fraction)[:, None] >= min_active) & (
        (_active_count(target_acts, active_fraction) >= min_active) & (mean_target > 0))[None, :]
    return np.where(usable, weighted, np.nan)


def _active_count(acts: np.ndarray, fraction: float) -> np.ndarray:
    top = acts.max(1, keepdims=True)
    return np.where(top[:, 0] > 0, (acts > fraction * top).sum(1), 0)


def connections(model: LoadedModel, maps: dict[int, tuple[list[int], np.ndarray]], layer: int, neuron: int,
                count: int = 8, min_active: int = MIN_ACTIVE, active_fraction: float = 0.1) -> pd.DataFrame:
    """A neuron's strongest inputs (earlier layers) and outputs (later layers) among the neurons of ``maps``
    (layer -> (neurons, K maps ``[k, N]`` over one grid)), sorted by signed TWERA (largest magnitude first, ``count``
    per direction); ``virtual`` beside it."""
    if layer not in maps or neuron not in maps[layer][0]:
        raise InputError(f"{neuron_label(layer, neuron)} has no stored map on this grid")
    own = maps[layer][1][maps[layer][0].index(neuron)][None, :]
    rows = []
    for other, (neurons, acts) in sorted(maps.items()):
        if other == layer:
            continue
        if other < layer:  # inputs: the other layer's neurons -> this one
            weights = virtual_weights(model, other, layer)[neurons][:, [neuron]]
            values = twera(weights, acts, own, min_active, active_fraction)[:, 0]
            direction, weights = "input", weights[:, 0]
        else:  # outputs: this one -> the other layer's neurons
            weights = virtual_weights(model, layer, other)[[neuron]][:, neurons]
            values = twera(weights, own, acts, min_active, active_fraction)[0]
            direction, weights = "output", weights[0]
        rows.append(pd.DataFrame({"direction": direction, "layer": other, "neuron": neurons, "virtual": weights,
                                  "twera": values}))
    if not rows:
        return pd.DataFrame(columns=["direction", "layer", "neuron", "label", "virtual", "twera"])
    frame = pd.concat(rows, ignore_index=True).dropna(subset=["twera"])
    frame["label"] = [neuron_label(lay, n) for lay, n in zip(frame["layer"], frame["neuron"])]
    frame = frame.assign(size=frame["twera"].abs()).sort_values("size", ascending=False)
    frame = frame.groupby("direction", sort=False).head(count).drop(columns="size")
    return frame[["direction", "layer", "neuron", "label", "virtual", "twera"]].reset_index(drop=True)


def stored_connections(model: LoadedModel, store: Store, sweep_id: int, layer: int, neuron: int, count: int = 8,
                       min_active: int = MIN_ACTIVE, active_fraction: float = 0.1) -> pd.DataFrame:
    """:func:`connections` among every neuron the sweep stores (its K maps read from the store)."""
    maps = {}
    for other, neurons in store.stored_neurons(sweep_id).items():
        chosen = sorted(neurons)
        maps[other] = (chosen, store.layer_maps(sweep_id, other, chosen)[0])
    return connections(model, maps, layer, neuron, count, min_active, active_fraction)
