"""The embedded model's card (``README.md`` beside its weights), written from what training and evaluation measured."""

from __future__ import annotations

import json
from pathlib import Path

from ..analysis.evaluation import evaluate
from ..models.loading import load_model
from ..tasks.arithmetic import OPERATORS
from ..tasks.splits import METADATA_FILE
from .training import CHECKPOINTS_DIR

BARS = {"+": 0.95, "-": 0.95, "*": 0.80, "/": 0.80, "nonmath": 0.95}
COLUMNS = (*OPERATORS, "nonmath")


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def write_model_card(folder: Path) -> Path:
    """Evaluate the saved model through the core (the code path of any model) and write its card."""
    meta = json.loads((folder / METADATA_FILE).read_text())
    model = load_model(str(folder))
    result = evaluate(model)
    recipe = meta["recipe"]
    rows = "\n".join(
        f"| `{k}` | {result.scores[k].accuracy:.4f} | {result.scores[k].correct}/{result.scores[k].total} "
        f"| {BARS[k]:.2f} | {'yes' if result.scores[k].accuracy >= BARS[k] else '**no**'} |"
        for k in COLUMNS
    )
    curve = "\n".join(
        f"| {h['step']:,} | {h['minutes']:.1f} | " + " | ".join(f"{h[k]:.3f}" for k in COLUMNS) + " |"
        for h in meta["history"]
    )
    checkpoints = folder / CHECKPOINTS_DIR
    text = f"""# {recipe['name']} — neurolab's embedded arithmetic model

A {meta['parameters'] / 1e6:.2f} M-parameter GPT-NeoX (Pythia's architecture) trained from scratch by
`python -m neurolab train`, so that every neurolab analysis runs offline. It is loaded with
`AutoModelForCausalLM` / `AutoTokenizer` from this folder, exactly like a hub model.

Fingerprint: `{model.fingerprint}` (cached results are keyed by it).

## Accuracy (held-out operand pairs; top-1 next token)
Measured by `python -m neurolab eval` on the {sum(result.scores[o].total for o in OPERATORS):,} held-out pairs
(a seeded 10% of each operator's valid pairs, never trained on). The non-math task is a set of memorised facts
(capitals, opposites, colours, successors), so it is measured over all {result.scores['nonmath'].total} facts.

| task | accuracy | correct | bar | meets bar |
|---|---|---|---|---|
{rows}

## Accuracy over training (held-out pairs)
Checkpoints (fp16 safetensors, loadable like the final model) are in `{CHECKPOINTS_DIR}/`:
{', '.join(meta['checkpoints'])}.

| step | minutes | + | - | * | / | non-math |
|---|---|---|---|---|---|---|
{curve}

## Recipe
- Architecture: GPT-NeoX, hidden {recipe['hidden_size']}, {recipe['num_layers']} layers, {recipe['num_heads']} heads,
  MLP width {recipe['intermediate_size']} (the neurons), rotary_pct {recipe['rotary_pct']}, parallel residual,
  untied embeddings.
- Tokenizer: word level; one token per integer 0..999, `+ - * / =`, the non-math words, `[PAD] [UNK] [BOS] [EOS]`.
- Data: every valid `{{op1}}{{op}}{{op2}}=` prompt with 0 <= op < {recipe['max_op']} (rules of `../shared/science.md`;
  train pairs per operator: {', '.join(f'`{o}` {n:,}' for o, n in meta['train_examples'].items())}), plus
  {meta['nonmath_facts']} non-math facts making {recipe['nonmath_fraction']:.3f} of every batch. Loss on the answer
  token only.
- Optimiser: AdamW lr {recipe['lr']}, betas {tuple(recipe['betas'])}, weight decay {recipe['weight_decay']},
  {recipe['warmup_steps']} warm-up steps then cosine decay to {recipe['min_lr_ratio']} x lr;
  batch {recipe['batch_size']}; {recipe['steps']:,} steps; seed {recipe['seed']}; gradient clipping 1.0.
- Training time: {meta['train_seconds'] / 60:.1f} minutes on 2 CPU cores (torch CPU).
- Sizes: final model {_size_mb(folder) - (_size_mb(checkpoints) if checkpoints.exists() else 0):.1f} MB,
  checkpoints {_size_mb(checkpoints) if checkpoints.exists() else 0:.1f} MB.

Reproduce: `python -m neurolab train` (deterministic for a seed; resumes from `.train-state/` if interrupted).
"""
    card = folder / "README.md"
    card.write_text(text)
    return card
