"""The model core: load any causal LM (the embedded one by default) through nnsight, describe it, guard it.

Every model, the embedded one included, goes through :func:`load_model`: ``from_pretrained`` on a folder or a hub
id with ``trust_remote_code=False`` and safetensors only, wrapped in nnsight's ``TransformersModel``. What differs
between families is looked up in :mod:`neurolab.adapters`; nothing here branches on the family.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nnsight import TransformersModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from .. import paths
from ..errors import ModelLoadError
from .adapters import ArchitectureAdapter, adapter_for, get_module, hook_name, value_vectors

#: One lock for every use of every loaded model: nnsight must not trace a model from two threads at once, and
#: Streamlit runs each browser session in its own thread. Reentrant, so core functions may nest.
MODEL_LOCK = threading.RLock()

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_NUMBER_SCAN_LIMIT = 10_000
_FULL_HASH_LIMIT = 512 * 2**20


@dataclass(eq=False)
class LoadedModel:
    """A loaded model with what every analysis needs to know about it."""

    name: str  # as the user wrote it ("embedded", a hub id, a path)
    source: str  # the folder or hub id actually loaded
    lm: TransformersModel
    tokenizer: PreTrainedTokenizerBase
    adapter: ArchitectureAdapter
    fingerprint: str
    number_token_ids: list[int]  # token id of integer n (as it follows "="), for n = 0..max_single_token
    n_layers: int = 0
    d_mlp: int = 0
    lock: threading.RLock = field(default=MODEL_LOCK, repr=False)

    def __post_init__(self) -> None:
        self.n_layers = len(get_module(self.hf, self.adapter.layers))
        self.d_mlp = value_vectors(get_module(self.hf, self.adapter.mlp_out_path(0))).shape[0]

    @property
    def hf(self) -> torch.nn.Module:
        """The plain Hugging Face module under the nnsight wrapper."""
        return self.lm._module

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def max_single_token(self) -> int:
        """Largest n such that every integer 0..n is one token (computed from the tokenizer, never assumed)."""
        return len(self.number_token_ids) - 1

    @property
    def gated(self) -> bool:
        return self.adapter.gated

    def describe(self) -> dict[str, str]:
        """How neurolab sees the model, as label -> text (the CLI's ``info`` and the Model page show this)."""
        a = self.adapter
        return {
            "model": self.name,
            "source": self.source,
            "family": a.family,
            "fingerprint": self.fingerprint,
            "layers": str(self.n_layers),
            "neurons per layer": str(self.d_mlp),
            "max single-token integer": str(self.max_single_token),
            "neurons can be negative": "yes (gated MLP)" if a.gated else "no",
            "neurons of layer L": f"{hook_name(0).replace('.0.', '.L.')} = input of "
                                  f"{a.mlp_out_path(0).replace('.0.', '.L.')}",
            "value vectors": f"W_out[n] from the weight of {a.mlp_out_path(0).replace('.0.', '.L.')}",
            "attention": a.attention_path(0).replace(".0.", ".L."),
            "final norm": a.final_norm,
            "unembedding": a.unembed,
        }

    def value_vectors(self, layer: int) -> torch.Tensor:
        """``[d_mlp, d_model]``: row n is neuron n's write direction into the residual stream."""
        return value_vectors(get_module(self.hf, self.adapter.mlp_out_path(layer))).detach()

    def number_logit_lens(self, layer: int) -> torch.Tensor:
        """``[d_mlp, max_single_token + 1]``: each value vector's direct logit on each number token.

        ``W_out[n] * g @ W_U[numbers].T`` with ``g`` the final norm's scale, where the model has one (the norm's
        centring and division by the residual's RMS are left out: they depend on the whole residual stream).
        """
        vectors = self.value_vectors(layer).float()
        scale = getattr(get_module(self.hf, self.adapter.final_norm), "weight", None)
        if scale is not None:
            vectors = vectors * scale.detach().float()
        unembed = get_module(self.hf, self.adapter.unembed).weight.detach().float()
        return vectors @ unembed[self.number_token_ids].T

    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Left-padded ids with mask-derived positions, so a padded row computes exactly as it would alone."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        mask = enc["attention_mask"]
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        }

    def continuation_token(self, prompt: str, continuation: str) -> int | None:
        """The first token ``continuation`` adds after ``prompt`` in context; None when tokenization merges them."""
        head = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        if len(full) <= len(head) or full[: len(head)] != head:
            return None
        return full[len(head)]

    def token_str(self, token_id: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(int(token_id))


def number_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of 0, 1, 2, ... as the token right after ``=``, up to the first integer that is not a single token."""
    head = tokenizer("=", add_special_tokens=False)["input_ids"]
    texts = [f"={n}" for n in range(_NUMBER_SCAN_LIMIT)]
    ids: list[int] = []
    for n, tokens in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        if len(tokens) != len(head) + 1 or tokens[: len(head)] != head:
            break
        if tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(tokens[-1])) != tokens[-1]:
            break
        if tokenizer.decode([tokens[-1]]).strip() != str(n):
            break
        ids.append(tokens[-1])
    return ids


def _file_digest(path: Path) -> str:
    """Content hash; for files over 512 MB, size + safetensors header + first and last 64 MB (seconds, not
    minutes, and still changes whenever the weights do in practice)."""
    h = hashlib.blake2b(digest_size=16)
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(8 * 2**20), b""):
                h.update(chunk)
        else:
            h.update(str(size).encode())
            h.update(f.read(64 * 2**20))
            f.seek(size - 64 * 2**20)
            h.update(f.read())
    return h.hexdigest()


def fingerprint(folder: Path | None, config: dict, revision: str | None) -> str:
    """Key for every cached result: a hash of the config and the weight/tokenizer files, or the hub revision."""
    h = hashlib.blake2b(digest_size=10)
    portable = {k: v for k, v in config.items() if not k.startswith("_")}  # drops _name_or_path (a location)
    h.update(json.dumps(portable, sort_keys=True, default=str).encode())
    if revision:
        h.update(revision.encode())
    if folder is not None:
        for file in sorted(folder.iterdir()):
            if file.suffix == ".safetensors" or file.name.startswith("tokenizer"):
                h.update(file.name.encode())
                h.update(_file_digest(file).encode())
    return h.hexdigest()


def _resolve(name: str | None) -> tuple[str, Path | None]:
    """(what to pass to from_pretrained, the local folder if it is one); raises a clear error otherwise."""
    if name is None or name.strip() in paths.EMBEDDED_ALIASES:
        folder = paths.embedded_model_dir()
        if not (folder / "config.json").exists():
            raise ModelLoadError(
                f"the embedded model is missing from {folder}; train it with `python -m neurolab train`"
            )
        return str(folder), folder
    name = name.strip()
    candidate = Path(name).expanduser()
    if candidate.exists():
        if not candidate.is_dir() or not (candidate / "config.json").exists():
            raise ModelLoadError(f"{candidate} is not a model folder (it needs a config.json)")
        if not any(candidate.glob("*.safetensors")):
            raise ModelLoadError(
                f"{candidate} has no .safetensors weights; neurolab never loads pickled weights (.bin/.pt). "
                "Convert them once with safetensors, or pick a model that ships safetensors."
            )
        return str(candidate.resolve()), candidate.resolve()
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise ModelLoadError(f"no model folder at {name!r}, and it is not a Hugging Face model id either")
    return name, None


def _load_uncached(name: str | None, device: str, dtype: torch.dtype | None) -> LoadedModel:
    source, folder = _resolve(name)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"cannot load {name!r}: it is not a local model folder and the Hugging Face hub could not provide it "
            f"(offline, unknown id, or gated). Download it once where there is network, then pass its folder. "
            f"Detail: {first}"
        ) from None
    adapter = adapter_for(config.model_type)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        hf = AutoModelForCausalLM.from_pretrained(
            source, trust_remote_code=False, use_safetensors=True,
            dtype=dtype or (torch.float32 if device == "cpu" else "auto"),
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the weights or tokenizer of {name!r}: {error}") from None
    hf = hf.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    numbers = number_token_ids(tokenizer)
    if not numbers:
        raise ModelLoadError(f"{name!r}: its tokenizer has no single-token integers, so no arithmetic grid exists")
    lm = TransformersModel(hf, tokenizer=tokenizer, task="text-generation")
    revision = getattr(config, "_commit_hash", None)
    return LoadedModel(
        name=name or paths.EMBEDDED_MODEL_NAME, source=source, lm=lm, tokenizer=tokenizer, adapter=adapter,
        fingerprint=fingerprint(folder, config.to_dict(), revision), number_token_ids=numbers,
    )


_LOADED: dict[tuple[str, str, str], LoadedModel] = {}


def load_model(name: str | None = None, device: str = "cpu", dtype: torch.dtype | None = None) -> LoadedModel:
    """Load (once per process) a model by hub id or folder; ``None`` / ``"embedded"`` is the shipped model."""
    key = (_resolve(name)[0], device, str(dtype))
    with MODEL_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(name, device, dtype)
        return _LOADED[key]
