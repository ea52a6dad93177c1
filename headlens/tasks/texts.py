"""Plain-text sources and their tokenisation into right-padded batches.

A text source is one of: a list of strings; a text file (one sample per non-empty line:
blank lines and surrounding whitespace are dropped, so a file of paragraphs written one per
line works unchanged); a Hugging Face ``datasets`` split (:class:`DatasetTexts`); or
``None`` for the offline embedded corpus ``headlens.tasks.synthetic.corpus``.

Texts longer than the context are truncated keeping their START (the first ``max_len``
tokens, BOS included): the kept prefix reads exactly as the model would see it from the
beginning of the document, and the last kept token still has full left context. Every
truncation is counted and reported by the callers.

Layer pruning uses three parts of a source that share no text (:func:`split_texts`):
calibration texts choose the block to drop, healing texts train the LoRA adapter and
evaluation texts measure the loss. Texts are the same when their whitespace-normalised
content is (:func:`content_key`); :func:`check_disjoint` raises when parts share one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from headlens.errors import HeadlensError
from headlens.model.lm import pad_token_id, right_pad


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
    pad = pad_token_id(tokenizer)
    ids = encode(tokenizer, texts, max_len=max_len, prepend_bos=prepend_bos)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        truncated = sum(len(x) > max_len for x in chunk)
        chunk = [x[:max_len] for x in chunk]
        tokens, mask = right_pad(chunk, pad)
        yield Batch(tokens.to(device), mask.to(device), truncated)


def last_index(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, " batch"]:
    """Position of each row's last real token, for left or right padding alike."""
    if not bool((mask.sum(-1) > 0).all()):
        raise HeadlensError("last_index: a row of the attention mask has no real token")
    pos = torch.arange(mask.shape[-1], device=mask.device)
    return torch.where(mask.bool(), pos, -1).max(-1).values


def split_heldout(texts: Sequence[str], fraction: float = 0.2, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded shuffle of the distinct texts, then (train, held-out) with at least one in each.

    Duplicates (same :func:`content_key`) are dropped first, so no held-out text is trained on.
    """
    if not 0.0 < fraction < 1.0:
        raise HeadlensError(f"held-out fraction must be in (0, 1), got {fraction}")
    texts = dedupe(texts)
    if len(texts) < 2:
        raise HeadlensError(f"need at least 2 distinct texts to hold some out, got {len(texts)}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(texts), generator=g).tolist()
    k = min(len(texts) - 1, max(1, round(fraction * len(texts))))
    held = [texts[i] for i in order[:k]]
    train = [texts[i] for i in order[k:]]
    return train, held


# ----------------------------------------------------------------------------- disjoint parts

Unit = Literal["text", "paragraph"]
UNITS: tuple[str, ...] = get_args(Unit)
PART_NAMES = ("calibration", "heal", "eval")


def content_key(text: str) -> str:
    """Whitespace-normalised content: two texts are the same sample when their keys match."""
    return " ".join(str(text).split())


def dedupe(texts: Sequence[str]) -> list[str]:
    """``texts`` without repeats (same :func:`content_key`), first occurrence kept, in order."""
    seen: set[str] = set()
    out = []
    for t in texts:
        key = content_key(t)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _units(text: str, by: Unit) -> list[str]:
    if by == "text":
        return [content_key(text)]
    return [k for k in (content_key(p) for p in str(text).split("\n\n")) if k]


def check_disjoint(parts: Mapping[str, Sequence[str]], *, by: Unit = "text", what: str = "texts") -> None:
    """Raise unless no two of ``parts`` share a text (``by="paragraph"``: a blank-line-separated item).

    Args:
        parts: name -> texts, e.g. ``{"evaluation": eval_texts, "healing": heal_texts}``.
        by: compare whole texts, or every paragraph of them (few-shot episodes: the items).
        what: the caller, for the message.

    Raises:
        HeadlensError: naming the two parts, how many of the second's units the first holds,
            and one example.
    """
    if by not in UNITS:
        raise HeadlensError(f"check_disjoint: by must be one of {', '.join(UNITS)}, got {by!r}")
    keys = {name: {u for t in texts for u in _units(t, by)} for name, texts in parts.items()}
    for a, b in combinations(keys, 2):
        shared = keys[a] & keys[b]
        if shared:
            example = min(shared)
            raise HeadlensError(
                f"{what}: {len(shared)} of the {len(keys[b])} {b} {by}s also appear among the {a} "
                f"{by}s (e.g. {example[:60]!r}); a {by} must not be in both, e.g. take the parts "
                f"from headlens.tasks.texts.split_texts")


@dataclass(frozen=True)
class TextSplits:
    """Three parts of one text source that share no sample (checked on construction).

    Attributes:
        calibration: texts that choose what to prune (layer distances).
        heal: texts that train the healing adapter.
        eval: texts that measure the loss.
        source: where the texts came from; seed: the shuffle's seed.
        disjoint_by: "text" (no text in two parts) or "paragraph" (no few-shot item in two
            parts: the embedded corpus).
    """

    calibration: tuple[str, ...]
    heal: tuple[str, ...]
    eval: tuple[str, ...]
    source: str = "texts"
    seed: int = 0
    disjoint_by: Unit = "text"

    def __post_init__(self) -> None:
        for name in PART_NAMES:
            value = tuple(getattr(self, name))
            if not value or not all(isinstance(t, str) and t.strip() for t in value):
                raise HeadlensError(f"TextSplits: part {name!r} must hold at least one non-empty text")
            object.__setattr__(self, name, value)
        check_disjoint({n: getattr(self, n) for n in PART_NAMES}, by=self.disjoint_by,
                       what=f"TextSplits of {self.source}")

    def sizes(self) -> dict[str, int]:
        return {n: len(getattr(self, n)) for n in PART_NAMES}


def _shares(total: int, counts: Sequence[int], floor: int) -> list[int]:
    """Split ``total`` items in proportion to ``counts``, at least ``floor`` each."""
    want = sum(counts)
    sizes = [max(floor, int(total * c / want)) for c in counts]
    sizes[int(np.argmax(counts))] += total - sum(sizes)  # the largest part absorbs the rest
    if min(sizes) < floor:
        raise HeadlensError(f"split_texts: {total} distinct samples cannot make {len(counts)} parts of at "
                            f"least {floor}; give a larger text source")
    return sizes


def _embedded_split(counts: Sequence[int], seed: int) -> list[list[str]]:
    """Few-shot episodes of the embedded corpus whose QUERIES are split into disjoint parts.

    Every family's distinct contexts (shared by its tasks) are shuffled and divided, so an item
    of one part never appears, under any task of its family, in another part.
    """
    from headlens.tasks import synthetic as syn
    from headlens.tasks.schema import Example

    pools: dict[str, list] = {}
    part_of: dict[str, int] = {}
    for fi, fam in enumerate(syn.FAMILIES):
        drawn = syn.family_examples(fam, "validation", seed=0)  # what syn.examples gives each task
        for k, t in enumerate(fam.tasks):
            pools[t] = [Example(context=c, choices=ch, gold=g[k], doc_id=i) for i, (c, ch, g) in enumerate(drawn)]
        contexts = dedupe([c for c, _, _ in drawn])
        order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5B1, fi]).permutation(len(contexts))
        bounds = np.cumsum([0] + _shares(len(contexts), counts, 2))
        for part in range(len(counts)):
            for i in order[bounds[part]:bounds[part + 1]]:
                part_of[contexts[i]] = part
    out = []
    for part, n in enumerate(counts):
        sub = {t: [e for e in pools[t] if part_of[e.context] == part] for t in syn.TASKS}
        max_items = min(8, min(len(v) for v in sub.values()))
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xC0B5, part])
        texts: list[str] = []
        seen: set[str] = set()
        for _ in range(50 * n):
            if len(texts) == n:
                break
            _, items = syn.training_episode(rng, sub, max_items=max_items, min_items=2)
            text = syn.episode_text(items)
            if content_key(text) not in seen:
                seen.add(content_key(text))
                texts.append(text)
        if len(texts) < n:
            raise HeadlensError(f"split_texts: the embedded corpus gave only {len(texts)} distinct texts "
                                f"for part {PART_NAMES[part]!r} (asked {n}); ask for fewer")
        out.append(texts)
    return out


def split_texts(source: TextSource = None, *, n_calibration: int = 64, n_heal: int = 256,
                n_eval: int = 64, seed: int = 0) -> TextSplits:
    """Calibration, healing and evaluation texts from one source, sharing no sample.

    A finite source (list, file, data set) is deduplicated by :func:`content_key`, shuffled
    with ``numpy.random.default_rng(seed)`` and cut into parts of the requested sizes; with
    fewer distinct texts than asked for, the parts shrink in proportion (at least one text
    each). The embedded corpus (``source=None``) splits its few-shot QUERIES first and builds
    each part's episodes from its own queries, so not even an item is shared
    (``disjoint_by="paragraph"``).

    Args:
        source: see :func:`load_texts`.
        n_calibration, n_heal, n_eval: texts per part (each >= 1).
        seed: the shuffle (and, for the embedded corpus, the episodes).

    Raises:
        HeadlensError: a part size < 1, fewer than 3 distinct texts, or an unreadable source.
    """
    counts = [n_calibration, n_heal, n_eval]
    if any(not isinstance(c, int) or c < 1 for c in counts):
        raise HeadlensError(f"split_texts: n_calibration, n_heal and n_eval must be integers >= 1, got {counts}")
    if source is None:
        parts = _embedded_split(counts, seed)
        return TextSplits(*parts, source="embedded corpus", seed=seed, disjoint_by="paragraph")
    limit = sum(counts) if isinstance(source, DatasetTexts) else None
    texts = dedupe(load_texts(source, limit))
    if len(texts) < 3:
        raise HeadlensError(f"split_texts: need at least 3 distinct texts for three disjoint parts, got "
                            f"{len(texts)}; give a larger text source")
    order = np.random.default_rng(int(seed) & 0xFFFFFFFF).permutation(len(texts))
    sizes = counts if len(texts) >= sum(counts) else _shares(len(texts), counts, 1)
    bounds = np.cumsum([0] + list(sizes))
    parts = [[texts[i] for i in order[bounds[k]:bounds[k + 1]]] for k in range(3)]
    name = str(source) if isinstance(source, (str, os.PathLike, DatasetTexts)) else f"{len(texts)} texts"
    return TextSplits(*parts, source=name, seed=seed)
