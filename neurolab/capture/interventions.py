"""Interventions as small serialisable values: what to change in a model, never how or where it is applied.

Like pyvene's intervention configs, an :class:`Intervention` round-trips through JSON, and its :attr:`~Intervention.key`
(a hash of its steps, not of its name) keys every result computed under it, so an ablated or pruned model's results
never land under the clean model's. Steps apply in order:

- :class:`NeuronAblation`: set neurons (layer, neuron) to 0, to a constant, or to their mean over an operator's grid,
  at every position (the paper's ablation is zero);
- :class:`ActivationPatch`: set neurons at the last position to their value on a source prompt;
- :class:`WeightEdit`: multiply the entries of one weight selected by a boolean mask by a factor (0 prunes; MathNeuro
  scales by 1.1). The mask travels beside the JSON as a tensor, named by its digest.

:mod:`neurolab.capture.apply` is the one place that applies them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import InterventionError
from ..models.adapters import neuron_label, parse_neuron_label

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


@dataclass(frozen=True)
class GridRef:
    """An operator's grid, named without a model (the mean of a mean ablation is taken over it)."""

    op: str
    max_op: int = 100
    template: str = "{op1}{op}{op2}="
    fewshot: int = 0
    seed: int = 0


@dataclass(frozen=True)
class NeuronAblation:
    """Replace neurons at every position: by 0, by ``value``, or by their mean over ``grid`` (per position from the
    end of the prompt, the grid's prompts sharing one template)."""

    neurons: Neurons
    mode: str = "zero"
    value: float = 0.0
    grid: GridRef | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))
        if self.mode not in ABLATION_MODES:
            raise InterventionError(f"ablation mode {self.mode!r}: use one of {', '.join(ABLATION_MODES)}")
        if (self.mode == "mean") != (self.grid is not None):
            raise InterventionError("a mean ablation needs the grid to average over (and only it does)")

    def spec(self) -> dict:
        spec = {"kind": "ablate", "neurons": [neuron_label(*n) for n in self.neurons], "mode": self.mode}
        if self.mode == "constant":
            spec["value"] = self.value
        if self.grid is not None:
            spec["grid"] = vars(self.grid)
        return spec


@dataclass(frozen=True)
class ActivationPatch:
    """Set neurons at the last position to the values they take at the last position of ``source``."""

    neurons: Neurons
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", _neurons(self.neurons))
        if not self.source.strip():
            raise InterventionError("an activation patch needs a source prompt")

    def spec(self) -> dict:
        return {"kind": "patch", "neurons": [neuron_label(*n) for n in self.neurons], "source": self.source}


@dataclass(frozen=True, eq=False)
class WeightEdit:
    """Multiply ``parameter``'s entries where ``mask`` is true by ``factor`` (0 = prune). Compared by digest."""

    parameter: str
    mask: torch.Tensor = field(repr=False)
    factor: float = 0.0
    digest: str = ""

    def __post_init__(self) -> None:
        mask = self.mask.detach().to("cpu", torch.bool).contiguous()
        object.__setattr__(self, "mask", mask)
        digest = hashlib.blake2b(mask.numpy().tobytes(), digest_size=12)
        digest.update(json.dumps(list(mask.shape)).encode())
        object.__setattr__(self, "digest", digest.hexdigest())

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
        return {"kind": "weight_edit", "parameter": self.parameter, "factor": self.factor, "mask": self.digest,
                "shape": list(self.mask.shape), "count": self.count}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightEdit) and self.spec() == other.spec()

    def __hash__(self) -> int:
        return hash(self.digest)


Step = NeuronAblation | ActivationPatch | WeightEdit


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
        text = json.dumps([step.spec() for step in self.steps], sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __add__(self, other: Intervention) -> Intervention:
        return Intervention(self.steps + other.steps, " + ".join(n for n in (self.name, other.name) if n),
                            " + ".join(o for o in (self.origin, other.origin) if o))

    def describe(self) -> str:
        """One line for a user: the name, else what the steps do."""
        if self.name:
            return self.name
        parts = []
        for step in self.steps:
            if isinstance(step, WeightEdit):
                parts.append(f"{step.parameter} x{step.factor:g} on {step.count:,} weights")
            elif isinstance(step, NeuronAblation):
                parts.append(f"{step.mode}-ablate {len(step.neurons)} neurons")
            else:
                parts.append(f"patch {len(step.neurons)} neurons from {step.source!r}")
        return "; ".join(parts) or "clean model"

    def to_json(self) -> dict:
        return {"name": self.name, "origin": self.origin, "key": self.key,
                "steps": [step.spec() for step in self.steps]}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The masks the JSON names by digest, to be saved beside it (safetensors)."""
        return {step.digest: step.mask for step in self.steps if isinstance(step, WeightEdit)}

    @classmethod
    def from_json(cls, data: dict, tensors: dict[str, torch.Tensor] | None = None) -> Intervention:
        """The inverse of :meth:`to_json` (with :meth:`tensors`); a clear error on anything malformed."""
        tensors = tensors or {}
        steps: list[Step] = []
        try:
            for spec in data.get("steps", []):
                kind = spec["kind"]
                if kind == "ablate":
                    grid = GridRef(**spec["grid"]) if spec.get("grid") else None
                    steps.append(NeuronAblation(spec["neurons"], spec["mode"], float(spec.get("value", 0.0)), grid))
                elif kind == "patch":
                    steps.append(ActivationPatch(spec["neurons"], spec["source"]))
                elif kind == "weight_edit":
                    if spec["mask"] not in tensors:
                        raise InterventionError(f"the mask {spec['mask']} of {spec['parameter']} is missing")
                    edit = WeightEdit(spec["parameter"], tensors[spec["mask"]], float(spec["factor"]))
                    if edit.digest != spec["mask"]:
                        raise InterventionError(f"the mask of {spec['parameter']} does not match its digest")
                    steps.append(edit)
                else:
                    raise InterventionError(f"unknown intervention step {kind!r}")
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
