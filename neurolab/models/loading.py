"""The model core: load any causal LM (the embedded one by default) through nnsight, describe it, guard it.

Every model, the embedded one included, goes through :func:`load_model`: ``from_pretrained`` on a folder or a hub
id with ``trust_remote_code=False`` and safetensors only, wrapped in nnsight's ``TransformersModel``. What differs
between families is looked up in :mod:`neurolab.models.adapters`; nothing here branches on the family.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nnsight import TransformersModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .. import paths
from ..errors import ModelLoadError
from .adapters import ArchitectureAdapter, adapter_for, get_module, hook_name, value_vectors
from .devices import dtype_name, resolve_device, resolve_dtype
from .fingerprints import fingerprint, model_fingerprint

#: One lock for every use of every loaded model: nnsight must not trace a model from two threads at once, and
#: Streamlit runs each browser session in its own thread. Reentrant, so core functions may nest.
MODEL_LOCK = threading.RLock()

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_NUMBER_SCAN_LIMIT = 10_000


@dataclass(eq=False)
class LoadedModel:
    """A loaded model with what every analysis needs to know about it."""

    name: str  # as the user wrote it ("embedded", a hub id, a path)
    source: str  # the folder or hub id actually loaded
    lm: TransformersModel
    tokenizer: PreTrainedTokenizerBase
    adapter: ArchitectureAdapter
    weights_fingerprint: str  # the weights alone (content hash, or the hub commit)
    dtype: str  # what the weights run in: float32, bfloat16, float16
    revision: str | None  # hub commit or revision, None for a local folder
    fingerprint: str  # weights + dtype: the key every cached result carries
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
    def device_map(self) -> dict | None:
        """Accelerate's placement when the model is spread over several devices, else None."""
        placement = getattr(self.hf, "hf_device_map", None)
        return placement if placement and len(set(placement.values())) > 1 else None

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
            "fingerprint": f"{self.fingerprint} (weights {self.weights_fingerprint}, {self.dtype})",
            "device": str(self.device) if not self.device_map else f"spread: {self.device_map}",
            "revision": self.revision or "local folder",
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
        """``[d_mlp, max_single_token + 1]`` float32 on the host: each value vector's direct logit on each number
        token (computed on the model's device; analyses that read it run on the host).

        ``W_out[n] * g @ W_U[numbers].T`` with ``g`` the final norm's scale, where the model has one (the norm's
        centring and division by the residual's RMS are left out: they depend on the whole residual stream).
        """
        vectors = self.value_vectors(layer).float()
        scale = getattr(get_module(self.hf, self.adapter.final_norm), "weight", None)
        if scale is not None:
            vectors = vectors * scale.detach().float()
        unembed = get_module(self.hf, self.adapter.unembed).weight.detach().float()
        return (vectors @ unembed[self.number_token_ids].T).cpu()

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


def _load_uncached(name: str | None, device: str, dtype: torch.dtype, revision: str | None,
                   device_map: str | dict | None) -> LoadedModel:
    source, folder = _resolve(name)
    if revision and folder is not None:
        raise ModelLoadError(f"--revision {revision!r} applies to hub ids; {folder} is a local folder (one revision)")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, revision=revision)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"cannot load {name!r}{f' at revision {revision!r}' if revision else ''}: it is not a local model folder "
            f"and the Hugging Face hub could not provide it (offline, unknown id or revision, or gated). Download it "
            f"once where there is network, then pass its folder. Detail: {first}"
        ) from None
    adapter = adapter_for(config.model_type)
    hf_logging.disable_progress_bar()  # transformers' own "Loading weights" bar: the CLI and pages draw their own
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, revision=revision)
        # Straight into the dtype and onto the device (or across devices with accelerate's device_map="auto"):
        # never a float32 copy on the CPU first.
        hf = AutoModelForCausalLM.from_pretrained(
            source, trust_remote_code=False, use_safetensors=True, revision=revision, dtype=dtype,
            device_map=device_map if device_map is not None else device,
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load the weights or tokenizer of {name!r}: {error}") from None
    hf.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    numbers = number_token_ids(tokenizer)
    if not numbers:
        raise ModelLoadError(f"{name!r}: its tokenizer has no single-token integers, so no arithmetic grid exists")
    # Tell the wrapper's pipeline where the model already is, so nnsight never moves it on its own (a model spread
    # by a device map is never moved by the pipeline).
    placement = {} if getattr(hf, "hf_device_map", None) and len(set(hf.hf_device_map.values())) > 1 else {
        "device": next(hf.parameters()).device}
    lm = TransformersModel(hf, tokenizer=tokenizer, task="text-generation", **placement)
    commit = getattr(config, "_commit_hash", None)
    weights = fingerprint(folder, config.to_dict(), commit)
    return LoadedModel(
        name=name or paths.EMBEDDED_MODEL_NAME, source=source, lm=lm, tokenizer=tokenizer, adapter=adapter,
        weights_fingerprint=weights, dtype=dtype_name(dtype), revision=commit or revision,
        fingerprint=model_fingerprint(weights, dtype_name(dtype)), number_token_ids=numbers,
    )


#: loaded models, least recently used first; a model dropped here lives on while a caller still holds it
_LOADED: OrderedDict[tuple, LoadedModel] = OrderedDict()
#: parameters (bytes) the loaded models may hold together; the most recently used one is always kept
LOADED_BYTES = 8 * 2**30


def load_model(name: str | None = None, device: str | None = "auto", dtype: str | torch.dtype | None = "auto",
               revision: str | None = None, device_map: str | dict | None = None) -> LoadedModel:
    """Load (once per process) a model by hub id or folder; ``None`` / ``"embedded"`` is the shipped model.

    ``device``: auto, cpu, cuda or cuda:N; ``dtype``: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16,
    float16; ``revision``: a hub branch, tag or commit (Pythia's training checkpoints: ``step1000`` ...);
    ``device_map="auto"`` spreads a model too large for one GPU over the machine's GPUs (accelerate).
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    key = (_resolve(name)[0], device, str(torch_dtype), revision, json.dumps(device_map, sort_keys=True))
    with MODEL_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_uncached(name, device, torch_dtype, revision, device_map)
        _LOADED.move_to_end(key)
        while len(_LOADED) > 1 and sum(_parameter_bytes(m) for m in _LOADED.values()) > LOADED_BYTES:
            _LOADED.popitem(last=False)
        return _LOADED[key]


def _parameter_bytes(model: LoadedModel) -> int:
    return sum(p.numel() * p.element_size() for p in model.hf.parameters())
