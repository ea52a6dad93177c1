"""Few-shot prompts: demonstrations, tokenisation of context and continuations, truncation.

A prompt is k demonstrations (each ``Example.demo_text``: context + gold target) drawn from
the task's train split with a generator seeded by ``(seed, query doc_id)`` and never the
query itself, joined by the task's separator (a blank line), then the separator and the
query's context. No task description.

Tokenisation (the standard harness approach, used identically by scoring and importance):
trailing whitespace of the context moves to the continuation; the continuation tokens are
``tokenize(context + choice)[len(tokenize(context)):]``, so a choice's leading space is
scored exactly as written in the task's template. No special tokens are added, except a
BOS token when the model family expects one (Llama, Mistral, Gemma: ``prepend_bos=None``
detects it from the architecture; pass True/False to force) or when the context would be
empty (a first token is needed to predict from).

When prompt + longest choice exceeds the model's context (``model.cfg.n_ctx`` or
``max_len``), demonstrations are dropped oldest first (counted in ``truncated``); when even
the bare query does not fit, the example is skipped (counted in ``skipped``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headlens.errors import HeadlensError
from headlens.tasks.registry import Task, get_task
from headlens.tasks.schema import Example

BOS_ARCHITECTURES = ("llama", "mistral", "mixtral", "gemma")


@dataclass(frozen=True)
class PreparedExample:
    """One tokenised query, ready to score.

    Attributes:
        context_ids: tokens of the prompt (demonstrations + query context).
        choice_ids: continuation tokens of each choice (scored tokens only).
        gold: index of the gold choice; gold_set: all acceptable choices.
        group: question group (MultiRC); n_demos: demonstrations kept after truncation.
        example: the source Example; prompt: the prompt text (before any BOS).
        contexts_ids: per-choice prompt tokens when choices differ in context (Winogrande);
            then ``context_ids`` is the gold choice's.
    """

    context_ids: list[int]
    choice_ids: list[list[int]]
    gold: int
    gold_set: tuple[int, ...]
    group: str | None
    n_demos: int
    example: Example
    prompt: str
    contexts_ids: list[list[int]] | None = None

    def context_for(self, choice: int) -> list[int]:
        """Prompt tokens that precede choice ``choice``."""
        return self.contexts_ids[choice] if self.contexts_ids is not None else self.context_ids


@dataclass(frozen=True)
class Prepared:
    """Tokenised queries of one task, shot count and split, with truncation counts."""

    task: Task
    shots: int
    split: str
    seed: int
    items: list[PreparedExample]
    truncated: int
    skipped: int


def tokenizer_of(model_or_tokenizer):
    """The tokenizer of a model (``.tokenizer``) or the tokenizer itself; error when none."""
    if hasattr(model_or_tokenizer, "cfg"):
        tok = getattr(model_or_tokenizer, "tokenizer", None)
        if tok is None:
            raise HeadlensError("this model has no tokenizer; load a checkpoint folder with tokenizer files "
                                "(tokenizer.json or vocab/merges) or a hub id that ships one")
        return tok
    if callable(model_or_tokenizer):
        return model_or_tokenizer
    raise HeadlensError(f"prepare: expected a model or a tokenizer, got {type(model_or_tokenizer).__name__}")


def needs_bos(model_or_tokenizer) -> bool:
    """Whether the model family expects a BOS token (SentencePiece-era Llama-like models)."""
    cfg = getattr(model_or_tokenizer, "cfg", None)
    arch = str(getattr(cfg, "original_architecture", "") or getattr(cfg, "architecture", "") or "").lower()
    return any(a in arch for a in BOS_ARCHITECTURES)


def draw_demos(pool: list[Example], shots: int, rng: np.random.Generator, exclude_doc: int | None,
               n_excluded: int = 1) -> list[Example]:
    """``shots`` distinct pool examples, never one whose doc_id is ``exclude_doc``.

    ``n_excluded``: how many pool examples carry ``exclude_doc`` (drawn extra, then dropped).
    """
    if shots == 0:
        return []
    n_excluded = 0 if exclude_doc is None else n_excluded
    picks = rng.choice(len(pool), size=min(len(pool), shots + n_excluded), replace=False)
    return [pool[i] for i in picks if pool[i].doc_id != exclude_doc][:shots]


class _Encoder:
    def __init__(self, tok, bos: bool):
        self.tok = tok
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.bos = bos and self.bos_id is not None

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def pairs(self, contexts: list[str], choices: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """(context tokens, continuation tokens) per (context, choice) pair."""
        moved_ctx, moved_cont = [], []
        for ctx, choice in zip(contexts, choices):
            stripped = ctx.rstrip()
            # trailing whitespace belongs to the continuation (it merges with the next token)
            moved_ctx.append(stripped)
            moved_cont.append(ctx[len(stripped):] + choice)
        unique = sorted(set(moved_ctx))
        enc = dict(zip(unique, self.encode(unique)))
        wholes = self.encode([c + x for c, x in zip(moved_ctx, moved_cont)])
        ctx_out, cont_out = [], []
        for ctx, whole in zip(moved_ctx, wholes):
            ids = enc[ctx]
            cont = whole[len(ids):]
            if self.bos or not ids:
                if self.bos_id is None:
                    raise HeadlensError("prepare: an empty context needs a BOS or EOS token, the tokenizer has none")
                ids = [self.bos_id] + ids
            ctx_out.append(ids)
            cont_out.append(cont)
        return ctx_out, cont_out


def _build(enc: _Encoder, ex: Example, demos: list[Example], sep: str, n_ctx: int | None):
    """PreparedExample with as many of ``demos`` as fit (dropping the oldest), or None.

    The result is exactly the largest k whose tokenised prompt fits; to avoid re-tokenising
    the prompt once per k, k is first estimated from per-demonstration token counts, then
    checked (and moved up or down) with exact tokenisations.
    """
    contexts = list(ex.contexts) if ex.contexts is not None else [ex.context] * len(ex.choices)
    n = len(demos)
    tried: dict[int, tuple] = {}

    def attempt(k: int) -> tuple:
        if k not in tried:
            prefix = "".join(d.demo_text + sep for d in demos[n - k:])
            ctx_ids, cont_ids = enc.pairs([prefix + c for c in contexts], list(ex.choices))
            longest = max(len(c) + len(x) for c, x in zip(ctx_ids, cont_ids))
            tried[k] = (n_ctx is None or longest <= n_ctx, longest, prefix, ctx_ids, cont_ids)
        return tried[k]

    fits, longest, *_ = attempt(n)
    k = n
    if not fits:
        demo_lens = [len(ids) for ids in enc.encode([d.demo_text + sep for d in demos])]
        query_len = longest - sum(demo_lens)
        k = 0
        for cand in range(n - 1, -1, -1):
            if query_len + sum(demo_lens[n - cand:]) <= n_ctx:
                k = cand
                break
        while k > 0 and not attempt(k)[0]:
            k -= 1
        while k + 1 < n and attempt(k)[0] and attempt(k + 1)[0]:
            k += 1
        if not attempt(k)[0]:
            return None
    _, _, prefix, ctx_ids, cont_ids = attempt(k)
    if any(len(x) == 0 for x in cont_ids):
        raise HeadlensError(f"prepare: document {ex.doc_id} has an empty choice; every choice must have "
                            f"text to score")
    return PreparedExample(
        context_ids=ctx_ids[ex.gold], choice_ids=cont_ids, gold=ex.gold,
        gold_set=ex.gold_set if ex.gold_set is not None else (ex.gold,), group=ex.group,
        n_demos=k, example=ex, prompt=prefix + contexts[ex.gold],
        contexts_ids=None if ex.contexts is None else ctx_ids)


def check(task: Task | str, shots: int, *, split: str | None = None,
          data_dir: str | Path | None = None) -> tuple[list[Example], list[Example]]:
    """Load the query split and the demonstration pool; raise if ``shots`` cannot be drawn.

    Returns:
        (queries, pool): the split's examples and the train examples (empty for 0 shots).
    """
    task = get_task(task)
    if shots < 0:
        raise HeadlensError(f"prepare: shots must be >= 0, got {shots}")
    split = split or task.eval_split
    queries = task.examples(split, data_dir)
    pool = task.examples(task.train_split, data_dir) if shots else []
    if shots:
        same = split == task.train_split
        n_docs = len({e.doc_id for e in pool})
        if shots > n_docs - (1 if same else 0):
            raise HeadlensError(
                f"task {task.name}: {shots} shots need {shots + (1 if same else 0)} train documents, split "
                f"{task.train_split!r} has {n_docs}; use --shots {max(n_docs - (1 if same else 0), 0)} or fewer")
    return queries, pool


def prepare(model_or_tokenizer, task: Task | str, shots: int, *, split: str | None = None,
            limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
            max_len: int | None = None, prepend_bos: bool | None = None) -> Prepared:
    """Build and tokenise the k-shot prompts of ``task``'s ``split``.

    Args:
        model_or_tokenizer: a TransformerBridge (its ``.tokenizer`` and ``cfg.n_ctx``) or a
            Hugging Face tokenizer (then no length limit unless ``max_len``).
        task: a Task or a registry name / task file path.
        shots: demonstrations per query (0, 1, 5 in the study).
        split: default ``task.eval_split``.
        limit: the first ``limit`` queries of the split (dataset order).
        seed: demonstrations for the query with doc_id d come from ``default_rng((seed, d))``.
        data_dir: local data folder (see :meth:`Task.examples`).
        max_len: context length limit (default the model's ``cfg.n_ctx``).
        prepend_bos: force a BOS token on (True) or off (False); None: by model family.
    """
    task = get_task(task)
    tok = tokenizer_of(model_or_tokenizer)
    if limit is not None and limit < 1:
        raise HeadlensError(f"prepare: limit must be >= 1, got {limit}")
    split = split or task.eval_split
    queries, pool = check(task, shots, split=split, data_dir=data_dir)
    queries = queries[:limit]
    same = split == task.train_split
    if max_len is None:
        cfg = getattr(model_or_tokenizer, "cfg", None)
        max_len = int(cfg.n_ctx) if cfg is not None and getattr(cfg, "n_ctx", None) else None
    bos = needs_bos(model_or_tokenizer) if prepend_bos is None else prepend_bos
    enc = _Encoder(tok, bos)
    per_doc = Counter(e.doc_id for e in pool) if same else Counter()
    items, truncated, skipped = [], 0, 0
    for ex in queries:
        rng = np.random.default_rng((seed, ex.doc_id))
        demos = draw_demos(pool, shots, rng, ex.doc_id if same else None, per_doc[ex.doc_id])
        item = _build(enc, ex, demos, task.separator, max_len)
        if item is None:
            skipped += 1
            continue
        truncated += item.n_demos < shots
        items.append(item)
    return Prepared(task=task, shots=shots, split=split, seed=seed, items=items,
                    truncated=int(truncated), skipped=skipped)
