"""Few-shot prompts: demonstrations, tokenisation of context and continuations, truncation.

A prompt is k demonstrations (each ``Example.demo_text``: context + gold target) drawn from
the task's train split with a generator seeded by ``(seed, query doc_id)``, joined by the
task's separator (a blank line), then the separator and the query's context. No task
description. A demonstration is never the query itself (same doc_id when the query comes
from the train split) and never shares the query's input: a train example whose context
text (any per-choice context, for Winogrande) equals one of the query's is excluded, since
data sets repeat inputs under other doc_ids (the offline label family has 30 inputs;
MultiRC's answers to one question share their context). Tasks with ``demo_gold`` draw only
from train examples with that gold index (WSC: the positive ones).

Tokenisation (the standard harness approach, used identically by scoring and importance):
trailing whitespace of the context moves to the continuation; the continuation tokens are
``tokenize(context + choice)[len(tokenize(context)):]``, so a choice's leading space is
scored exactly as written in the task's template. No special tokens are added, except a
BOS token when the model family expects one (Llama, Mistral, Gemma: ``prepend_bos=None``
detects it from the architecture; pass True/False to force) or when the context would be
empty (a first token is needed to predict from).

When prompt + longest choice exceeds the model's context (``model.cfg.n_ctx`` or
``max_len``), demonstrations are dropped oldest first (counted in ``truncated``); when even
the bare query does not fit, the example is skipped (counted in ``skipped``). When every
query is skipped there is nothing to score: that is an error, never a NaN accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headlens.errors import HeadlensError
from headlens.tasks.registry import Task, get_task
from headlens.tasks.schema import PROMPT_VERSION, Example

VERSION = PROMPT_VERSION  # this module's prompt format; enters every Task.key

BOS_ARCHITECTURES = ("llama", "mistral", "mixtral", "gemma")


@dataclass(frozen=True)
class PreparedExample:
    """One tokenised query, ready to score.

    Attributes:
        context_ids: tokens of the prompt (demonstrations + query context).
        choice_ids: continuation tokens of each choice (scored tokens only).
        gold: index of the gold choice; gold_set: all acceptable choices.
        group: question group (MultiRC); n_demos: demonstrations kept after truncation.
        example: the source Example; prompt: the prompt text (before any BOS): the
            demonstrations and the gold choice's context, exactly the text whose tokens
            precede the choices (``context_ids`` decode to ``prompt.rstrip()``).
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

    def prompt_for(self, choice: int) -> str:
        """Prompt text that precedes choice ``choice`` (differs from ``prompt`` only for
        per-choice contexts, Winogrande)."""
        ex = self.example
        if ex.contexts is None:
            return self.prompt
        return self.prompt[: len(self.prompt) - len(ex.contexts[ex.gold])] + ex.contexts[choice]


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


def check_limit(limit: int | None, option: str = "limit") -> None:
    """Raise unless ``limit`` is None or >= 1 (commands call it before loading a model)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise HeadlensError(f"{option} must be >= 1 (a number of queries), got {limit!r}; omit it for all")


@dataclass(frozen=True, eq=False)
class DemoPool:
    """The examples demonstrations are drawn from, indexed by doc_id and by input text.

    Attributes:
        examples: the pool (the task's train split, after ``demo_gold`` filtering).
        same_split: whether the queries come from the same split (then a query's own
            doc_id is excluded too).
    """

    examples: tuple[Example, ...]
    same_split: bool

    def __post_init__(self) -> None:
        by_input: dict[str, list[int]] = {}
        by_doc: dict[int, list[int]] = {}
        for i, ex in enumerate(self.examples):
            for text in set(ex.inputs):
                by_input.setdefault(text, []).append(i)
            by_doc.setdefault(ex.doc_id, []).append(i)
        object.__setattr__(self, "_by_input", by_input)
        object.__setattr__(self, "_by_doc", by_doc)

    def __len__(self) -> int:
        return len(self.examples)

    def excluded(self, query: Example) -> set[int]:
        """Pool positions ``query`` must never see as demonstrations: its own document (same
        split) and every example sharing one of its input texts."""
        out: set[int] = set()
        for text in query.inputs:
            out.update(self._by_input.get(text, ()))  # type: ignore[attr-defined]
        if self.same_split:
            out.update(self._by_doc.get(query.doc_id, ()))  # type: ignore[attr-defined]
        return out


def draw_demos(pool: DemoPool, query: Example, shots: int, seed: int) -> list[Example]:
    """``shots`` distinct demonstrations for ``query``, drawn from ``default_rng((seed, doc_id))``.

    A uniform draw without replacement among the pool examples that are not excluded
    (:meth:`DemoPool.excluded`): ``shots + n_excluded`` positions are drawn and the excluded
    ones dropped, so a query with nothing to exclude gets the same draw as a plain
    ``rng.choice(len(pool), shots, replace=False)``. Fewer than ``shots`` come back only when
    fewer candidates exist (:func:`prepare` reports that as an error first).
    """
    if shots == 0:
        return []
    excluded = pool.excluded(query)
    rng = np.random.default_rng((seed, query.doc_id))
    picks = rng.choice(len(pool), size=min(len(pool), shots + len(excluded)), replace=False)
    return [pool.examples[i] for i in picks if i not in excluded][:shots]


class _Encoder:
    def __init__(self, tok, bos: bool):
        self.tok = tok
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.bos = bos and self.bos_id is not None

    def encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:  # fast tokenizers raise IndexError on an empty batch
            return []
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
    if not fits and n == 0:
        return None
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
        (queries, pool): the split's examples and the train examples demonstrations are
        drawn from (only those with gold ``task.demo_gold`` when set; empty for 0 shots).
    """
    task = get_task(task)
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
        raise HeadlensError(f"prepare: shots must be an integer >= 0, got {shots!r}")
    split = split or task.eval_split
    queries = task.examples(split, data_dir)
    pool = task.examples(task.train_split, data_dir) if shots else []
    if shots and task.demo_gold is not None:
        pool = [e for e in pool if e.gold == task.demo_gold]
    if shots:
        same = int(split == task.train_split)
        n_docs = len({e.doc_id for e in pool})
        what = "train documents" + (f" with gold {task.demo_gold}" if task.demo_gold is not None else "")
        if shots > n_docs - same:
            raise HeadlensError(f"task {task.name}: {shots} shots need {shots + same} {what}, split "
                                f"{task.train_split!r} has {n_docs}; use --shots {max(n_docs - same, 0)} or fewer")
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

    Raises:
        HeadlensError: a query has fewer than ``shots`` demonstration candidates, or every
            query is too long for the context even without demonstrations.
    """
    task = get_task(task)
    tok = tokenizer_of(model_or_tokenizer)
    check_limit(limit)
    split = split or task.eval_split
    queries, pool = check(task, shots, split=split, data_dir=data_dir)
    queries = queries[:limit]
    if max_len is None:
        cfg = getattr(model_or_tokenizer, "cfg", None)
        max_len = int(cfg.n_ctx) if cfg is not None and getattr(cfg, "n_ctx", None) else None
    bos = needs_bos(model_or_tokenizer) if prepend_bos is None else prepend_bos
    enc = _Encoder(tok, bos)
    demo_pool = DemoPool(tuple(pool), same_split=split == task.train_split)
    items, truncated, skipped = [], 0, 0
    for ex in queries:
        n_ok = len(demo_pool) - len(demo_pool.excluded(ex)) if shots else 0
        if n_ok < shots:
            raise HeadlensError(
                f"task {task.name}: document {ex.doc_id} of split {split!r} has {n_ok} demonstration candidates "
                f"(train documents other than itself and without its input), {shots} shots need {shots}; "
                f"use --shots {n_ok} or fewer")
        demos = draw_demos(demo_pool, ex, shots, seed)
        item = _build(enc, ex, demos, task.separator, max_len)
        if item is None:
            skipped += 1
            continue
        truncated += item.n_demos < shots
        items.append(item)
    if not items:
        raise HeadlensError(
            f"task {task.name}: all {skipped} queries of split {split!r} are longer than the context "
            f"({max_len} tokens) even without demonstrations; nothing to score: use a model with a longer "
            f"context, or shorter examples")
    return Prepared(task=task, shots=shots, split=split, seed=seed, items=items,
                    truncated=int(truncated), skipped=skipped)
