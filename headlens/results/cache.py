"""A keyed on-disk cache of results: a rerun loads instead of recomputing.

The key hashes everything that changes a result (model identity, task and its version,
shots, seed, number of examples, variant, headlens version). Writes are atomic, so an
interrupted job never leaves a half-written entry and resumes with finished work intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headlens.results.scores import _jsonable, atomic_write_text, version


def default_root() -> Path:
    """``$HEADLENS_CACHE`` or ``~/.cache/headlens``."""
    env = os.environ.get("HEADLENS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "headlens"


def cache_key(**parts: Any) -> str:
    """A stable hash of ``parts`` plus the headlens version."""
    payload = json.dumps(_jsonable({**parts, "headlens_version": version()}), sort_keys=True,
                         default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


class ResultCache:
    """JSON values stored under ``root/<kind>/<key>.json``.

    Example:
        >>> cache = ResultCache()
        >>> value = cache.get_or_compute("importance", key, lambda: compute())
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_root()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get(self, kind: str, key: str) -> Any | None:
        if not self.enabled:
            return None
        p = self.path(kind, key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (json.JSONDecodeError, OSError):
            return None

    def put(self, kind: str, key: str, value: Any) -> None:
        if self.enabled:
            atomic_write_text(self.path(kind, key), json.dumps(_jsonable(value)))

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        """Return the cached value, or compute, store and return it."""
        hit = self.get(kind, key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        value = compute()
        self.put(kind, key, value)
        return value
