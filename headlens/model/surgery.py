"""Model surgery on the Hugging Face module under a bridge: remove layers, rewrap, save.

Removing layers l .. l+n-1 rebuilds the HF layer list and config (a real, smaller
checkpoint: x(l) then feeds the old layer l+n). A bridge is rewrapped around the result so
every headlens analysis runs on it unchanged. Each surviving layer computes exactly what it
computed before: GPT-2 with ``scale_attn_by_inverse_layer_idx`` divides attention scores by
``layer_idx + 1``, so a layer that moves from index i to j gets its query projection scaled
by (j + 1) / (i + 1), which keeps its original 1 / (i + 1) in memory, after saving and
reloading, and in any other program that loads the checkpoint.

Saving (:func:`save_model`) never overwrites the model's own folder, writes into a temporary
folder beside the target and renames it into place, and refuses non-finite weights.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from headlens.errors import HeadlensError
from headlens.model.lm import freeze
from headlens.results.outputs import check_out_dir

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
    for new_index, (old_index, layer) in enumerate(zip(keep, getattr(owner, attr))):
        _keep_inverse_layer_scale(hf.config, layer, old_index, new_index)
        for sub in layer.modules():  # the KV cache is indexed by layer_idx
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = new_index
    hf.config.num_hidden_layers = len(keep)
    for key in _PER_LAYER_CONFIG:
        value = getattr(hf.config, key, None)
        if isinstance(value, (list, tuple)) and len(value) == n_layers:
            setattr(hf.config, key, [value[i] for i in keep])
    return hf


def _keep_inverse_layer_scale(config, layer: nn.Module, old: int, new: int) -> None:
    """Keep a GPT-2 layer's attention scale 1/(old+1) when its ``layer_idx`` becomes ``new``.

    With ``scale_attn_by_inverse_layer_idx`` GPT-2 computes scores as
    ``q.k * d_head**-0.5 / (layer_idx + 1)`` (Hugging Face precomputes it as
    ``attn.scaling``; TransformerLens recomputes it from ``layer_idx``; a reloaded checkpoint
    derives it from the layer's position). Multiplying the query columns of ``c_attn``
    (weight and bias) by ``(new + 1) / (old + 1)`` makes every one of them give the old scores.
    """
    if old == new or not getattr(config, "scale_attn_by_inverse_layer_idx", False):
        return
    attn = getattr(layer, "attn", None)
    c_attn = getattr(attn, "c_attn", None)
    if c_attn is None or getattr(attn, "is_cross_attention", False):
        raise HeadlensError(f"remove_layers: {type(layer).__name__} uses scale_attn_by_inverse_layer_idx "
                            f"but has no GPT-2 style c_attn; its attention scale would change, so "
                            f"layer removal is not supported for this model type")
    d = int(config.hidden_size)
    factor = (new + 1) / (old + 1)
    with torch.no_grad():  # Conv1D: out = x @ weight + bias, weight [d_model, 3 d_model], q first
        c_attn.weight[:, :d] *= factor
        if c_attn.bias is not None:
            c_attn.bias[:d] *= factor
    if isinstance(getattr(attn, "scaling", None), float):
        attn.scaling = attn.scaling * (old + 1) / (new + 1)  # what HF computes for index ``new``


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
    freeze(bridge)
    from headlens.model.fingerprint import param_fingerprint

    # every parameter's bytes: two healings that differ only in FFN weights differ here
    bridge.headlens_info = ModelInfo(name=name, source="memory", revision=None,
                                     fingerprint=param_fingerprint(hf, hf.config.to_dict()))
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
    inherit_source(bridge, model)
    return bridge


def inherit_source(new, parent) -> None:
    """Record on ``new`` the folder ``parent`` came from, so saving never overwrites it."""
    folders = input_folders(parent)
    new.headlens_source = str(folders[0]) if folders else None


MARKER = "headlens.json"


def is_headlens_checkpoint(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a checkpoint written by :func:`save_model` (its marker file)."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and "removed_layers" in marker and (folder / "config.json").is_file()


def input_folders(model) -> list[Path]:
    """Folders a bridge (or a ``--model`` string) was loaded from, symlinks resolved.

    A bridge built in memory (:func:`remove_layers`, healing) carries its parent's folder in
    ``headlens_source``; Hugging Face also records it in ``config._name_or_path``.
    """
    found: list[Path] = []
    if isinstance(model, (str, os.PathLike)):
        from headlens.model.loading import resolve

        try:
            target, source = resolve(str(model))
        except HeadlensError:
            return []
        return [Path(target).resolve()] if source != "hub" else []
    for value in (getattr(model, "headlens_source", None),
                  getattr(getattr(getattr(model, "original_model", None), "config", None), "_name_or_path", None)):
        if value and Path(value).is_dir():
            found.append(Path(value).resolve())
    return found


def check_model_out(folder: str | os.PathLike, *, inputs: Iterable = (), option: str = "--out") -> Path:
    """Raise unless a model may be saved in ``folder``; return it. Nothing is written.

    Allowed: a missing or empty folder, or one that holds an earlier headlens checkpoint
    (:func:`is_headlens_checkpoint`; it is replaced as a whole). Refused: a file, an unwritable
    place, the folder of an input model or any folder containing one (symlinks resolved), and
    a non-empty folder of other files.

    Args:
        inputs: bridges, ``--model`` strings or folders the new model is computed from.
    """
    folder = check_out_dir(folder, option=option)
    target = folder.resolve()
    protected: list[Path] = []
    for item in inputs:
        protected += input_folders(item) if not isinstance(item, Path) else [item.resolve()]
    for src in protected:
        if src == target or target in src.parents:
            raise HeadlensError(f"{option} {folder} would overwrite the input model in {src}; "
                                f"save the new model to another folder")
    if folder.is_dir() and any(folder.iterdir()) and not is_headlens_checkpoint(folder):
        raise HeadlensError(f"{option} {folder} is a non-empty folder that is not a headlens checkpoint "
                            f"(no {MARKER}); give a new or empty folder, or remove it first")
    return folder


def _non_finite(hf: nn.Module) -> list[str]:
    with torch.no_grad():
        return [name for name, p in hf.named_parameters() if not bool(torch.isfinite(p).all())]


def _replace_folder(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` to ``dest``, replacing an old ``dest`` only at the end."""
    if not dest.exists() and not dest.is_symlink():
        os.rename(tmp, dest)
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def save_model(model, folder: str | os.PathLike, *, inputs: Iterable = ()) -> Path:
    """Save a bridge as a Hugging Face checkpoint (config, safetensors, tokenizer) in ``folder``.

    The checkpoint is written to a temporary folder beside ``folder`` and renamed into place,
    so an interrupted save leaves the old contents intact. ``folder`` is checked first with
    :func:`check_model_out` (never the model's own folder or ``inputs``' folders; an earlier
    headlens checkpoint is replaced whole; any other non-empty folder is refused).

    Raises:
        HeadlensError: a refused folder, or weights that are NaN or infinite (a diverged
            healing run): such a model is never saved.
    """
    folder = check_model_out(folder, inputs=[model, *inputs])
    hf = clean_hf_copy(model)
    bad = _non_finite(hf)
    if bad:
        raise HeadlensError(f"save_model: {len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}); "
                            f"refusing to save a broken model to {folder}; rerun what produced it "
                            f"(e.g. healing with a smaller --lr)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a saved model reads like any folder
    try:
        hf.save_pretrained(str(tmp), safe_serialization=True)
        model.tokenizer.save_pretrained(str(tmp))
        removed = getattr(model, "headlens_removed", None)
        from headlens.model.loading import model_info

        (tmp / MARKER).write_text(json.dumps(
            {"model": model_info(model).name, "removed_layers": removed}, indent=1) + "\n")
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
