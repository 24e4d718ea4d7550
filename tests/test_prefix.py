"""The prefix-shared grid pass (one pass over the distinct prefixes, one over the suffixes) equals the plain pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurolab.analysis.sweep import grid_for
from neurolab.capture.interventions import ablation
from neurolab.capture.prefix import split_shared_prefix
from neurolab.capture.trace import run
from neurolab.tasks.grid import TEMPLATES


def both(model, prompts, **kwargs):
    return (run(model, prompts, logits=True, share_prefix=share, **kwargs) for share in (True, False))


@pytest.mark.parametrize("template", ["plain", "fewshot", "spaced"])
def test_prefix_pass_equals_the_plain_pass_on_the_embedded_model(embedded, template):
    grid = grid_for(embedded, "+", 30, TEMPLATES[template])
    plan = split_shared_prefix(embedded.tokenizer, grid.prompts)
    assert plan is not None and len(plan.prefixes) <= 30  # one prefix per op1 (few-shot: the examples, op1, op)
    fast, plain = both(embedded, grid.prompts, layers=[2, 3], batch_size=256)
    assert (fast.logits - plain.logits).abs().max() < 1e-4
    assert all((fast.neurons[layer] - plain.neurons[layer]).abs().max() < 1e-4 for layer in (2, 3))
    assert np.array_equal(fast.top1, plain.top1)


def test_prefix_pass_under_an_ablation(embedded):
    grid = grid_for(embedded, "-", 30)
    knocked = ablation([(1, 7), (3, 12), (3, 40)])
    fast, plain = both(embedded, grid.prompts, layers={3: [12, 13]}, intervention=knocked)
    assert (fast.logits - plain.logits).abs().max() < 1e-4
    assert torch.all(fast.neurons[3][:, 0] == 0)


def test_prefix_pass_equals_the_plain_pass_on_every_family(tiny_model):
    prompts = grid_for(tiny_model, "*", 12).prompts
    assert split_shared_prefix(tiny_model.tokenizer, prompts) is not None
    fast, plain = both(tiny_model, prompts, layers=None)
    assert (fast.logits - plain.logits).abs().max() < 1e-4
    assert all((fast.neurons[layer] - plain.neurons[layer]).abs().max() < 1e-4 for layer in fast.neurons)


def test_no_shared_prefix_falls_back_to_the_plain_pass(embedded):
    assert split_shared_prefix(embedded.tokenizer, ["1+2=", "after monday comes"] * 8) is None  # lengths differ
    assert split_shared_prefix(embedded.tokenizer, ["1+2=", "3+4="]) is None  # too few to share


def test_prefix_pass_under_a_mean_ablation(embedded):
    """A mean ablation's per-position values are cut at the prefix: the shared pass equals the plain one."""
    from neurolab.capture.interventions import GridRef

    template = TEMPLATES["fewshot"]
    grid = grid_for(embedded, "+", 30, template)
    mean = ablation([(1, 3), (2, 8), (3, 12)], "mean",
                    grid=GridRef("+", 30, template.format, template.fewshot, template.seed))
    fast, plain = (run(embedded, grid.prompts, logits=True, share_prefix=share, intervention=mean, keep=False)
                   for share in (True, False))
    assert (fast.logits - plain.logits).abs().max() < 1e-4 and np.array_equal(fast.top1, plain.top1)
