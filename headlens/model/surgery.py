"""Model surgery on the Hugging Face module under a bridge: remove layers, rewrap, save.

Removing layers l .. l+n-1 rebuilds the HF layer list and config (a real, smaller
checkpoint: x(l) then feeds the old layer l+n). A bridge is rewrapped around the result so
every headlens analysis runs on it unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from headlens.errors import HeadlensError

_LAYER_PATHS = ("transformer.h", "model.decoder.layers", "gpt_neox.layers", "model.layers")
_PER_LAYER_CONFIG = ("layer_types", "attention_layers")


def unwrap_hf(module: nn.Module) -> nn.Module:
    """Replace every TransformerLens bridge wrapper inside ``module`` by the HF module it wraps."""
    for name, child in list(module.named_children()):
        inner = child
        while isinstance(getattr(inner, "original_component", None), nn.Module):
            inner = inner.original_component
        if inner is not child:
            setattr(module, name, inner)
        unwrap_hf(inner)
    return module


def clean_hf_copy(model) -> nn.Module:
    """A deep copy of a bridge's Hugging Face model with the bridge wrappers removed."""
    return unwrap_hf(copy.deepcopy(model.original_model))


def _layer_list(hf: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    n_layers = hf.config.num_hidden_layers
    for path in _LAYER_PATHS:
        *parents, last = path.split(".")
        owner = hf
        for p in parents:
            owner = getattr(owner, p, None)
            if owner is None:
                break
        layers = getattr(owner, last, None) if owner is not None else None
        if isinstance(layers, nn.ModuleList) and len(layers) == n_layers:
            return owner, last, layers
    found = [(name, m) for name, m in hf.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) == n_layers]
    if len(found) != 1:
        raise HeadlensError(f"cannot find the decoder layer list of {type(hf).__name__}; supported: "
                            f"{', '.join(_LAYER_PATHS)}")
    name = found[0][0]
    owner = hf.get_submodule(name.rpartition(".")[0]) if "." in name else hf
    return owner, name.rpartition(".")[2], found[0][1]


def _check_block(n_layers: int, start: int, n: int) -> None:
    if n < 1 or n >= n_layers:
        raise HeadlensError(f"block size n must be in [1, {n_layers - 1}] for a {n_layers}-layer "
                            f"model (at least one layer must stay), got {n}")
    if start < 0 or start + n > n_layers:
        raise HeadlensError(f"block start must be in [0, {n_layers - n}] for n={n} on a "
                            f"{n_layers}-layer model, got {start}")


def deepest_block(n_layers: int, n: int) -> int:
    """Start of the simple baseline block: the n deepest layers except the last (L-1-n ... L-2)."""
    _check_block(n_layers, 0, n)
    return n_layers - 1 - n


def drop_hf_layers(hf: nn.Module, start: int, n: int) -> nn.Module:
    """Remove layers start..start+n-1 from a clean HF causal LM in place; fix config and layer_idx."""
    n_layers = hf.config.num_hidden_layers
    _check_block(n_layers, start, n)
    owner, attr, layers = _layer_list(hf)
    keep = [i for i in range(n_layers) if not start <= i < start + n]
    setattr(owner, attr, nn.ModuleList([layers[i] for i in keep]))
    for new_index, layer in enumerate(getattr(owner, attr)):
        for sub in layer.modules():  # the KV cache is indexed by layer_idx
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = new_index
    hf.config.num_hidden_layers = len(keep)
    for key in _PER_LAYER_CONFIG:
        value = getattr(hf.config, key, None)
        if isinstance(value, (list, tuple)) and len(value) == n_layers:
            setattr(hf.config, key, [value[i] for i in keep])
    return hf


def wrap_hf(hf: nn.Module, tokenizer, *, name: str, parent_name: str = "model"):
    """Wrap a clean HF causal LM as a frozen eval TransformerBridge (tokenizer reused)."""
    import warnings

    from transformer_lens.model_bridge import TransformerBridge

    from headlens.model.loading import ModelInfo

    hf = hf.eval()
    param = next(hf.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(parent_name, hf_model=hf, tokenizer=tokenizer,
                                                     device=str(param.device), dtype=param.dtype)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    import hashlib

    h = hashlib.sha256(json.dumps(hf.config.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for p in list(hf.parameters())[:8]:
            h.update(f"{float(p.float().sum()):.6e}".encode())
    bridge.headlens_info = ModelInfo(name=name, source="memory", revision=None,
                                     fingerprint=h.hexdigest()[:16])
    return bridge


def remove_layers(model, start: int, n: int):
    """A new frozen bridge without layers ``start .. start+n-1``; ``model`` is left unchanged.

    x(start) then feeds the old layer start+n. The removed layers are recorded in
    ``bridge.headlens_removed`` (indices of the input model).
    """
    _check_block(model.cfg.n_layers, start, n)
    from headlens.model.loading import model_info

    parent = model_info(model)
    hf = drop_hf_layers(clean_hf_copy(model), start, n)
    base = getattr(model.cfg, "model_name", parent.name)
    bridge = wrap_hf(hf, model.tokenizer, name=f"{parent.name}-minus-L{start}-{start + n - 1}",
                     parent_name=base)
    bridge.headlens_removed = list(range(start, start + n))
    return bridge


def save_model(model, folder: str | Path) -> Path:
    """Save a bridge as a Hugging Face checkpoint (config, safetensors, tokenizer) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf = clean_hf_copy(model)
    hf.save_pretrained(str(folder), safe_serialization=True)
    model.tokenizer.save_pretrained(str(folder))
    removed = getattr(model, "headlens_removed", None)
    from headlens.model.loading import model_info

    (folder / "headlens.json").write_text(json.dumps(
        {"model": model_info(model).name, "removed_layers": removed}, indent=1) + "\n")
    return folder
