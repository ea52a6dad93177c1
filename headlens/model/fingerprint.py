"""The one model fingerprint: a hash of everything that determines a model's outputs.

- A checkpoint folder (shipped or local): sha256 over ``config.json``, the tokenizer files and
  every weight file's bytes (names included; no sizes, mtimes or paths, so a copied
  checkout has the same fingerprint). File digests are memoised (see
  :func:`headlens.results.cache.file_digest`), so a large checkpoint is read once.
- A model held in memory (:func:`headlens.model.surgery.wrap_hf`: pruned or healed models, a
  bridge built by hand): sha256 over the config and every parameter tensor's name, dtype,
  shape and bytes, so two models differing in any single weight differ.
- A hub id that is not a local folder: ``name@revision`` (the hub's own content address).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from headlens.results.cache import ModelKey, file_digest

FINGERPRINT_CHARS = 16
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# files besides the weights that change what the model computes on a prompt
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
               "sentencepiece.bpe.model")


def folder_fingerprint(folder: str | Path) -> str:
    """Hash of a checkpoint folder's config, tokenizer and weight files (their bytes)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.name in MODEL_FILES or f.suffix in WEIGHT_SUFFIXES):
            h.update(f"{f.name}:{file_digest(f)}\n".encode())
    return h.hexdigest()[:FINGERPRINT_CHARS]


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (any dtype, bfloat16 included), on the CPU."""
    flat = t.detach().reshape(-1).contiguous()
    return flat.view(torch.uint8).cpu().numpy().tobytes()


def param_fingerprint(module: nn.Module, config: dict | None = None) -> str:
    """Hash of ``config`` and every parameter of ``module`` (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps(config or {}, sort_keys=True, default=str).encode())
    named = module.named_parameters() if hasattr(module, "named_parameters") else enumerate(module.parameters())
    with torch.no_grad():
        for name, p in named:
            h.update(f"{name}:{str(p.dtype).removeprefix('torch.')}:{tuple(p.shape)}\n".encode())
            h.update(tensor_bytes(p))
    return h.hexdigest()[:FINGERPRINT_CHARS]


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.float32`` / ``fp32`` / ``float32`` -> ``float32`` (the form keys use)."""
    text = str(dtype).removeprefix("torch.")
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16",
            "float": "float32"}.get(text, text)


def bridge_fingerprint(model) -> str:
    """:func:`param_fingerprint` of a bridge built in memory, with its config."""
    config = {k: str(v) for k, v in sorted(vars(model.cfg).items())}
    return param_fingerprint(model, config)


def model_key(model) -> ModelKey:
    """The :class:`~headlens.results.cache.ModelKey` of a bridge (or pass a ModelKey through).

    The fingerprint is the one :func:`headlens.model.loading.model_info` reports: the
    ``headlens_info`` that loading or :func:`~headlens.model.surgery.wrap_hf` attached, else a
    hash of every parameter.
    """
    if isinstance(model, ModelKey):
        return model
    info = getattr(model, "headlens_info", None)
    fingerprint = info.fingerprint if info is not None else bridge_fingerprint(model)
    name = info.name if info is not None else getattr(model.cfg, "model_name", "in-memory")
    param = next(model.parameters())
    return ModelKey(fingerprint=fingerprint, dtype=dtype_name(param.dtype), name=name,
                    shape=(int(model.cfg.n_layers), int(model.cfg.n_heads)))


def config_shape(folder: str | Path) -> tuple[int, int] | None:
    """(n_layers, n_heads) read from a checkpoint folder's config.json, without loading it."""
    try:
        cfg = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = {**cfg, **(cfg.get("text_config") or {})}
    layers = next((cfg[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if isinstance(cfg.get(k), int)), None)
    heads = next((cfg[k] for k in ("num_attention_heads", "n_head", "num_heads") if isinstance(cfg.get(k), int)), None)
    return (layers, heads) if layers and heads else None
