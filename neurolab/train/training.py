"""Training the embedded arithmetic model: deterministic, resumable, with checkpoints for training dynamics.

The recipe starts from the configuration measured in ``../shared/embedded-model.md`` (a 1 M-parameter GPT-NeoX,
AdamW with warm-up and cosine decay, loss on the answer token only, 1 sample in 8 from the non-math task). It runs
for a fixed number of *steps*, not a wall-clock budget, so that a seed fixes the result.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from ..paths import EMBEDDED_MODEL_NAME
from ..progress import Progress, report
from ..tasks.arithmetic import OPERATORS, answer, valid_pairs
from ..tasks.language import facts
from ..tasks.splits import METADATA_FILE
from ..tasks.vocab import MAX_NUMBER, build_tokenizer

CHECKPOINTS_DIR = "checkpoints"


@dataclass
class TrainConfig:
    """Everything that determines the trained weights; saved beside them so a run can be repeated."""

    name: str = EMBEDDED_MODEL_NAME
    seed: int = 0
    max_op: int = 100
    heldout_fraction: float = 0.1
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    rotary_pct: float = 0.25
    steps: int = 6000
    batch_size: int = 512
    lr: float = 1e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    nonmath_fraction: float = 0.125
    checkpoint_steps: tuple[int, ...] = (250, 500, 1000, 1500, 2000, 3000, 4000)
    state_every: int = 100

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("betas", "checkpoint_steps"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


PRESETS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    # Seconds, not minutes: proves the pipeline runs end to end (used by the test suite).
    "tiny": TrainConfig(
        name="neurolab-tiny", max_op=20, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
        steps=12, batch_size=64, warmup_steps=2, checkpoint_steps=(4, 8), state_every=4,
    ),
}


@dataclass
class Example:
    """One training prompt (token ids, no padding) and the id of its answer token."""

    ids: list[int]
    target: int


@dataclass
class Dataset:
    """Train and held-out arithmetic examples per operator, and the non-math facts."""

    train: dict[str, list[Example]]
    heldout: dict[str, list[Example]]
    heldout_pairs: dict[str, list[tuple[int, int]]]
    nonmath: list[Example]
    pool: list[Example] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pool = [ex for op in OPERATORS for ex in self.train[op]]


def _encode(tokenizer: PreTrainedTokenizerFast, prompt: str, target: str) -> Example:
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return Example(ids, tokenizer.convert_tokens_to_ids(target))


def build_dataset(config: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> Dataset:
    """All valid pairs per operator, a seeded 10% of them held out per operator."""
    rng = random.Random(config.seed)
    train: dict[str, list[Example]] = {}
    heldout: dict[str, list[Example]] = {}
    heldout_pairs: dict[str, list[tuple[int, int]]] = {}
    for op in OPERATORS:
        pairs = valid_pairs(op, config.max_op, MAX_NUMBER)
        order = list(range(len(pairs)))
        rng.shuffle(order)
        n_heldout = round(config.heldout_fraction * len(pairs))
        held = sorted(order[:n_heldout])
        held_set = set(held)
        heldout_pairs[op] = [pairs[i] for i in held]
        def example(a: int, b: int) -> Example:
            return _encode(tokenizer, f"{a}{op}{b}=", str(answer(a, op, b)))

        heldout[op] = [example(*pairs[i]) for i in held]
        train[op] = [example(*pairs[i]) for i in range(len(pairs)) if i not in held_set]
    nonmath = [_encode(tokenizer, f.prompt, f.answer) for f in facts()]
    return Dataset(train, heldout, heldout_pairs, nonmath)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad to one length, with positions counted from each row's first real token (as at inference)."""
    width = max(len(ex.ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        ids[row, width - len(ex.ids):] = torch.tensor(ex.ids)
        mask[row, width - len(ex.ids):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    targets = torch.tensor([ex.target for ex in examples])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "targets": targets}


def sample_batch(data: Dataset, config: TrainConfig, step: int) -> list[Example]:
    """The batch of one step, a pure function of (seed, step): resuming replays exactly the same data."""
    rng = random.Random(config.seed * 1_000_003 + step)
    n_nonmath = round(config.batch_size * config.nonmath_fraction)
    batch = [data.pool[rng.randrange(len(data.pool))] for _ in range(config.batch_size - n_nonmath)]
    batch += [data.nonmath[rng.randrange(len(data.nonmath))] for _ in range(n_nonmath)]
    return batch


def learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def build_model(config: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPTNeoXForCausalLM:
    torch.manual_seed(config.seed)
    model_config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        rotary_pct=config.rotary_pct,
        max_position_embeddings=16,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPTNeoXForCausalLM(model_config)


@torch.no_grad()
def accuracy(model: GPTNeoXForCausalLM, examples: list[Example], pad_id: int, batch_size: int = 2048) -> float:
    """Top-1 next-token accuracy; used for the training curve (``python -m neurolab eval`` uses the core)."""
    model.eval()
    correct = 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad_id)
        targets = batch.pop("targets")
        logits = model(**batch).logits[:, -1]
        correct += int((logits.argmax(-1) == targets).sum())
    return correct / max(1, len(examples))


def evaluate_split(model: GPTNeoXForCausalLM, data: Dataset, pad_id: int) -> dict[str, float]:
    scores = {op: accuracy(model, data.heldout[op], pad_id) for op in OPERATORS}
    scores["nonmath"] = accuracy(model, data.nonmath, pad_id)
    return scores


# --- resumable state -------------------------------------------------------------------------------------------

def _save_state(path: Path, model: GPTNeoXForCausalLM, optimizer: torch.optim.Optimizer, meta: dict) -> None:
    """Model and AdamW moments as safetensors (never pickles), the rest as JSON; written then renamed."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).clone().contiguous()
    groups = [dict(g) for g in opt["param_groups"]]
    save_file(tensors, str(path / "state.safetensors.tmp"))
    (path / "state.json.tmp").write_text(json.dumps({**meta, "param_groups": groups}))
    (path / "state.safetensors.tmp").replace(path / "state.safetensors")
    (path / "state.json.tmp").replace(path / "state.json")


def _load_state(path: Path, model: GPTNeoXForCausalLM, optimizer: torch.optim.Optimizer) -> dict:
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = meta.pop("param_groups")
    for group in groups:
        group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return meta


def _save_hf(model: GPTNeoXForCausalLM, tokenizer: PreTrainedTokenizerFast, path: Path, half: bool) -> None:
    """Hugging Face format (config, safetensors, tokenizer): loadable by ``from_pretrained`` like any hub model."""
    path.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # transformers' own "Writing model shards" bar would break ours
    to_save = model
    if half:  # intermediate checkpoints in fp16 keep data/models small; the final model stays fp32
        to_save = GPTNeoXForCausalLM(model.config)
        to_save.load_state_dict(model.state_dict())
        to_save = to_save.to(torch.float16)
    to_save.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def train(
    config: TrainConfig,
    out_dir: Path,
    state_dir: Path,
    fresh: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Train (or resume) and save the final model, its checkpoints and ``neurolab.json`` in ``out_dir``.

    ``progress`` counts steps; its stage is the step's loss (``"loss 0.412"``: the CLI's bar shows it as its label).
    Returns the metadata written to ``neurolab.json``.
    """
    tokenizer = build_tokenizer()
    data = build_dataset(config, tokenizer)
    model = build_model(config, tokenizer)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )
    pad_id = tokenizer.pad_token_id
    start, elapsed, history = 0, 0.0, []
    run_state = state_dir / config.name
    if not fresh and (run_state / "state.json").exists():
        meta = json.loads((run_state / "state.json").read_text())
        if meta.get("config") == json.loads(json.dumps(asdict(config))):
            meta = _load_state(run_state, model, optimizer)
            start, elapsed, history = meta["step"], meta["elapsed_s"], meta["history"]
    if start == 0 and (out_dir / CHECKPOINTS_DIR).exists():
        shutil.rmtree(out_dir / CHECKPOINTS_DIR)  # a fresh run must not list an older run's checkpoints
    model.train()
    began = time.perf_counter() - elapsed
    for step in range(start, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        batch = collate(sample_batch(data, config, step), pad_id)
        targets = batch.pop("targets")
        logits = model(**batch).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        done = step + 1
        if done in config.checkpoint_steps:
            scores = evaluate_split(model, data, pad_id)
            history.append({"step": done, "minutes": (time.perf_counter() - began) / 60, **scores})
            _save_hf(model, tokenizer, out_dir / CHECKPOINTS_DIR / f"step-{done:05d}", half=True)
            model.train()
        if done % config.state_every == 0 or done == config.steps:
            _save_state(run_state, model, optimizer, {
                "step": done, "elapsed_s": time.perf_counter() - began, "history": history,
                "config": asdict(config),
            })
        report(progress, done, config.steps, f"loss {loss.item():.3f}")
    seconds = time.perf_counter() - began
    final = evaluate_split(model, data, pad_id)
    history.append({"step": config.steps, "minutes": seconds / 60, **final})
    _save_hf(model, tokenizer, out_dir, half=False)
    metadata = {
        "recipe": asdict(config),
        "train_seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_pairs": {op: [list(p) for p in pairs] for op, pairs in data.heldout_pairs.items()},
        "train_examples": {op: len(data.train[op]) for op in OPERATORS},
        "nonmath_facts": len(data.nonmath),
        "history": history,
        "checkpoints": sorted(p.name for p in (out_dir / CHECKPOINTS_DIR).iterdir() if p.is_dir()),
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
    return metadata
