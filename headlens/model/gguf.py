"""GGUF files as Hugging Face checkpoints: hashed, checked, converted once into the cache.

A ``.gguf`` file (llama.cpp's format) is converted by transformers' GGUF loader, which
dequantizes every tensor to float32, into an ordinary Hugging Face folder at
``$HEADLENS_CACHE/models/<sha256 of the file's bytes>/``; every later load reads that folder.
The key is the content hash, so a renamed or copied file maps to the same folder and an
edited file to a new one. A small sidecar (``models/gguf-hashes.json``) remembers the hash
by (path, size, mtime) only so that a repeated ``--model file.gguf`` does not re-read the
file; it is never the identity.

Example:
    >>> folder = ensure_converted("SmolLM2-135M-Instruct.Q4_1.gguf")   # about 45 s, once
    >>> headlens.load_model("SmolLM2-135M-Instruct.Q4_1.gguf")          # the same folder
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from headlens.errors import HeadlensError
from headlens.results.cache import default_root
from headlens.results.scores import atomic_write_text

GGUF_MAGIC = b"GGUF"
CHUNK_BYTES = 1 << 22  # 4 MiB: hashing a 100 MB file takes a fraction of a second
HASHES_FILE = "gguf-hashes.json"
PROVENANCE_FILE = "headlens-gguf.json"
# llama.cpp architecture names that transformers reads under another name
# (transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint does the same renaming)
_ARCH_RENAMES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "t5encoder": "t5",
                 "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2"}
# GGUF metadata value types (gguf spec): fixed byte sizes; 8 = string, 9 = array
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"headlens: {message}", file=sys.stderr, flush=True)


def models_root(root: str | os.PathLike | None = None) -> Path:
    """``<cache root>/models``: converted and pulled checkpoints (cache root: ``$HEADLENS_CACHE``)."""
    return Path(root if root is not None else default_root()) / "models"


def is_gguf(path: str | os.PathLike) -> bool:
    """True when ``path`` is an existing file whose name ends in ``.gguf``."""
    p = Path(path).expanduser()
    return p.suffix.lower() == ".gguf" and p.is_file()


# ---------------------------------------------------------------------------- hashing

def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = CHUNK_BYTES) -> str:
    """SHA-256 hex digest of the file's bytes, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> str:
    """The file's content hash, remembered in the sidecar by (absolute path, size, mtime_ns).

    The sidecar only saves re-reading an unchanged file; a changed size or mtime hashes again.
    """
    p = Path(path).expanduser().resolve()
    st = p.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    sidecar = models_root(root) / HASHES_FILE
    try:
        known = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        known = {}
    hit = known.get(str(p)) if isinstance(known, dict) else None
    if isinstance(hit, dict) and all(hit.get(k) == v for k, v in stamp.items()) \
            and isinstance(hit.get("sha256"), str) and len(hit["sha256"]) == 64:
        return hit["sha256"]
    digest = sha256_file(p)
    known = known if isinstance(known, dict) else {}
    known[str(p)] = {**stamp, "sha256": digest}
    try:
        atomic_write_text(sidecar, json.dumps(known, indent=1, sort_keys=True))
    except OSError:  # a read-only cache only costs the speed-up
        pass
    return digest


def converted_folder(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint converted from ``path`` lives: ``models/<sha256 of its bytes>``."""
    return models_root(root) / file_sha256(path, root=root)


def is_converted(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a finished conversion (folders appear by atomic rename)."""
    return (Path(folder) / "config.json").is_file()


# ---------------------------------------------------------------------------- header

@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file declares: architecture, model name, and the type of every tensor.

    Attributes:
        version: GGUF format version (2 or 3).
        architecture: ``general.architecture`` as llama.cpp writes it (``llama``, ``qwen2`` ...).
        name: ``general.name`` or None.
        tensor_types: tensor type id -> number of tensors of that type.
    """

    version: int
    architecture: str
    name: str | None
    tensor_types: dict[int, int]

    def type_names(self) -> dict[str, int]:
        """Tensor type names (``Q4_1``, ``F32`` ...) -> counts."""
        return {_type_name(t): n for t, n in sorted(self.tensor_types.items())}


def _type_name(type_id: int) -> str:
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type {type_id}"


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Parse a GGUF file's metadata and tensor table (not its data) in well under a second.

    gguf's own ``GGUFReader`` builds numpy views of every metadata array (seconds for a
    49k-token vocabulary); this walks the same layout (GGUF spec v2/v3: little-endian,
    uint64 lengths) and keeps only what the conversion needs.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse_header(mm, p)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
        if isinstance(err, HeadlensError):
            raise
        raise HeadlensError(f"load_model: {p} is not a readable GGUF file ({type(err).__name__}: "
                            f"{err}); give a .gguf file written by llama.cpp (GGUF v2 or v3)") from err


def _parse_header(mm, path: Path) -> GGUFHeader:
    if mm[:4] != GGUF_MAGIC:
        raise HeadlensError(f"load_model: {path} does not start with the GGUF magic bytes; give a "
                            f".gguf file written by llama.cpp, or a Hugging Face checkpoint folder")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
    if version not in (2, 3):
        raise HeadlensError(f"load_model: {path} is GGUF version {version}; headlens reads versions "
                            f"2 and 3 (re-export the model with a current llama.cpp)")
    off = 24

    def string(o: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", mm, o)
        return mm[o + 8:o + 8 + n].decode("utf-8"), o + 8 + n

    def skip_value(vtype: int, o: int) -> int:
        if vtype in _SCALAR_BYTES:
            return o + _SCALAR_BYTES[vtype]
        if vtype == _STRING:
            (n,) = struct.unpack_from("<Q", mm, o)
            return o + 8 + n
        if vtype == _ARRAY:
            etype, count = struct.unpack_from("<IQ", mm, o)
            o += 12
            if etype in _SCALAR_BYTES:
                return o + count * _SCALAR_BYTES[etype]
            for _ in range(count):
                o = skip_value(etype, o)
            return o
        raise ValueError(f"unknown metadata value type {vtype}")

    meta: dict[str, str] = {}
    for _ in range(n_kv):
        key, off = string(off)
        (vtype,) = struct.unpack_from("<I", mm, off)
        off += 4
        if vtype == _STRING and key in ("general.architecture", "general.name"):
            meta[key], off = string(off)
        else:
            off = skip_value(vtype, off)
    types: dict[int, int] = {}
    for _ in range(n_tensors):
        _, off = string(off)
        (n_dims,) = struct.unpack_from("<I", mm, off)
        off += 4 + 8 * n_dims
        (ttype,) = struct.unpack_from("<I", mm, off)
        off += 4 + 8  # type, data offset
        types[ttype] = types.get(ttype, 0) + 1
    if "general.architecture" not in meta:
        raise HeadlensError(f"load_model: {path} has no general.architecture field; give a GGUF "
                            f"file of a language model written by llama.cpp")
    return GGUFHeader(version=version, architecture=meta["general.architecture"],
                      name=meta.get("general.name"), tensor_types=types)


# ---------------------------------------------------------------------------- support

def supported_architectures() -> list[str]:
    """Architectures transformers' GGUF loader converts (its ``GGUF_SUPPORTED_ARCHITECTURES``)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def dequantizable_types() -> list[str]:
    """Tensor types the ``gguf`` package dequantizes (F32, F16 and its quantisation classes)."""
    import gguf.quants

    traits = getattr(gguf.quants, "_type_traits", None)
    names = {"F32", "F16"} | ({t.name for t in traits} if isinstance(traits, dict) else set())
    return sorted(names)


def check_supported(path: str | os.PathLike, header: GGUFHeader | None = None) -> GGUFHeader:
    """Raise a one-line HeadlensError unless transformers can convert ``path``; return its header."""
    header = header or read_header(path)
    arch = header.architecture
    archs = supported_architectures()
    if arch not in archs and _ARCH_RENAMES.get(arch) not in archs:
        raise HeadlensError(
            f"load_model: GGUF architecture {arch!r} of {Path(path).name} is not supported by "
            f"transformers' GGUF loader; supported: {', '.join(archs)}; convert the model to a "
            f"Hugging Face folder another way and pass the folder")
    ok = set(dequantizable_types())
    bad = sorted(n for n in header.type_names() if n not in ok)
    if bad:
        raise HeadlensError(
            f"load_model: GGUF tensor type {', '.join(bad)} in {Path(path).name} cannot be "
            f"dequantized by the gguf package; supported: {', '.join(sorted(ok))}; use a GGUF "
            f"file with one of those quantisation types")
    return header


# ---------------------------------------------------------------------------- conversion

def ensure_converted(path: str | os.PathLike, *, root: str | os.PathLike | None = None,
                     log: Log | None = _stderr, provenance: dict | None = None,
                     sha256: str | None = None) -> Path:
    """The converted checkpoint folder of the GGUF file ``path``, converting it if needed.

    Conversion (about 45 s for a 135M model on 2 CPU cores) loads tokenizer and model with
    ``from_pretrained(folder, gguf_file=name)`` (float32), clears the GGUF quantizer so
    ``save_pretrained`` accepts the model, saves both into a temporary folder beside the
    target and renames it into place, so a killed conversion leaves nothing half-written and
    two concurrent ones both end with one complete folder.

    Args:
        path: the ``.gguf`` file.
        root: cache root (default ``$HEADLENS_CACHE`` or ``~/.cache/headlens``).
        log: called with one-line progress messages (None: silent; transformers' per-tensor
            progress bar shows when ``log`` is set).
        provenance: extra fields for ``headlens-gguf.json`` in the folder (e.g. the registry
            entry it was pulled for).
        sha256: the file's SHA-256 when the caller has just computed it from the bytes (a
            pull hashes while extracting); otherwise it is computed here.

    Returns:
        ``<root>/models/<sha256>/`` holding config.json, model.safetensors and tokenizer files.
    """
    src = Path(path).expanduser().resolve()
    if not src.is_file():
        raise HeadlensError(f"load_model: GGUF file {path!r} does not exist; give an existing "
                            f".gguf file")
    sha = sha256 or file_sha256(src, root=root)
    folder = models_root(root) / sha
    if is_converted(folder):
        return folder
    header = check_supported(src)
    say = log or (lambda m: None)
    mb = src.stat().st_size / 1e6
    types = ", ".join(f"{k} x{v}" for k, v in header.type_names().items())
    say(f"converting {src.name} ({mb:.0f} MB, {header.architecture}, tensors {types}) to a "
        f"Hugging Face checkpoint in {folder} (once; about a minute for 135M parameters on 2 CPU cores)")
    start = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{sha[:16]}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        _convert_into(src, tmp, show_progress=log is not None)
        info = {"gguf_file": src.name, "gguf_sha256": sha, "architecture": header.architecture,
                "gguf_name": header.name, "tensor_types": header.type_names(),
                "transformers_version": _transformers_version(), **(provenance or {})}
        (tmp / PROVENANCE_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not is_converted(folder):  # not a lost race with a concurrent conversion
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6
    say(f"converted {src.name} in {time.perf_counter() - start:.0f} s ({size:.0f} MB)")
    return folder


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _convert_into(src: Path, out: Path, *, show_progress: bool) -> None:
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if show_progress else hf_logging.disable_progress_bar)()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name,
                                                         dtype=torch.float32)
    except (ValueError, NotImplementedError, KeyError, OSError, ImportError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise HeadlensError(f"load_model: transformers could not convert {src.name} "
                            f"({type(err).__name__}: {first}); use a GGUF file of a supported causal "
                            f"language model, or a Hugging Face checkpoint folder") from err
    finally:
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
    # a GGUF-loaded model carries its quantizer; save_pretrained refuses until it is cleared
    # (the weights are already dequantized float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
