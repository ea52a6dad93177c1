"""The one on-disk result cache: content-keyed entries, validated on load, written atomically.

Every cached analysis owns one key function (``importance_key``, ``curve_key``,
``induction_key``, ``distances_key``) that builds a :class:`CacheKey` from what the result
is computed from: the model's content fingerprint and dtype (:class:`ModelKey`), a content
hash of the data (file bytes or generator arguments, never a path), every option that
changes the result, the analysis's own ``VERSION`` and the headlens version. The CLI, the
demo, the sweep and notebooks call the same key functions, so a result computed by one is a
hit for all of them.

An entry is ``root/<kind>/<digest>.json`` holding ``{"schema", "kind", "key", "parts",
"created", "value"}``: ``parts`` is what the key was hashed from, so a load is checked
against it (model fingerprint included), and then against the analysis's own validator
(shape n_layers x n_heads, finiteness). Anything unreadable or inconsistent (binary garbage,
``{}``, a list, another schema, a ``null`` inside the values, the wrong shape) is a miss
and gets recomputed; it never crashes a run. An unwritable root prints one warning line and
the run continues uncached. Entries are written through a temporary file and a rename, with
the permissions of an ordinary file (0644 under the usual umask).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headlens.errors import HeadlensError
from headlens.results.scores import _jsonable, atomic_write_text, version

SCHEMA = 1
DIGEST_CHARS = 24
# folders of the cache root that hold no result entries: converted checkpoints
# (headlens.model.gguf, managed by ``headlens models``) and memoised file digests
RESERVED = ("models", "file-digests")
_WARNED: set[str] = set()

Validator = Callable[[Any, "CacheKey"], bool]


def default_root() -> Path:
    """``$HEADLENS_CACHE`` or ``~/.cache/headlens``."""
    env = os.environ.get("HEADLENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "headlens"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form every key part is hashed in."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any, chars: int = DIGEST_CHARS) -> str:
    """sha256 (hex, first ``chars``) of ``obj``: bytes as they are, anything else as canonical JSON."""
    data = obj if isinstance(obj, bytes) else canonical_json(obj).encode()
    return hashlib.sha256(data).hexdigest()[:chars]


def array_digest(values: Any) -> str:
    """Content hash of a float array (float64, C order, shape included)."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    return digest(repr(arr.shape).encode() + arr.tobytes())


# ----------------------------------------------------------------------------- file digests

_FILE_DIGESTS: dict[tuple, str] = {}
_PERSIST_BYTES = 64 * 2**20  # files this large also remember their digest in the cache root


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes.

    Memoised by (real path, size, mtime, inode) in this process, and for files of 64 MiB or
    more also in ``<cache root>/file-digests/``, so a multi-GB checkpoint is read once, not
    per command. The digest itself depends only on the bytes: a copied file hashes the same.
    """
    p = Path(path)
    st = p.stat()
    stamp = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if stamp in _FILE_DIGESTS:
        return _FILE_DIGESTS[stamp]
    memo = default_root() / "file-digests" / f"{digest(list(stamp))}.json" if st.st_size >= _PERSIST_BYTES else None
    if memo is not None:
        try:
            saved = json.loads(memo.read_text())
            if saved.get("stamp") == list(stamp) and isinstance(saved.get("sha256"), str):
                _FILE_DIGESTS[stamp] = saved["sha256"]
                return saved["sha256"]
        except Exception:  # noqa: BLE001 - a missing or unreadable memo is recomputed
            pass
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(8 * 2**20), b""):
            h.update(block)
    _FILE_DIGESTS[stamp] = h.hexdigest()
    if memo is not None:
        try:
            atomic_write_text(memo, json.dumps({"stamp": list(stamp), "sha256": h.hexdigest()}))
        except OSError:
            pass
    return h.hexdigest()


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class ModelKey:
    """What identifies a model in a cache key: its content fingerprint and its dtype.

    Attributes:
        fingerprint: hash of the model's weights (see :mod:`headlens.model.fingerprint`).
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        name: for messages only (not part of the key).
        shape: (n_layers, n_heads) when known; used to validate loaded entries, not hashed.
    """

    fingerprint: str
    dtype: str
    name: str = field(default="", compare=False)
    shape: tuple[int, int] | None = field(default=None, compare=False)

    def part(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "dtype": self.dtype}


@dataclass(frozen=True)
class CacheKey:
    """One entry's address: its kind and the digest of everything it is computed from.

    Build one with :meth:`make`; ``parts`` (as canonical JSON) is stored in the entry and
    compared on load. ``shape`` (the model's n_layers, n_heads) is carried for validators.
    """

    kind: str
    parts_json: str
    digest: str
    shape: tuple[int, int] | None = field(default=None, compare=False)

    @classmethod
    def make(cls, kind: str, *, shape: tuple[int, int] | None = None, **parts: Any) -> CacheKey:
        """A key of ``kind`` over ``parts`` plus the headlens version."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", kind) or kind in RESERVED:
            raise HeadlensError(f"CacheKey: kind {kind!r} must be a plain folder name (letters, digits, _ . -) "
                                f"other than {', '.join(RESERVED)}")
        text = canonical_json({**parts, "kind": kind, "headlens_version": version()})
        return cls(kind=kind, parts_json=text, digest=digest(text.encode()), shape=shape)

    @property
    def parts(self) -> dict[str, Any]:
        return json.loads(self.parts_json)

    def __str__(self) -> str:
        return f"{self.kind}/{self.digest}"


# ----------------------------------------------------------------------------- validators


def finite_array(values: Any, shape: tuple[int, ...] | None = None) -> bool:
    """True when ``values`` is a numeric array (of ``shape`` when given) with no NaN/inf/null."""
    try:
        arr = np.asarray(values, dtype=np.float64)  # null -> nan, ragged -> ValueError
    except (TypeError, ValueError):
        return False
    if shape is not None and arr.shape != tuple(shape):
        return False
    return bool(np.isfinite(arr).all())


def valid_scores(d: Any, shape: tuple[int, ...] | None, fingerprint: str | None = None) -> bool:
    """A saved :class:`~headlens.results.scores.Scores` dict of ``shape``, finite, of the model."""
    if not isinstance(d, dict) or not isinstance(d.get("metric"), str) or not isinstance(d.get("meta", {}), dict):
        return False
    if not finite_array(d.get("values"), shape):
        return False
    if d.get("std") is not None and not finite_array(d["std"], np.shape(d["values"])):
        return False
    stored = (d.get("meta") or {}).get("model_fingerprint")
    return fingerprint is None or stored is None or stored == fingerprint


# ----------------------------------------------------------------------------- the cache


def _warn_once(root: Path, err: BaseException) -> None:
    if str(root) in _WARNED:
        return
    _WARNED.add(str(root))
    reason = getattr(err, "strerror", None) or str(err)
    print(f"headlens: warning: cannot write the result cache {root} ({type(err).__name__}: {reason}); "
          f"continuing without caching (set HEADLENS_CACHE to a writable folder)", file=sys.stderr)


class ResultCache:
    """JSON entries under ``root/<kind>/<digest>.json`` (see the module docstring).

    Attributes:
        hits, misses: lookups answered from disk / computed by :meth:`get_or_compute`.
        invalid: entries found on disk but rejected (unreadable, inconsistent, invalid).

    Example:
        >>> cache = ResultCache()
        >>> value = cache.get_or_compute(key, compute, validate=check)
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_root()
        self.enabled = enabled
        self.hits = self.misses = self.invalid = 0
        self.writable = enabled and self._probe()

    def _probe(self) -> bool:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as err:
            _warn_once(self.root, err)
            return False
        return True

    def path(self, key: CacheKey) -> Path:
        return self.root / key.kind / f"{key.digest}.json"

    def get(self, key: CacheKey, validate: Validator | None = None) -> Any | None:
        """The stored value of ``key``, or None when absent, unreadable or invalid."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            if not path.is_file():
                return None
        except OSError:
            return None
        try:
            entry = json.loads(path.read_bytes())
            ok = (isinstance(entry, dict) and entry.get("schema") == SCHEMA and entry.get("kind") == key.kind
                  and entry.get("key") == key.digest and canonical_json(entry.get("parts")) == key.parts_json
                  and entry.get("value") is not None)
            value = entry["value"] if ok else None
            if ok and validate is not None:
                ok = bool(validate(value, key))
        except Exception:  # noqa: BLE001 - any unreadable entry is a miss, never a crash
            ok, value = False, None
        if not ok:
            self.invalid += 1
            return None
        return value

    def contains(self, key: CacheKey, validate: Validator | None = None) -> bool:
        return self.get(key, validate) is not None

    def put(self, key: CacheKey, value: Any) -> bool:
        """Store ``value`` under ``key`` (atomically); False when caching is off or impossible."""
        if not self.enabled or not self.writable:
            return False
        entry = {"schema": SCHEMA, "kind": key.kind, "key": key.digest, "parts": json.loads(key.parts_json),
                 "created": time.time(), "value": _jsonable(value)}
        try:
            atomic_write_text(self.path(key), json.dumps(entry))
        except OSError as err:
            self.writable = False
            _warn_once(self.root, err)
            return False
        return True

    def get_or_compute(self, key: CacheKey, compute: Callable[[], Any],
                       validate: Validator | None = None) -> Any:
        """The cached value if present and valid, else ``compute()`` (stored, then returned)."""
        hit = self.get(key, validate)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        value = _jsonable(compute())
        self.put(key, value)
        return value

    # --- housekeeping (``headlens cache ls|clear``) ---------------------------------------
    def _entries(self, kind: str | None = None) -> list[Path]:
        if not self.root.is_dir():
            return []
        folders = [self.root / kind] if kind else sorted(p for p in self.root.iterdir()
                                                         if p.is_dir() and p.name not in RESERVED)
        return [p for f in folders if f.is_dir() for p in sorted(f.glob("*.json"))]

    def kinds(self) -> list[str]:
        return sorted({p.parent.name for p in self._entries()})

    def summary(self) -> list[dict[str, Any]]:
        """One row per kind: ``kind``, ``entries``, ``bytes``, ``newest`` (unix time)."""
        rows: dict[str, dict[str, Any]] = {}
        for p in self._entries():
            try:
                st = p.stat()
            except OSError:
                continue
            row = rows.setdefault(p.parent.name, {"kind": p.parent.name, "entries": 0, "bytes": 0, "newest": 0.0})
            row["entries"] += 1
            row["bytes"] += st.st_size
            row["newest"] = max(row["newest"], st.st_mtime)
        return [rows[k] for k in sorted(rows)]

    def clear(self, kind: str | None = None, older_than: float | None = None) -> tuple[int, int]:
        """Delete entries (of ``kind``; older than ``older_than`` seconds); return (count, bytes)."""
        if kind is not None and kind not in self.kinds():
            from headlens.errors import closest

            raise HeadlensError(f"cache clear: no entries of kind {kind!r} in {self.root}; "
                                f"{closest(kind, self.kinds()) if self.kinds() else 'the cache is empty'}")
        now, count, size = time.time(), 0, 0
        for p in self._entries(kind):
            try:
                st = p.stat()
                if older_than is not None and now - st.st_mtime < older_than:
                    continue
                p.unlink()
            except OSError:
                continue
            count, size = count + 1, size + st.st_size
        return count, size


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not m:
        raise HeadlensError(f"--older-than {text!r} is not an age; write a number and a unit: 90s, 30m, 12h, 7d or 2w")
    return float(m.group(1)) * _AGE_UNITS[m.group(2)]
