"""One prompt's bag of heuristics: the paper's finding made visible for a typed prompt.

The classified neurons of the prompt's operator that fire on it, grouped by heuristic, each group's *direct* effect
on logit(answer) - logit(runner-up), and what that leaves unexplained. The exact rules:

- *Classification*: the stored one of the clean model for the operator and template (matched rows of
  :meth:`~neurolab.store.Store.atlas_rows`, as :func:`~neurolab.analysis.ablation.heuristic_neurons` filters them);
  ``max_op`` None takes the largest classified grid, ``settings`` None the default settings when stored, else the
  first stored. Nothing is ever classified here: without a classification the result says so. An active
  intervention changes the live pass, never the labels.
- *Applies*: one of the neuron's matched heuristics holds for this prompt (its matching set on op1, op2 and the
  correct result).
- *Fires*: the failure analysis's rule (:mod:`neurolab.analysis.failures`): the activation at the last position is
  at least the neuron's k-th largest over the classification grid (its stored K map; k the heuristic's), at most its
  k-th smallest for a bottom-side match. A neuron counts when it fires for at least one applying heuristic.
- *Group*: each counted neuron belongs to one group, its highest-scoring heuristic among those it applies and fires
  for (no double counting); its other applying labels are listed beside it.
- *Direct effect* of a neuron: activation x (W_out[n] . r), with r the readout of
  logit(answer) - logit(runner-up) through the final norm frozen at this prompt (:func:`logit_diff_readout`,
  TransformerLens-style direct logit attribution). The residual's parts add up exactly to the total this way, so
  ``total = sum of groups + remainder`` holds to rounding; the remainder is everything else: other neurons (also
  classified ones that do not fire or whose heuristics do not apply), attention, embeddings and biases.
- *Runner-up*: the highest-logit token other than the correct answer (the model's answer when it is wrong).

One pass of one prompt (capturing only the classified neurons and the final residual) per call; the labels and
their firing thresholds are read from the store once per classification and kept (bounded).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..capture.interventions import CLEAN, Intervention
from ..capture.trace import Pass, intervened, run_pass
from ..errors import UnsupportedArchitectureError
from ..heuristics import RULES_VERSION, Family, parse
from ..heuristics.families import Params
from ..models.adapters import get_module, neuron_label
from ..models.loading import LoadedModel
from ..store import Store
from ..tasks.arithmetic import ArithmeticPrompt
from ..tasks.grid import PromptTemplate
from .classification import ClassifySettings
from .failures import _threshold
from .predict import check_prompt

GROUP_COLUMNS = ["group", "heuristic", "neurons", "contribution"]
NEURON_COLUMNS = ["layer", "neuron", "label", "heuristic", "group", "score", "other_labels", "activation",
                  "contribution"]
#: classifications whose labels and thresholds are kept in memory (all stores and models together)
LABEL_CACHE_SIZE = 16
#: neurons whose grid maps are read at once while computing thresholds (bounds the temporary memory)
_MAP_ROWS = 64
_SETTING_FIELDS = ("maps", "top_n", "threshold", "n_prompts", "seed")
_RUNS_SQL = """
SELECT DISTINCT r.sweep_id, s.max_op, r.maps, r.top_n, r.threshold, r.n_prompts, r.seed, r.layer
FROM classification_runs r JOIN sweeps s USING (sweep_id)
WHERE s.fingerprint = ? AND s.op = ? AND s.template = ? AND s.intervention = 'none' AND r.rules = ?
ORDER BY s.max_op DESC, r.layer
"""


@dataclass
class HeuristicBag:
    """What the home page draws for one prompt (see the module docstring for every rule)."""

    text: str
    prompt: ArithmeticPrompt
    answer_token: str
    runner_up_token: str
    correct: bool  # the model's top-1 is the correct answer
    total: float  # logit(answer) - logit(runner-up) at this prompt
    remainder: float  # total - sum of the groups' contributions
    groups: pd.DataFrame  # GROUP_COLUMNS, largest |contribution| first
    neurons: pd.DataFrame  # NEURON_COLUMNS, one row per counted neuron, largest |contribution| first
    classified: bool
    message: str  # why there are no groups, when there are none
    intervention: str  # the active intervention in words ("clean model" without one)
    max_op: int | None = None  # the classification grid used
    settings: ClassifySettings | None = None
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Run:
    """A stored classification: its sweep, grid size, settings and completed layers."""

    sweep_id: int
    max_op: int
    settings: ClassifySettings
    layers: tuple[int, ...]


@dataclass
class _Labels:
    """A classification's matched rows as arrays, ready for any prompt: per row, its neuron's column in the captured
    activations (``slot``), its heuristic (``code`` into ``heuristics``), score, display group, side and firing
    threshold."""

    columns: dict[int, list[int]]  # layer -> captured neurons
    neurons: list[tuple[int, int]]  # (layer, neuron) of every slot: the captured columns, layer after layer
    slot: np.ndarray
    code: np.ndarray
    score: np.ndarray
    group: np.ndarray
    bottom: np.ndarray
    threshold: np.ndarray
    heuristics: list[tuple[str, Family, Params]]  # (name, family, params) of every distinct heuristic

    def applying(self, prompt: ArithmeticPrompt) -> np.ndarray:
        """Bool per row: does its heuristic hold for this prompt?"""
        op1, op2, result = (np.array([v]) for v in (prompt.op1, prompt.op2, prompt.answer))
        holds = np.array([bool(family.matching_set(params, op1, op2, result)[0])
                          for _, family, params in self.heuristics], bool)
        return holds[self.code]


_CACHE: OrderedDict[tuple, _Labels] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _stored_run(model: LoadedModel, store: Store, op: str, template: PromptTemplate, max_op: int | None,
                settings: ClassifySettings | None) -> _Run | None:
    """The classification to use (see the module docstring), or None when there is none."""
    with store.cursor() as con:  # a plain fetch: this runs on every keystroke
        found = con.execute(_RUNS_SQL, [model.fingerprint, op, template.key, RULES_VERSION]).fetchall()
    runs: dict[tuple[int, int, ClassifySettings], list[int]] = {}  # (sweep, max_op, settings) -> completed layers
    for sweep_id, grid_max, maps, top_n, threshold, n_prompts, seed, layer in found:
        if max_op is None or grid_max == max_op:
            stored = ClassifySettings(maps, int(top_n), float(threshold), int(n_prompts), int(seed))
            runs.setdefault((int(sweep_id), int(grid_max), stored), []).append(int(layer))
    if not runs:
        return None
    largest = max(grid_max for _, grid_max, _ in runs)
    candidates = {key[2]: key for key in runs if key[1] == largest}
    wanted = settings or (ClassifySettings() if ClassifySettings() in candidates else next(iter(candidates)))
    if wanted not in candidates:
        return None
    key = candidates[wanted]
    return _Run(key[0], largest, wanted, tuple(sorted(runs[key])))


def _labels(model: LoadedModel, store: Store, op: str, template: PromptTemplate, run: _Run) -> _Labels:
    """The run's matched rows with their firing thresholds, read from the store once and kept."""
    key = (str(store.path), model.fingerprint, run)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    rows = store.atlas_rows(model.fingerprint, RULES_VERSION)
    keep = ((rows["op"] == op) & (rows["max_op"] == run.max_op) & (rows["template"] == template.key)
            & (rows["intervention"] == "none") & rows["layer"].isin(run.layers))
    for name in _SETTING_FIELDS:
        keep &= rows[name] == getattr(run.settings, name)
    rows = (rows[keep].drop_duplicates(["layer", "neuron", "heuristic"])
            [["layer", "neuron", "heuristic", "grp", "score", "k", "side"]].reset_index(drop=True))
    threshold = np.full(len(rows), np.nan)
    columns: dict[int, list[int]] = {}
    for layer, part in rows.groupby("layer"):
        ids = sorted(int(n) for n in part["neuron"].unique())
        columns[int(layer)] = ids
        for lo in range(0, len(ids), _MAP_ROWS):
            chunk = ids[lo:lo + _MAP_ROWS]
            k_maps, _ = store.layer_maps(run.sweep_id, int(layer), chunk)
            at = {n: j for j, n in enumerate(chunk)}
            for i, row in part[part["neuron"].isin(chunk)].iterrows():
                threshold[i] = _threshold(k_maps[at[int(row.neuron)]], int(row.k), row.side)
    neurons = [(layer, n) for layer, ids in columns.items() for n in ids]
    slot = {pair: i for i, pair in enumerate(neurons)}
    names = sorted(rows["heuristic"].unique())
    labels = _Labels(
        columns=columns, neurons=neurons,
        slot=np.array([slot[(int(a), int(b))] for a, b in zip(rows["layer"], rows["neuron"])], np.int64),
        code=rows["heuristic"].map({name: i for i, name in enumerate(names)}).to_numpy(np.int64),
        score=rows["score"].to_numpy(float), group=rows["grp"].to_numpy(object),
        bottom=(rows["side"] == "bottom").to_numpy(bool), threshold=threshold,
        heuristics=[(name, *parse(name)) for name in names])
    with _CACHE_LOCK:
        _CACHE[key] = labels
        while len(_CACHE) > LABEL_CACHE_SIZE:
            _CACHE.popitem(last=False)
    return labels


def logit_diff_readout(model: LoadedModel, residual: torch.Tensor, answer_id: int,
                       runner_up_id: int) -> tuple[torch.Tensor, float]:
    """``(r [d_model], c)`` with ``logit(answer) - logit(runner_up) = residual . r + c`` exactly at this residual
    (``[d_model]``, the final norm's input at the last position), so that ``part . r`` is any part's direct effect.

    The final norm is linearised at this prompt, as direct logit attribution does: with d = W_U[answer] -
    W_U[runner_up] and g = d * (the norm's weight), LayerNorm gives r = (g - mean(g)) / sqrt(var(residual) + eps)
    (centring the part is the same as centring the readout) and c = d . bias; RMSNorm gives
    r = g / sqrt(mean(residual^2) + eps) and c = 0. The unembedding's bias difference, if any, joins c. Computed in
    float32 with the model's weights as they stand (call it under the same intervention as the pass).
    """
    norm = get_module(model.hf, model.adapter.final_norm)
    head = get_module(model.hf, model.adapter.unembed)
    x = residual.detach().float()
    direction = (head.weight[answer_id] - head.weight[runner_up_id]).detach().float().to(x.device)
    weight = getattr(norm, "weight", None)
    g = direction if weight is None else direction * weight.detach().float().to(x.device)
    constant = 0.0
    if isinstance(norm, torch.nn.LayerNorm):
        vector = (g - g.mean()) / torch.sqrt(x.var(unbiased=False) + norm.eps)
        if norm.bias is not None:
            constant += float(direction @ norm.bias.detach().float().to(x.device))
    else:
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
        if eps is None:
            raise UnsupportedArchitectureError(
                f"final norm {type(norm).__name__}: neither LayerNorm nor an RMSNorm with an epsilon")
        vector = g / torch.sqrt(x.square().mean() + eps)
    bias = getattr(head, "bias", None)
    if bias is not None:
        constant += float((bias[answer_id] - bias[runner_up_id]).detach())
    return vector, constant


@dataclass
class DirectEffects:
    """One prompt's pass: the answer and its runner-up, and per layer the captured neurons' last-position activations
    and direct effects on logit(answer) - logit(runner-up) (activation x value vector . :func:`logit_diff_readout`)."""

    answer_id: int
    runner_id: int
    logits: torch.Tensor  # [vocab], float32, last position
    input_ids: torch.Tensor  # [seq]
    activation: dict[int, np.ndarray]  # layer -> [k] for the layer's captured neurons, in the order asked
    effect: dict[int, np.ndarray]

    @property
    def total(self) -> float:
        return float(self.logits[self.answer_id] - self.logits[self.runner_id])

    @property
    def correct(self) -> bool:
        return int(self.logits.argmax()) == self.answer_id


def direct_effects(model: LoadedModel, text: str, answer_id: int, columns: dict[int, list[int]],
                   intervention: Intervention | None = None) -> DirectEffects:
    """The one pass behind the bag of heuristics and the exported neuron graph: ``text`` under ``intervention``,
    capturing ``columns`` (layer -> neurons) and the final residual for the readout."""
    with intervened(model, intervention or CLEAN) as ops:
        inputs = {k: v.to(model.device) for k, v in model.encode([text]).items()}
        capture = {layer: torch.as_tensor(ids, device=model.device) for layer, ids in columns.items()}
        result = run_pass(model, Pass(inputs, ops=ops, capture=capture, residuals=[model.n_layers]))
        logits = result.logits[0].float()
        rivals = logits.clone()
        rivals[answer_id] = -torch.inf
        runner_id = int(rivals.argmax())
        vector, _ = logit_diff_readout(model, result.residuals[model.n_layers][0], answer_id, runner_id)
        activation, effect = {}, {}
        for layer, ids in columns.items():
            acts = result.neurons[layer][0].float().to(vector.device)
            reads = (model.value_vectors(layer).to(vector.device).float() @ vector)[ids]
            activation[layer], effect[layer] = acts.cpu().numpy(), (acts * reads).cpu().numpy()
    return DirectEffects(answer_id, runner_id, logits.cpu(), inputs["input_ids"][0].cpu(), activation, effect)


def heuristic_bag(model: LoadedModel, store: Store, text: str, intervention: Intervention | None = None, *,
                  max_op: int | None = None, template: PromptTemplate | None = None,
                  settings: ClassifySettings | None = None) -> HeuristicBag:
    """The bag of heuristics of ``text`` (e.g. ``23+45=``) under ``intervention``; raises PromptError for a prompt
    the model cannot answer in one token. Never classifies: see :class:`HeuristicBag` ``classified``."""
    text = text.strip()
    prompt = check_prompt(model, text)
    template = template or PromptTemplate()
    intervention = intervention or CLEAN
    run = _stored_run(model, store, prompt.op, template, max_op, settings)
    labels = _labels(model, store, prompt.op, template, run) if run is not None else None
    columns = labels.columns if labels is not None else {}
    answer_id = model.number_token_ids[prompt.answer]
    found = direct_effects(model, text, answer_id, columns, intervention)
    neurons = pd.DataFrame(columns=NEURON_COLUMNS)
    if labels is not None and columns:
        activation = np.concatenate([found.activation[layer] for layer in columns])
        effect = np.concatenate([found.effect[layer] for layer in columns])
        neurons = _counted(labels, prompt, activation, effect)
    groups = _grouped(neurons)
    if run is None:
        grid = "" if max_op is None else f" with max_op {max_op}"
        message = (f"nothing is classified for {prompt.op}{grid} yet: run `python -m neurolab classify --op "
                   f"{prompt.op}` or the Heuristic Atlas first")
    elif groups.empty:
        message = f"no classified neuron of layers {list(run.layers)} fires for a heuristic that applies here"
    else:
        message = ""
    return HeuristicBag(
        text=text, prompt=prompt, answer_token=model.token_str(answer_id),
        runner_up_token=model.token_str(found.runner_id), correct=found.correct, total=found.total,
        remainder=found.total - float(groups["contribution"].sum()), groups=groups, neurons=neurons,
        classified=run is not None, message=message, intervention=intervention.describe(),
        max_op=None if run is None else run.max_op, settings=None if run is None else run.settings,
        layers=() if run is None else run.layers)


def _counted(labels: _Labels, prompt: ArithmeticPrompt, activation: np.ndarray, effect: np.ndarray
             ) -> pd.DataFrame:
    """One row per neuron that fires for an applying heuristic, in the group of its best such heuristic."""
    act = activation[labels.slot]
    fires = np.where(labels.bottom, act <= labels.threshold, act >= labels.threshold)
    applies = labels.applying(prompt)
    order = np.lexsort((-labels.score, labels.slot))  # per neuron, best score first
    applying = order[applies[order]]
    live = applying[fires[applying]]
    best = live[np.unique(labels.slot[live], return_index=True)[1]]  # first (best) row per neuron
    if not len(best):
        return pd.DataFrame(columns=NEURON_COLUMNS)
    names = [name for name, _, _ in labels.heuristics]
    others: dict[int, list[str]] = {}
    for row in applying:
        others.setdefault(int(labels.slot[row]), []).append(names[labels.code[row]])
    slots = labels.slot[best]
    pairs = [labels.neurons[s] for s in slots]
    frame = pd.DataFrame({
        "layer": [layer for layer, _ in pairs], "neuron": [neuron for _, neuron in pairs],
        "label": [neuron_label(*pair) for pair in pairs],
        "heuristic": [names[c] for c in labels.code[best]], "group": labels.group[best], "score": labels.score[best],
        "other_labels": [[h for h in others[s] if h != names[c]] for s, c in zip(slots, labels.code[best])],
        "activation": activation[slots], "contribution": effect[slots]})
    frame = frame.iloc[np.argsort(-np.abs(frame["contribution"].to_numpy()), kind="stable")]
    return frame[NEURON_COLUMNS].reset_index(drop=True)


def _grouped(neurons: pd.DataFrame) -> pd.DataFrame:
    """Per heuristic: its display group, its neurons (largest |contribution| first, as ``neurons`` is sorted) and
    their summed effect; largest |contribution| first. Plain Python: a few dozen rows, on every keystroke."""
    found: dict[str, list] = {}
    for heuristic, group, label, effect in zip(neurons["heuristic"], neurons["group"], neurons["label"],
                                               neurons["contribution"]):
        row = found.setdefault(heuristic, [group, heuristic, [], 0.0])
        row[2].append(label)
        row[3] += float(effect)
    rows = sorted(found.values(), key=lambda row: -abs(row[3]))
    return pd.DataFrame(rows, columns=GROUP_COLUMNS)
