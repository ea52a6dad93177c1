"""Plain-text sources and their tokenisation into right-padded batches.

A text source is one of: a list of strings; a text file (one sample per non-empty line:
blank lines and surrounding whitespace are dropped, so a file of paragraphs written one per
line works unchanged); a Hugging Face ``datasets`` split (:class:`DatasetTexts`); or
``None`` for the offline embedded corpus ``headlens.tasks.synthetic.corpus``.

Texts longer than the context are truncated keeping their START (the first ``max_len``
tokens, BOS included): the kept prefix reads exactly as the model would see it from the
beginning of the document, and the last kept token still has full left context. Every
truncation is counted and reported by the callers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from headlens.errors import HeadlensError


@dataclass(frozen=True)
class DatasetTexts:
    """A ``datasets.load_dataset(name, config, split=split)[column]`` text source."""

    name: str
    split: str = "validation"
    config: str | None = None
    column: str = "text"

    @classmethod
    def parse(cls, spec: str) -> "DatasetTexts":
        """``name[:config]:split[:column]`` -> DatasetTexts (e.g. ``allenai/c4:en:validation``)."""
        parts = spec.split(":")
        if len(parts) == 2:
            return cls(name=parts[0], split=parts[1])
        if len(parts) == 3:
            return cls(name=parts[0], config=parts[1] or None, split=parts[2])
        if len(parts) == 4:
            return cls(name=parts[0], config=parts[1] or None, split=parts[2], column=parts[3])
        raise HeadlensError(f"dataset spec {spec!r} must be name:split, name:config:split or "
                            f"name:config:split:column")


TextSource = Sequence[str] | str | os.PathLike | DatasetTexts | None


def load_texts(source: TextSource, n: int | None = None, *, seed: int = 0) -> list[str]:
    """Return up to ``n`` non-empty texts from ``source`` (first ``n`` in order; seed: corpus only).

    Raises:
        HeadlensError: missing or empty file, empty result, or no embedded corpus.
    """
    if n is not None and n < 1:
        raise HeadlensError(f"load_texts: n must be >= 1, got {n}")
    if source is None:
        texts = _embedded(n or 64, seed)
    elif isinstance(source, DatasetTexts):
        texts = _dataset(source, n)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise HeadlensError(f"text file {path} does not exist; give a UTF-8 text file with one "
                                f"sample per line")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        texts = [t for t in texts if t]
        if not texts:
            raise HeadlensError(f"text file {path} has no non-empty lines; put one text sample per line")
    else:
        texts = [str(t).strip() for t in source if str(t).strip()]
    texts = texts[:n] if n is not None else texts
    if not texts:
        raise HeadlensError("no non-empty texts given; pass at least one text sample")
    return texts


def _embedded(n: int, seed: int) -> list[str]:
    try:
        from headlens.tasks.synthetic import (
            corpus,  # written alongside; may be absent in old installs
        )
    except ImportError as err:
        raise HeadlensError("no embedded text corpus in this install (headlens.tasks.synthetic.corpus); "
                            "pass a text file with --text-file") from err
    return [str(t) for t in corpus(n, seed)]


def _dataset(spec: DatasetTexts, n: int | None) -> list[str]:
    import datasets

    split = spec.split if n is None else f"{spec.split}[:{max(4 * n, n + 100)}]"
    try:
        ds = datasets.load_dataset(spec.name, spec.config, split=split)
    except Exception as err:  # datasets raises many types for offline/unknown names
        raise HeadlensError(f"could not load dataset {spec.name!r} (config {spec.config!r}, split "
                            f"{spec.split!r}): {type(err).__name__}; check the name or use a text "
                            f"file") from err
    if spec.column not in ds.column_names:
        raise HeadlensError(f"dataset {spec.name!r} has no column {spec.column!r}; columns: "
                            f"{', '.join(ds.column_names)}")
    return [t.strip() for t in ds[spec.column] if isinstance(t, str) and t.strip()]


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids with a mask; ``truncated`` counts texts cut to ``max_len``."""

    tokens: Int[Tensor, "batch pos"]
    mask: Int[Tensor, "batch pos"]
    truncated: int


def encode(tokenizer, texts: Sequence[str], *, max_len: int, prepend_bos: bool = True) -> list[list[int]]:
    """Token ids per text (BOS first when the tokenizer has one), start kept when truncating."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if prepend_bos and bos is not None:
        ids = [[bos] + list(x) for x in ids]
    return [list(x) for x in ids]


def batches(tokenizer, texts: Sequence[str], *, batch_size: int, max_len: int,
            prepend_bos: bool = True, device: str | torch.device = "cpu") -> Iterator[Batch]:
    """Yield right-padded batches in text order; padding is never a text's last token."""
    if batch_size < 1:
        raise HeadlensError(f"batch_size must be >= 1, got {batch_size}")
    if max_len < 2:
        raise HeadlensError(f"max_len must be >= 2, got {max_len}")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    ids = encode(tokenizer, texts, max_len=max_len, prepend_bos=prepend_bos)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        truncated = sum(len(x) > max_len for x in chunk)
        chunk = [x[:max_len] for x in chunk]
        width = max(len(x) for x in chunk)
        tokens = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, x in enumerate(chunk):  # one row per text, not per token
            tokens[row, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[row, :len(x)] = 1
        yield Batch(tokens.to(device), mask.to(device), truncated)


def last_index(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, " batch"]:
    """Position of each row's last real token, for left or right padding alike."""
    if not bool((mask.sum(-1) > 0).all()):
        raise HeadlensError("last_index: a row of the attention mask has no real token")
    pos = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask.bool(), pos, -1).max(-1).values


def split_heldout(texts: Sequence[str], fraction: float = 0.2, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded shuffle, then (train, held-out) with at least one text in each."""
    if len(texts) < 2:
        raise HeadlensError(f"need at least 2 texts to hold some out, got {len(texts)}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(texts), generator=g).tolist()
    k = min(len(texts) - 1, max(1, round(fraction * len(texts))))
    held = [texts[i] for i in order[:k]]
    train = [texts[i] for i in order[k:]]
    return train, held
