"""Load a model as a frozen, eval-mode TransformerBridge: hub id, local folder, shipped or
registry name, or a GGUF file (converted once into the headlens cache)."""

from __future__ import annotations

import gc
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from headlens.errors import HeadlensError, closest
from headlens.model.lm import freeze

if TYPE_CHECKING:
    from headlens.model.registry import ModelStatus

DType = Literal["float32", "float16", "bfloat16", "fp32", "fp16", "bf16"]
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

DEFAULT_MODEL = "tiny-icl"


def data_dir() -> Path:
    """The project's ``data/`` folder (override with ``HEADLENS_DATA_DIR``)."""
    env = os.environ.get("HEADLENS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def shipped_models() -> dict[str, Path]:
    """Models shipped in ``data/models/``: name -> folder (a folder with a config.json)."""
    root = data_dir() / "models"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


@dataclass(frozen=True)
class ModelInfo:
    """Identity of a loaded model, used in result metadata and cache keys."""

    name: str
    source: Literal["shipped", "local", "hub", "memory", "gguf"]
    revision: str | None
    fingerprint: str

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "revision": self.revision,
                "fingerprint": self.fingerprint}


def _folder_fingerprint(folder: Path) -> str:
    """Content hash of the folder's config, tokenizer and weight files (no mtimes, no path)."""
    from headlens.model.fingerprint import folder_fingerprint

    return folder_fingerprint(folder)


def resolve(model: str) -> tuple[str, Literal["shipped", "local", "hub", "gguf"]]:
    """Turn a user's ``--model`` into (path-or-hub-id, source), or raise with a fix.

    Order: shipped name, registry name (:func:`headlens.model.registry.resolve_registry`:
    pulled checkpoint, hub cache, hub, else the pull command), ``.gguf`` file (its converted
    folder in the cache, which may not exist yet: :func:`load_model` converts), checkpoint
    folder, hub id.
    """
    shipped = shipped_models()
    if model in shipped:
        return str(shipped[model]), "shipped"
    from headlens.model import gguf, registry

    if model in registry.registry():
        return registry.resolve_registry(model)
    path = Path(model).expanduser()
    if gguf.is_gguf(path):
        folder = gguf.converted_folder(path)
        if not gguf.is_converted(folder):
            gguf.check_supported(path)  # fail before any work, not after a 45 s conversion
        return str(folder), "gguf"
    if path.is_file():
        raise HeadlensError(
            f"load_model: {model!r} is a file; give a Hugging Face checkpoint folder (config.json, "
            f"weights, tokenizer files), a .gguf file, a hub id or a model name (headlens models)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HeadlensError(
                f"load_model: folder {path} has no config.json; point --model at a Hugging Face "
                f"checkpoint folder (config.json, weights, tokenizer files)")
        return str(path.resolve()), "local"
    looks_like_path = model.startswith((".", "/", "~")) or os.sep in model.strip("/").split("/", 1)[-1] \
        or path.suffix in {".json", ".safetensors", ".bin", ".gguf"} or model.count("/") > 1
    if looks_like_path or path.exists():
        raise HeadlensError(
            f"load_model: path {model!r} does not exist; give an existing checkpoint folder, a hub "
            f"id such as 'gpt2', or a shipped model ({', '.join(shipped) or 'none installed'})")
    named = [*shipped, *registry.registry()]
    if "/" not in model and named and model not in {"gpt2"}:
        near = closest(model, named)
        if near.startswith("did you mean"):
            raise HeadlensError(f"load_model: unknown model name {model!r}; {near}")
    return model, "hub"


def _offline_error(model: str, err: Exception) -> HeadlensError:
    from headlens.model.registry import not_present_error, registry

    if model in registry():
        return not_present_error(model)
    shipped = ", ".join(shipped_models()) or "none installed"
    return HeadlensError(
        f"load_model: cannot download {model!r} from the Hugging Face hub (offline, or no such "
        f"repository: {type(err).__name__}). Use a local checkpoint folder or a shipped model: "
        f"{shipped}")


def load_model(
    model: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: DType = "float32",
    revision: str | None = None,
    n_devices: int | None = None,
    device_map: str | dict | None = None,
):
    """Load ``model`` as a TransformerBridge in eval mode with every parameter frozen.

    Args:
        model: a shipped model name (``data/models/<name>``), a registry name (``headlens
            models``; ``headlens models pull NAME`` fetches it offline), a local Hugging Face
            checkpoint folder, a ``.gguf`` file (converted once into
            ``$HEADLENS_CACHE/models/<sha256>/``, about 45 s for 135M parameters), or a hub id
            (needs network).
        device: torch device; default CUDA when available, else CPU.
        dtype: one of float32/float16/bfloat16 (or fp32/fp16/bf16).
        revision: hub revision (branch, tag or commit).
        n_devices, device_map: multi-GPU split, passed through to TransformerLens.

    Returns:
        A ``TransformerBridge`` with ``.headlens_info`` (:class:`ModelInfo`) attached.
    """
    if dtype not in _DTYPES:
        raise HeadlensError(f"load_model: unknown dtype {dtype!r}; {closest(dtype, _DTYPES)}")
    target, source = resolve(model)
    if device is None and device_map is None and n_devices is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from transformer_lens.model_bridge import TransformerBridge

    kwargs: dict = {"dtype": _DTYPES[dtype]}
    if device is not None:
        kwargs["device"] = device
    if device_map is not None:
        kwargs["device_map"] = device_map
    if n_devices is not None:
        kwargs["n_devices"] = n_devices
    if revision is not None:
        kwargs["revision"] = revision
    if source == "gguf" and not Path(target, "config.json").is_file():
        from headlens.model.gguf import ensure_converted

        target = str(ensure_converted(model))
    if source != "hub":
        _check_tokenizer_files(Path(target))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keep our own progress bars readable
    except ImportError:  # pragma: no cover
        pass
    try:
        with warnings.catch_warnings(), _gc_paused():
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers(target, **kwargs)
    except HeadlensError:
        raise
    except (OSError, ValueError) as err:
        text = str(err).lower()
        if source == "hub" and any(s in text for s in ("connect", "offline", "resolve", "not a valid model identifier", "repository not found", "does not appear")):
            raise _offline_error(model, err) from err
        if "tokenizer" in text:
            raise HeadlensError(f"load_model: could not load a tokenizer for {model!r}: {err}") from err
        raise HeadlensError(f"load_model: could not load {model!r}: {str(err).splitlines()[0]}") from err
    except Exception as err:  # huggingface_hub raises its own hierarchy
        if source == "hub" and type(err).__module__.startswith(("huggingface_hub", "requests", "httpx")):
            raise _offline_error(model, err) from err
        if type(err).__name__ == "SafetensorError" or "failed reading zip archive" in str(err):
            raise HeadlensError(f"load_model: the weight files of {model!r} cannot be read "
                                f"({str(err).splitlines()[0]}); they are truncated or corrupt: copy or "
                                f"save the checkpoint again") from err
        raise
    if bridge.tokenizer is None:
        raise HeadlensError(f"load_model: {model!r} has no tokenizer; add tokenizer files to the folder")
    freeze(bridge)
    bridge.headlens_info = identify(model, revision=revision)
    return bridge


def identify(model: str, *, revision: str | None = None) -> ModelInfo:
    """The :class:`ModelInfo` that :func:`load_model` attaches, computed without loading."""
    target, source = resolve(model)
    if source == "gguf":  # the folder is named by the GGUF file's SHA-256: same before and after
        return ModelInfo(name=model if not model.lower().endswith(".gguf")
                         else str(Path(model).expanduser().resolve()),
                         source="gguf", revision=None, fingerprint=Path(target).name[:16])
    fingerprint = (_folder_fingerprint(Path(target)) if source != "hub"
                   else hashlib.sha256(f"{model}@{revision}".encode()).hexdigest()[:16])
    return ModelInfo(name=model if source != "local" else str(Path(target)), source=source,
                     revision=revision, fingerprint=fingerprint)


def torch_dtype(dtype: str) -> torch.dtype:
    """``float32``/``fp16``/... -> torch dtype, with a clear error for anything else."""
    if dtype not in _DTYPES:
        raise HeadlensError(f"unknown dtype {dtype!r}; {closest(dtype, _DTYPES)}")
    return _DTYPES[dtype]


def _check_tokenizer_files(folder: Path) -> None:
    names = {"tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "spiece.model"}
    if not any((folder / n).is_file() for n in names):
        raise HeadlensError(
            f"load_model: no tokenizer files in {folder} (expected tokenizer.json or "
            f"tokenizer.model); save the tokenizer there with tokenizer.save_pretrained(folder)")


def model_info(model) -> ModelInfo:
    """The :class:`ModelInfo` of a bridge (one built in memory gets a parameter hash)."""
    info = getattr(model, "headlens_info", None)
    if info is not None:
        return info
    from headlens.model.fingerprint import bridge_fingerprint

    return ModelInfo(name=getattr(model.cfg, "model_name", "in-memory"), source="memory",
                     revision=None, fingerprint=bridge_fingerprint(model))


class _gc_paused:
    """Pause the cyclic garbage collector while a bridge is built.

    TransformerBridge construction allocates hundreds of thousands of small objects (a
    deepcopy of the block template per layer, a hook scan over every submodule) and almost
    none become garbage; the collections they trigger re-walk the whole heap (every torch,
    transformers and TransformerLens object). Measured on SmolLM2-135M (30 layers, 3,216
    modules), 2 CPU cores, CPU seconds: load_model in a fresh process 1.17 -> 0.90 (plain
    ``from_pretrained`` + tokenizer: 0.60); boot_transformers in a warm process 0.85 -> 0.61.
    """

    def __enter__(self):
        self.was_enabled = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        if self.was_enabled:
            gc.enable()
        return False


def available_models() -> list[ModelStatus]:
    """Every model name ``--model`` accepts: shipped models, then the registry.

    Returns:
        :class:`headlens.model.registry.ModelStatus` rows (name, source, size, present).
    """
    from headlens.model.registry import registry_status, shipped_status

    return ([shipped_status(name, folder) for name, folder in shipped_models().items()]
            + registry_status())
