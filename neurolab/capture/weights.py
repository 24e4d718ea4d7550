"""Weight edits applied to a loaded model for the duration of one computation, and undone bit-exactly.

Only the masked entries are saved (not a copy of the weight), so pruning 1% of a 7B model costs 1% of its memory;
undoing writes the saved values back, so the weights hash identically afterwards, also when the computation inside
raised. Callers hold the model lock, so no other thread (another browser session) ever sees an edited weight.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..errors import InterventionError
from ..models.loading import LoadedModel
from .interventions import WeightEdit


def editable_parameters(model: LoadedModel) -> dict[str, torch.nn.Parameter]:
    """Every named parameter of the Hugging Face module (tied weights appear once, under their first name)."""
    return dict(model.hf.named_parameters())


def check_edit(parameters: dict[str, torch.nn.Parameter], edit: WeightEdit) -> torch.nn.Parameter:
    parameter = parameters.get(edit.parameter)
    if parameter is None:
        raise InterventionError(f"the model has no parameter {edit.parameter!r} (see `python -m neurolab info`)")
    if tuple(parameter.shape) != tuple(edit.mask.shape):
        raise InterventionError(f"the mask for {edit.parameter} is {tuple(edit.mask.shape)}, the weight "
                                f"{tuple(parameter.shape)}")
    return parameter


@contextmanager
def edited_weights(model: LoadedModel, edits: Sequence[WeightEdit]) -> Iterator[None]:
    """Apply ``edits`` in order; on exit (normal or not) restore every touched entry in reverse order."""
    if not edits:
        yield
        return
    parameters = editable_parameters(model)
    undo: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for edit in edits:
                weight = check_edit(parameters, edit).data
                mask = edit.mask.to(weight.device)
                undo.append((weight, mask, weight[mask].clone()))
                weight[mask] = weight[mask] * edit.factor
        yield
    finally:
        with torch.no_grad():
            for weight, mask, saved in reversed(undo):
                weight[mask] = saved
