"""Labelled score objects: values over (layer, head) or over layers, plus metadata; save/load."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from headlens.errors import HeadlensError

FORMAT_VERSION = 1


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def version() -> str:
    from headlens import __version__

    return __version__


@dataclass(frozen=True)
class Scores:
    """A score per head ([n_layers, n_heads]) or per layer ([n_layers]), with metadata.

    Attributes:
        values: the scores; float64 numpy array, never modified in place.
        metric: what was measured, e.g. ``prefix_matching``, ``copying``, ``head_importance``.
        model: model name (see :func:`headlens.loading.model_info`).
        meta: everything else that identifies the run (variant, task, shots, seeds, ...);
            ``headlens_version`` is always added.
        std: optional spread of ``values`` (same shape), e.g. across seeds.
    """

    values: np.ndarray
    metric: str
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    std: np.ndarray | None = None

    def __post_init__(self) -> None:
        vals = np.asarray(self.values, dtype=np.float64)
        if vals.ndim not in (1, 2):
            raise HeadlensError(f"Scores: values must be [n_layers] or [n_layers, n_heads], got shape {vals.shape}")
        vals.setflags(write=False)
        object.__setattr__(self, "values", vals)
        if self.std is not None:
            std = np.asarray(self.std, dtype=np.float64)
            if std.shape != vals.shape:
                raise HeadlensError(f"Scores: std shape {std.shape} != values shape {vals.shape}")
            std.setflags(write=False)
            object.__setattr__(self, "std", std)
        meta = dict(self.meta)
        meta.setdefault("headlens_version", version())
        object.__setattr__(self, "meta", meta)

    # --- shape -----------------------------------------------------------------------
    @property
    def per_head(self) -> bool:
        return self.values.ndim == 2

    @property
    def n_layers(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_heads(self) -> int | None:
        return int(self.values.shape[1]) if self.per_head else None

    @property
    def labels(self) -> list[str]:
        """``L{l}H{h}`` for heads (row-major), ``L{l}`` for layers."""
        if self.per_head:
            return [head_label(l, h) for l in range(self.n_layers) for h in range(self.values.shape[1])]
        return [f"L{l}" for l in range(self.n_layers)]

    @property
    def name(self) -> str:
        """Short human label: metric plus the identifying metadata."""
        parts = [self.metric]
        for key in ("task", "shots", "variant"):
            if key in self.meta and self.meta[key] is not None:
                parts.append(f"{key}={self.meta[key]}")
        return " ".join(parts)

    # --- queries ---------------------------------------------------------------------
    def top(self, k: int = 10) -> list[tuple[int, int, float]] | list[tuple[int, float]]:
        """The k highest entries, best first: (layer, head, value) or (layer, value)."""
        flat = self.values.ravel()
        order = np.argsort(-flat, kind="stable")[:k]
        if self.per_head:
            nh = self.values.shape[1]
            return [(int(i // nh), int(i % nh), float(flat[i])) for i in order]
        return [(int(i), float(flat[i])) for i in order]

    def to_frame(self):
        """Long-format DataFrame: layer, (head, label,) value[, std]."""
        import pandas as pd

        if self.per_head:
            layers, heads = np.indices(self.values.shape)
            df = pd.DataFrame({"layer": layers.ravel(), "head": heads.ravel(),
                               "label": self.labels, "value": self.values.ravel()})
        else:
            df = pd.DataFrame({"layer": np.arange(self.n_layers), "label": self.labels,
                               "value": self.values})
        if self.std is not None:
            df["std"] = self.std.ravel()
        df.attrs = {"metric": self.metric, "model": self.model, **self.meta}
        return df

    def with_values(self, values: np.ndarray, **meta: Any) -> Scores:
        """A copy with new values (same shape) and extra metadata."""
        return replace(self, values=values, std=None, meta={**self.meta, **meta})

    # --- io ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "metric": self.metric, "model": self.model,
                "meta": _jsonable(self.meta), "values": self.values.tolist(),
                "std": None if self.std is None else self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scores:
        if not isinstance(d, dict):
            raise HeadlensError(f"Scores.from_dict: a saved score file holds one JSON object, got "
                                f"{type(d).__name__}; pass a file written by Scores.save")
        try:
            return cls(values=np.asarray(d["values"], dtype=np.float64), metric=d["metric"],
                       model=d.get("model", ""), meta=d.get("meta", {}),
                       std=None if d.get("std") is None else np.asarray(d["std"], dtype=np.float64))
        except KeyError as err:
            raise HeadlensError(f"Scores.from_dict: missing key {err} in a saved score file") from err
        except (TypeError, ValueError) as err:  # ragged rows, strings, nested junk
            if isinstance(err, HeadlensError):
                raise
            raise HeadlensError(f"Scores.from_dict: 'values' (or 'std') of a saved score file is not a "
                                f"rectangular array of numbers ({str(err).splitlines()[0]}); rewrite it "
                                f"with Scores.save") from err

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (a ``.json`` file, or a folder that gets ``<metric>.json``)."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / f"{self.file_stem()}.json"
        atomic_write_text(path, json.dumps(self.to_dict()))
        return path

    def file_stem(self) -> str:
        parts = [self.metric]
        for key in ("task", "shots", "variant"):
            if self.meta.get(key) is not None:
                parts.append(str(self.meta[key]).replace("/", "_").replace(os.sep, "_"))
        return "-".join(parts)

    def run_stem(self) -> str:
        """:meth:`file_stem` plus seed and model, e.g. ``head_importance-copa-1-bansal-seed0-tiny-icl``,
        so runs with another seed or model written to one folder never overwrite each other."""
        seed = self.meta.get("seed")
        return "-".join([self.file_stem()] + ([f"seed{seed}"] if seed is not None else [])
                        + ([model_label(self.model)] if self.model else []))

    @property
    def fingerprint(self) -> str | None:
        """Content fingerprint of the model these scores were computed on (``meta``), if recorded."""
        fp = self.meta.get("model_fingerprint")
        return str(fp) if fp else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Scores:
        path = Path(path)
        if not path.is_file():
            raise HeadlensError(f"Scores.load: no file {path}; pass a .json written by Scores.save")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise HeadlensError(f"Scores.load: {path} is not valid JSON ({err})") from err
        except HeadlensError as err:
            raise HeadlensError(f"Scores.load: {path}: {err}") from err


def model_label(name: str) -> str:
    """A file-name-safe label of a model name: a folder's base name, a hub id with ``__`` for ``/``."""
    import re

    base = Path(name).name if os.path.isabs(name) or name.startswith((".", "~")) else name
    return re.sub(r"[^A-Za-z0-9._-]+", "__", base) or "model"


def check_same_model(scores: list[Scores], what: str, *, labels: list[str] | None = None,
                     fingerprint: str | None = None, model: str | None = None,
                     allow_other_model: bool = False) -> None:
    """Refuse to mix scores of different models (and, when given, scores of another model
    than ``fingerprint``/``model``): one-line :class:`HeadlensError` naming both models.

    The identity compared is ``meta["model_fingerprint"]`` (the model's content hash) when
    both sides carry one, else the model name when both have one; scores with neither are
    not compared. ``labels`` name the score sets in the message (e.g. their files);
    ``allow_other_model`` skips the check.
    """
    if allow_other_model:
        return
    labels = labels or [s.name for s in scores]
    items = [(s.fingerprint, s.model or None, label) for s, label in zip(scores, labels)]
    if fingerprint is not None or model is not None:
        items.insert(0, (fingerprint, model, "the loaded model"))
    for i in range(1, len(items)):
        for j in range(i):
            (fa, na, la), (fb, nb, lb) = items[j], items[i]
            differ = (fa != fb) if fa and fb else (na != nb) if na and nb else False
            if differ:
                ida = f"{na or '?'} [{fa or 'no fingerprint'}]"
                idb = f"{nb or '?'} [{fb or 'no fingerprint'}]"
                raise HeadlensError(
                    f"{what}: {lb} comes from another model ({idb}) than {la} ({ida}); compare scores "
                    f"of one model, or pass --allow-other-model if that is really meant")


def load_all(folder: str | os.PathLike) -> list[Scores]:
    """Every score file saved in ``folder`` (recursively), sorted by path."""
    folder = Path(folder)
    if not folder.exists():
        raise HeadlensError(f"load_all: folder {folder} does not exist")
    out = []
    for p in sorted(folder.rglob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(d, dict) and d.get("format") == FORMAT_VERSION and "values" in d and "metric" in d:
            out.append(Scores.from_dict(d))
    return out


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and rename, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj
