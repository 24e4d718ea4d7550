"""Interventions as small serialisable values: what to change in a model, and how each kind of change applies.

Like pyvene's intervention configs, an :class:`Intervention` round-trips through JSON, and its :attr:`~Intervention.key`
(a hash of its steps, not of its name) keys every result computed under it, so an ablated or pruned model's results
never land under the clean model's. Steps apply in order:

- :class:`NeuronAblation`: set neurons (layer, neuron) to 0, to a constant, or to their mean over an operator's grid,
  at every position (the paper's ablation is zero);
- :class:`ActivationPatch`: set neurons at the last position to their value on a source prompt;
- :class:`WeightEdit`: multiply the entries of one weight selected by a boolean mask by a factor (0 prunes; MathNeuro
  scales by 1.1). The mask travels beside the JSON as a tensor, named by its digest.
- :class:`GridPatch`: set neurons at the last position of each prompt of a grid to a value of their own (the anatomy's
  patch-the-fit: each neuron's fitted value). The values travel beside the JSON as a tensor, like a mask.

Each step type owns its whole protocol (:class:`Step`): how it serialises (``spec`` / ``from_spec``, registered by
``kind`` in :data:`STEP_TYPES`), which layers it changes (``layers``: what a rerun may skip), and how it resolves
against a model (``layer_ops``: activation edits as :class:`LayerOp`; ``apply``: a weight changed in place).
Running the model is not theirs: :mod:`neurolab.capture.trace` hands them a :class:`Measure` and applies the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch

from ..errors import InterventionError
from ..keys import INTERVENTION_KEY_SIZE, MASK_DIGEST_SIZE, digest, json_digest
from ..models.adapters import neuron_label, parse_neuron_label
from ..tasks.grid import OperandGrid, PromptTemplate

if TYPE_CHECKING:
    from ..models.loading import LoadedModel

ABLATION_MODES = ("zero", "mean", "constant")
NONE_KEY = "none"

Neurons = tuple[tuple[int, int], ...]


def _neurons(items: Iterable) -> Neurons:
    """Sorted, de-duplicated (layer, neuron) pairs from pairs or ``L3N12`` labels."""
    pairs = set()
    for item in items:
        layer, neuron = parse_neuron_label(item) if isinstance(item, str) else item
        if layer < 0 or neuron < 0:
            raise InterventionError(f"neuron {item!r}: layer and neuron must be >= 0")
        pairs.add((int(layer), int(neuron)))
    if not pairs:
        raise InterventionError("an intervention on neurons needs at least one neuron")
    return tuple(sorted(pairs))


def parse_neurons(text: str) -> Neurons:
    """``"L3N12, L3N40"`` -> ((3, 12), (3, 40)); a clear error for anything else."""
    try:
        return _neurons(part for part in text.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise InterventionError(str(error)) from None


def by_layer(neurons: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """(layer, neuron) pairs grouped by layer, in their order."""
    grouped: dict[int, list[int]] = {}
    for layer, n in neurons:
        grouped.setdefault(layer, []).append(n)
    return grouped


@dataclass
class LayerOp:
    """One resolved activation edit of one layer's neurons ``[batch, seq, d_mlp]``: ``values`` is [k] (every
    position, or the last only when ``last_only``) or [P, k] (per position from the end of the prompt). ``rows``
    limits it to a slice of the batch (several interventions side by side in one pass). ``by_prompt`` (prompt ->
    row of ``values`` [N, k]) makes the values per prompt, at the last position: the engine resolves them to each
    batch's rows (:meth:`for_prompts`) before the op is applied."""

    neurons: torch.Tensor
    values: torch.Tensor
    last_only: bool = False
    rows: slice | None = None
    by_prompt: Mapping[str, int] | None = None

    @property
    def per_position(self) -> bool:
        return self.values.dim() > 1

    def apply(self, hidden) -> None:
        """Edit ``hidden`` in place (inside a trace)."""
        target = hidden if self.rows is None else hidden[self.rows]
        if self.last_only and self.values.dim() > 1:  # per row (resolved per prompt); NaN keeps the row's own
            target[:, -1, self.neurons] = torch.where(self.values.isnan(), target[:, -1, self.neurons], self.values)
        elif self.last_only:
            target[:, -1, self.neurons] = self.values
        elif not self.per_position:
            target[:, :, self.neurons] = self.values
        else:  # per position from the end; earlier positions of a longer prompt take the earliest value
            seq, known = target.shape[1], self.values.shape[0]
            if seq <= known:
                target[:, :, self.neurons] = self.values[known - seq:]
            else:
                target[:, seq - known:, self.neurons] = self.values
                target[:, : seq - known, self.neurons] = self.values[0]

    def last_value(self) -> torch.Tensor:
        """What the neurons are set to at the last position ([k])."""
        return self.values[-1] if self.per_position else self.values

    def on_rows(self, rows: slice) -> LayerOp:
        return LayerOp(self.neurons, self.values, self.last_only, rows, self.by_prompt)

    def for_prompts(self, prompts: Sequence[str]) -> LayerOp:
        """A per-prompt op as one value row per prompt of a batch ([len(prompts), k]); NaN for a prompt it has no
        value for (that row keeps its own)."""
        index = torch.as_tensor([self.by_prompt.get(p, -1) for p in prompts], device=self.values.device)
        values = self.values[index.clamp(min=0)]
        values[index < 0] = float("nan")
        return LayerOp(self.neurons, values, True, self.rows)


class Measure(Protocol):
    """What a step may ask of the model while it resolves (provided by :mod:`neurolab.capture.trace`)."""

    def grid_means(self, step: NeuronAblation) -> dict[int, torch.Tensor]:
        """Per layer ``[P, k]``: each neuron's mean over the step's grid, per position from the end."""

    def last_values(self, prompt: str, neurons: Sequence[tuple[int, int]]) -> dict[int, torch.Tensor]:
        """Per layer ``[k]``: the neurons at the last position of ``prompt``."""


def parameter_layer(model: LoadedModel, parameter: str) -> int:
    """The first layer whose output a weight changes: its block's index, ``n_layers`` for the final norm and the
    unembedding (only the last step changes), 0 for anything else (embeddings)."""
    adapter = model.adapter
    blocks = adapter.layers + "."
    if parameter.startswith(blocks):
        return int(parameter[len(blocks):].split(".", 1)[0])
    if parameter.startswith((adapter.final_norm + ".", adapter.unembed + ".")):
        return model.n_layers
    return 0


class Step(Protocol):
    """One change to a model; see the module's docstring."""

    kind: ClassVar[str]

    def spec(self) -> dict: ...

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> Step: ...

    def describe(self) -> str: ...

    def layers(self, model: LoadedModel) -> set[int]: ...

    def layer_ops(self, model: LoadedModel, measure: Measure) -> dict[int, list[LayerOp]]: ...


@dataclass(frozen=True)
class GridRef:
    """An operator's grid, named without a model (the mean of a mean ablation is taken over it)."""

    op: str
    max_op: int = 100
    template: str = "{op1}{op}{op2}="
    fewshot: int = 0
    seed: int = 0


def _tensor_ops(model: LoadedModel, values: dict[int, torch.Tensor], neurons: Neurons,
                last_only: bool = False) -> dict[int, list[LayerOp]]:
    """Per layer, one op setting ``neurons`` to ``values[layer]`` (in the model's dtype, on its device)."""
    ops = {}
    for layer, ns in by_layer(neurons).items():
        index = torch.as_tensor(ns, dtype=torch.long, device=model.device)
        ops[layer] = [LayerOp(index, values[layer].to(model.device, model.hf.dtype), last_only)]
    return ops


def check_layers(model: LoadedModel, layers: Iterable[int]) -> None:
    for layer in layers:
        if not 0 <= layer < model.n_layers:
            raise InterventionError(f"layer {layer} does not exist; the model has layers 0..{model.n_layers - 1}")


def check_neurons(model: LoadedModel, neurons: Sequence[tuple[int, int]]) -> None:
    """A clear error for a neuron the model does not have."""
    check_layers(model, {layer for layer, _ in neurons})
    bad = [neuron_label(layer, n) for layer, n in neurons if not 0 <= n < model.d_mlp]
    if bad:
        raise InterventionError(f"{', '.join(bad[:5])}: the model has neurons 0..{model.d_mlp - 1} per layer")


class _NeuronStep:
    """What the steps on neurons share: the layers they change are their neurons' layers."""

    neurons: Neurons

    def layers(self, model: LoadedModel) -> set[int]:
        return {layer for layer, _ in self.neurons}


@dataclass(frozen=True)
class NeuronAblation(_NeuronStep):
    """Replace neurons at every position: by 0, by ``value``, or by their mean over ``grid`` (per position from the
    end of the prompt, the grid's prompts sharing one template)."""

    neurons: Neurons
    mode: str = "zero"
    value: float = 0.0
    grid: GridRef | None = None
    kind: ClassVar[str] = "ablate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))
        if self.mode not in ABLATION_MODES:
            raise InterventionError(f"ablation mode {self.mode!r}: use one of {', '.join(ABLATION_MODES)}")
        if (self.mode == "mean") != (self.grid is not None):
            raise InterventionError("a mean ablation needs the grid to average over (and only it does)")

    def spec(self) -> dict:
        spec = {"kind": self.kind, "neurons": [neuron_label(*n) for n in self.neurons], "mode": self.mode}
        if self.mode == "constant":
            spec["value"] = self.value
        if self.grid is not None:
            spec["grid"] = vars(self.grid)
        return spec

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> NeuronAblation:
        grid = GridRef(**spec["grid"]) if spec.get("grid") else None
        return cls(spec["neurons"], spec["mode"], float(spec.get("value", 0.0)), grid)

    def describe(self) -> str:
        return f"{self.mode}-ablate {len(self.neurons)} neurons"

    def layer_ops(self, model: LoadedModel, measure: Measure) -> dict[int, list[LayerOp]]:
        check_neurons(model, self.neurons)
        if self.mode == "mean":
            values = measure.grid_means(self)
        else:
            fill = 0.0 if self.mode == "zero" else self.value
            values = {layer: torch.full((len(ns),), fill) for layer, ns in by_layer(self.neurons).items()}
        return _tensor_ops(model, values, self.neurons)


@dataclass(frozen=True)
class ActivationPatch(_NeuronStep):
    """Set neurons at the last position to the values they take at the last position of ``source``."""

    neurons: Neurons
    source: str
    kind: ClassVar[str] = "patch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))
        if not self.source.strip():
            raise InterventionError("an activation patch needs a source prompt")

    def spec(self) -> dict:
        return {"kind": self.kind, "neurons": [neuron_label(*n) for n in self.neurons], "source": self.source}

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> ActivationPatch:
        return cls(spec["neurons"], spec["source"])

    def describe(self) -> str:
        return f"patch {len(self.neurons)} neurons from {self.source!r}"

    def layer_ops(self, model: LoadedModel, measure: Measure) -> dict[int, list[LayerOp]]:
        check_neurons(model, self.neurons)
        return _tensor_ops(model, measure.last_values(self.source, self.neurons), self.neurons, last_only=True)


@dataclass(frozen=True, eq=False)
class WeightEdit:
    """Multiply ``parameter``'s entries where ``mask`` is true by ``factor`` (0 = prune). Compared by digest."""

    parameter: str
    mask: torch.Tensor = field(repr=False)
    factor: float = 0.0
    digest: str = ""
    kind: ClassVar[str] = "weight_edit"
    _positions: dict = field(default_factory=dict, repr=False, compare=False)  # device -> flat indices of the mask

    def __post_init__(self) -> None:
        mask = self.mask.detach().to("cpu", torch.bool).contiguous()
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "digest", digest(mask.numpy().tobytes(), json.dumps(list(mask.shape)),
                                                  size=MASK_DIGEST_SIZE))

    @classmethod
    def rows(cls, parameter: str, shape: Sequence[int], rows: Sequence[int], factor: float = 0.0) -> WeightEdit:
        """An edit of whole rows (e.g. output features of a Linear)."""
        mask = torch.zeros(tuple(shape), dtype=torch.bool)
        mask[list(rows)] = True
        return cls(parameter, mask, factor)

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def spec(self) -> dict:
        return {"kind": self.kind, "parameter": self.parameter, "factor": self.factor, "mask": self.digest,
                "shape": list(self.mask.shape), "count": self.count}

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> WeightEdit:
        if spec["mask"] not in tensors:
            raise InterventionError(f"the mask {spec['mask']} of {spec['parameter']} is missing")
        edit = cls(spec["parameter"], tensors[spec["mask"]], float(spec["factor"]))
        if edit.digest != spec["mask"]:
            raise InterventionError(f"the mask of {spec['parameter']} does not match its digest")
        return edit

    def describe(self) -> str:
        return f"{self.parameter} x{self.factor:g} on {self.count:,} weights"

    def layers(self, model: LoadedModel) -> set[int]:
        return {parameter_layer(model, self.parameter)}

    def layer_ops(self, model: LoadedModel, measure: Measure) -> dict[int, list[LayerOp]]:
        return {}  # a weight changes in place, around the whole computation (:meth:`apply`)

    def apply(self, parameters: dict[str, torch.nn.Parameter]) -> Callable[[], None]:
        """Change the weight in place; returns what undoes it bit-exactly (only the masked entries are saved)."""
        parameter = parameters.get(self.parameter)
        if parameter is None:
            raise InterventionError(f"the model has no parameter {self.parameter!r} (see `python -m neurolab info`)")
        if tuple(parameter.shape) != tuple(self.mask.shape):
            raise InterventionError(f"the mask for {self.parameter} is {tuple(self.mask.shape)}, the weight "
                                    f"{tuple(parameter.shape)}")
        flat = parameter.data.view(-1)
        positions = self._positions.get(flat.device)
        if positions is None:  # a boolean mask is searched on every use; its positions once per device
            positions = self._positions[flat.device] = self.mask.view(-1).nonzero().squeeze(1).to(flat.device)
        saved = flat[positions]
        flat[positions] = saved * self.factor

        def undo() -> None:
            flat[positions] = saved

        return undo

    def tensors(self) -> dict[str, torch.Tensor]:
        return {self.digest: self.mask}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightEdit) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.digest)


@lru_cache(maxsize=8)
def _grid_rows(ref: GridRef, max_single_token: int) -> dict[str, int]:
    """prompt -> its row in the grid ``ref`` names (for this tokenizer's largest single-token number)."""
    template = PromptTemplate(ref.template, ref.fewshot, ref.seed)
    return {p: i for i, p in enumerate(OperandGrid(ref.op, ref.max_op, max_single_token, template).prompts)}


@dataclass(frozen=True, eq=False)
class GridPatch(_NeuronStep):
    """Set ``neurons`` at the last position of each prompt of ``grid`` to ``values[i]`` (``[n_prompts, k]``, the
    grid's i-th prompt, columns in the order of the sorted neurons); prompts outside the grid keep their own.
    Patch-the-fit: each neuron replaced by its fitted function of the operands. Compared by digest."""

    neurons: Neurons
    grid: GridRef
    values: torch.Tensor = field(repr=False)
    what: str = "values"  # what the values are, for a user ("helix fit")
    digest: str = ""
    kind: ClassVar[str] = "grid_patch"

    def __post_init__(self) -> None:
        pairs = [parse_neuron_label(n) if isinstance(n, str) else (int(n[0]), int(n[1])) for n in self.neurons]
        ordered = _neurons(pairs)
        values = torch.as_tensor(self.values).detach().to("cpu", torch.float32)
        if len(ordered) != len(pairs) or values.dim() != 2 or values.shape[1] != len(pairs):
            raise InterventionError(f"a grid patch needs distinct neurons and values [prompts, {len(pairs)}], got "
                                    f"{len(ordered)} distinct of {len(pairs)} and {list(values.shape)}")
        values = values[:, [pairs.index(n) for n in ordered]].contiguous()
        object.__setattr__(self, "neurons", ordered)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "digest", digest(values.numpy().tobytes(), json.dumps(list(values.shape)),
                                                  size=MASK_DIGEST_SIZE))

    def spec(self) -> dict:
        return {"kind": self.kind, "neurons": [neuron_label(*n) for n in self.neurons], "grid": vars(self.grid),
                "values": self.digest, "shape": list(self.values.shape), "what": self.what}

    @classmethod
    def from_spec(cls, spec: dict, tensors: dict[str, torch.Tensor]) -> GridPatch:
        if spec["values"] not in tensors:
            raise InterventionError(f"the values {spec['values']} of a grid patch are missing")
        patch = cls(spec["neurons"], GridRef(**spec["grid"]), tensors[spec["values"]], spec.get("what", "values"))
        if patch.digest != spec["values"]:
            raise InterventionError("the values of a grid patch do not match their digest")
        return patch

    def describe(self) -> str:
        return f"patch {len(self.neurons)} neurons to their {self.what} on {self.grid.op}"

    def tensors(self) -> dict[str, torch.Tensor]:
        return {self.digest: self.values}

    def layer_ops(self, model: LoadedModel, measure: Measure) -> dict[int, list[LayerOp]]:
        check_neurons(model, self.neurons)
        rows = _grid_rows(self.grid, model.max_single_token)
        if len(rows) != self.values.shape[0]:
            raise InterventionError(f"a grid patch holds {self.values.shape[0]} prompts; its grid has {len(rows)}")
        ops: dict[int, list[LayerOp]] = {}
        for layer, ns in by_layer(self.neurons).items():
            columns = [self.neurons.index((layer, n)) for n in ns]
            index = torch.as_tensor(ns, dtype=torch.long, device=model.device)
            values = self.values[:, columns].to(model.device, model.hf.dtype)
            ops[layer] = [LayerOp(index, values, True, None, rows)]
        return ops

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GridPatch) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.digest)


#: every step type by its ``kind`` (what ``from_json`` reads); a new kind of change is one class and one entry
STEP_TYPES: dict[str, type] = {cls.kind: cls for cls in (NeuronAblation, ActivationPatch, WeightEdit, GridPatch)}


@dataclass(frozen=True)
class Intervention:
    """Steps applied in order; the empty intervention is the clean model (key ``none``)."""

    steps: tuple[Step, ...] = ()
    name: str = ""
    origin: str = ""  # where it came from (manual picks, a heuristic, a layer's top-N, a random control)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))

    @property
    def key(self) -> str:
        """Stable across processes and versions of Python: a hash of the steps' canonical JSON (not the name)."""
        if not self.steps:
            return NONE_KEY
        return json_digest([step.spec() for step in self.steps], size=INTERVENTION_KEY_SIZE)

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __add__(self, other: Intervention) -> Intervention:
        return Intervention(self.steps + other.steps, " + ".join(n for n in (self.name, other.name) if n),
                            " + ".join(o for o in (self.origin, other.origin) if o))

    @property
    def neurons(self) -> Neurons:
        """Every neuron an activation step names (empty for weight edits alone)."""
        return tuple(sorted({n for step in self.steps for n in getattr(step, "neurons", ())}))

    @property
    def weight_edits(self) -> tuple[WeightEdit, ...]:
        return tuple(step for step in self.steps if isinstance(step, WeightEdit))

    def first_layer(self, model: LoadedModel) -> int:
        """The earliest layer any step changes (``n_layers`` for the clean model): everything before it is the
        clean model's."""
        return min((layer for step in self.steps for layer in step.layers(model)), default=model.n_layers)

    def describe(self) -> str:
        """One line for a user: the name, else what the steps do."""
        return self.name or "; ".join(step.describe() for step in self.steps) or "clean model"

    def to_json(self) -> dict:
        """The steps' specs, and the digests of the tensors (:meth:`tensors`) saved beside them."""
        return {"name": self.name, "origin": self.origin, "key": self.key,
                "steps": [step.spec() for step in self.steps], "tensors": sorted(self.tensors())}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors the JSON names by digest (weight masks, patched values), to be saved beside it
        (safetensors)."""
        return {name: t for step in self.steps if hasattr(step, "tensors") for name, t in step.tensors().items()}

    @classmethod
    def from_json(cls, data: dict, tensors: dict[str, torch.Tensor] | None = None) -> Intervention:
        """The inverse of :meth:`to_json` (with :meth:`tensors`); a clear error on anything malformed."""
        tensors = tensors or {}
        steps: list[Step] = []
        try:
            for spec in data.get("steps", []):
                step_type = STEP_TYPES.get(spec["kind"])
                if step_type is None:
                    raise InterventionError(f"unknown intervention step {spec['kind']!r}; known: "
                                            f"{', '.join(STEP_TYPES)}")
                steps.append(step_type.from_spec(spec, tensors))
        except (KeyError, TypeError) as error:
            raise InterventionError(f"malformed intervention: {error!r}") from None
        intervention = cls(tuple(steps), data.get("name", ""), data.get("origin", ""))
        if data.get("key") not in (None, intervention.key):
            raise InterventionError(f"intervention key {data['key']} does not match its steps ({intervention.key})")
        return intervention


CLEAN = Intervention()


def ablation(neurons: Iterable, mode: str = "zero", value: float = 0.0, grid: GridRef | None = None,
             name: str = "", origin: str = "") -> Intervention:
    """The common case in one call: ablate these neurons."""
    return Intervention((NeuronAblation(tuple(neurons), mode, value, grid),), name, origin)
