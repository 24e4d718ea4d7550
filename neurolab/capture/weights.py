"""Weight edits applied to a loaded model for the duration of one computation, and undone bit-exactly.

Only the masked entries are saved (not a copy of the weight), so pruning 1% of a 7B model costs 1% of its memory;
undoing writes the saved values back, so the weights hash identically afterwards, also when the computation inside
raised. Callers hold the model lock, so no other thread (another browser session) ever sees an edited weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from ..models.loading import LoadedModel
from .interventions import WeightEdit


def editable_parameters(model: LoadedModel) -> dict[str, torch.nn.Parameter]:
    """Every named parameter of the Hugging Face module (tied weights appear once, under their first name)."""
    return dict(model.hf.named_parameters())


@contextmanager
def edited_weights(model: LoadedModel, edits: Sequence[WeightEdit]) -> Iterator[None]:
    """Apply ``edits`` in order; on exit (normal or not) undo every one in reverse order."""
    if not edits:
        yield
        return
    parameters = editable_parameters(model)
    undo: list[Callable[[], None]] = []
    try:
        with torch.no_grad():
            for edit in edits:
                undo.append(edit.apply(parameters))
        yield
    finally:
        with torch.no_grad():
            for step in reversed(undo):
                step()
