"""Induction-head scores for every head: prefix matching, copying (three variants), attention concentration.

The protocol follows Bansal et al. (2023, "Rethinking the Role of Scale for In-Context
Learning", ACL), who adapted Olsson et al. (2022, "In-context Learning and Induction
Heads"). Sequences are unique random tokens (:func:`repeated_random_tokens`); prefix
matching reads attention patterns on ``[BOS] + S + S + S + S``; copying asks whether what a
head writes raises the token it attends to; attention concentration (a separate score) says
how much of a head's attention goes to one token.

Every score is vectorised over heads, query and key positions (a Python loop runs only over
layers, seeds or memory chunks); the vocabulary projection is chunked (``paper``) or
restricted to the in-context tokens (``corrected``), so heads x positions x vocabulary is
never held at once.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from headlens.errors import HeadlensError, closest
from headlens.model import hooknames
from headlens.model.lm import device_of
from headlens.results.scores import Scores

CopyingVariant = Literal["paper", "corrected", "eigen"]
COPYING_VARIANTS: tuple[str, ...] = get_args(CopyingVariant)
DEFAULT_SEEDS = 10

# Definition version of the scores computed here; it enters cache keys, so bump it whenever
# a score's definition changes. 1: ``corrected`` copying on unique tokens, attention-weighted
# head output, relu share. 2: ``corrected`` on [BOS] + S*4 at the most-attended content
# position, in-context softmax; ``attention_concentration`` added.
VERSION = 2

# Raised probabilities at or below this fraction of their mean count as zero: an exactly
# uniform distribution otherwise leaves float-rounding residue (~1e-16) whose "share" is noise.
NOISE_FLOOR = 1e-6

__all__ = [
    "COPYING_VARIANTS", "VERSION", "attended_copying_scores", "attention_concentration",
    "attention_concentration_scores", "copying", "copying_scores", "frequency_ranking",
    "most_attended_content", "prefix_matching", "prefix_matching_scores", "repeated_random_tokens",
    "sequence_length", "usable_vocabulary",
]


# ----------------------------------------------------------------------------- sequences
def sequence_length(seed: int) -> int:
    """The study's length of the random sequence S for a seed: ``L = 2 * seed + 25``."""
    return 2 * int(seed) + 25


def _tokenizer(tokenizer_or_model):
    tok = getattr(tokenizer_or_model, "tokenizer", None)
    if tok is not None and not callable(getattr(tokenizer_or_model, "convert_ids_to_tokens", None)):
        return tok, tokenizer_or_model
    return tokenizer_or_model, None


def _special_ids(tok) -> set[int]:
    ids = set(int(i) for i in (getattr(tok, "all_special_ids", None) or []))
    decoder = getattr(tok, "added_tokens_decoder", None) or {}
    ids |= {int(i) for i, t in decoder.items() if getattr(t, "special", True)}
    return ids


def _merged_token(a: str, b: str, prefix: str | None) -> str:
    if prefix and b.startswith(prefix):
        b = b[len(prefix):]
    return a + b


def frequency_ranking(tokenizer) -> tuple[np.ndarray, str]:
    """Token ids ordered from most to least frequent (by a proxy), and the proxy's name.

    - ``bpe_merge_rank`` (tokenizers with BPE merges, e.g. GPT-2, OPT, Pythia): a token's rank
      is the index of the merge that created it (BPE merges the most frequent pair first);
      base-alphabet tokens, created by no merge, count as most frequent (in id order).
    - ``sentencepiece_score`` (Unigram models, e.g. T5, XLNet): higher score = more frequent.
    - ``id_order`` (anything else, e.g. word-level vocabularies): lower id = more frequent.

    Special tokens are included here; :func:`usable_vocabulary` removes them.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    n_vocab = len(tokenizer)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        kind = model.get("type")
        if kind == "BPE" and model.get("merges"):
            vocab: dict[str, int] = model["vocab"]
            prefix = model.get("continuing_subword_prefix")
            pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"]]
            created = {_merged_token(a, b, prefix): i for i, (a, b) in enumerate(pairs)}
            ids = np.arange(n_vocab)
            rank = np.full(n_vocab, -1, dtype=np.int64)
            known = {vocab[t]: r for t, r in created.items() if t in vocab and vocab[t] < n_vocab}
            rank[list(known)] = list(known.values())
            return np.lexsort((ids, rank)), "bpe_merge_rank"
        if kind == "Unigram" and model.get("vocab"):
            scores = np.array([float(s) for _, s in model["vocab"]] +
                              [-np.inf] * max(0, n_vocab - len(model["vocab"])))[:n_vocab]
            return np.argsort(-scores, kind="stable"), "sentencepiece_score"
    sp = getattr(tokenizer, "sp_model", None)
    if sp is not None and hasattr(sp, "get_score"):
        n = sp.get_piece_size()
        scores = np.array([sp.get_score(i) for i in range(n)] + [-np.inf] * max(0, n_vocab - n))[:n_vocab]
        return np.argsort(-scores, kind="stable"), "sentencepiece_score"
    return np.arange(n_vocab), "id_order"


_USABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def usable_vocabulary(tokenizer, *, exclude_frac: float = 0.04, d_vocab: int | None = None) -> np.ndarray:
    """Token ids the study samples from: no specials, minus the most and least frequent.

    Non-special ids (below ``d_vocab`` when given) are ranked by :func:`frequency_ranking`;
    the first and last ``int(exclude_frac * n)`` are dropped. Returned in rank order.
    """
    if not 0 <= exclude_frac < 0.5:
        raise HeadlensError(f"usable_vocabulary: exclude_frac must be in [0, 0.5), got {exclude_frac}")
    key = (exclude_frac, d_vocab)
    try:
        cached = _USABLE.setdefault(tokenizer, {})
    except TypeError:
        cached = {}
    if key not in cached:
        order, _ = frequency_ranking(tokenizer)
        specials = np.array(sorted(_special_ids(tokenizer)), dtype=np.int64)
        keep = ~np.isin(order, specials)
        if d_vocab is not None:
            keep &= order < d_vocab
        ranked = order[keep]
        k = int(exclude_frac * len(ranked))
        cached[key] = ranked[k:len(ranked) - k]
    return cached[key]


def repeated_random_tokens(
    tokenizer_or_model,
    seed: int,
    *,
    n_repeats: int = 4,
    length: int | None = None,
    exclude_frac: float = 0.04,
    bos: bool = True,
) -> Int[Tensor, " pos"]:
    """``[BOS] + S * n_repeats``: S is ``length`` unique tokens drawn with a seeded generator.

    S is sampled without replacement from :func:`usable_vocabulary` (specials never appear;
    the ``exclude_frac`` most and least frequent tokens are excluded), with
    ``numpy.random.default_rng(seed)``; ``length`` defaults to ``2 * seed + 25``
    (Bansal et al. 2023). The BOS id is the tokenizer's ``bos_token_id``; a tokenizer with no
    BOS (or ``bos=False``) gets no prefix token, so the sequence is ``S * n_repeats``.

    Args:
        tokenizer_or_model: a Hugging Face tokenizer or a bridge (its ``.tokenizer`` is used,
            and ids are restricted to its ``cfg.d_vocab``).
        seed: sampling seed (also sets the default length).
        n_repeats: copies of S (4 for prefix matching; 1 with ``length=4L`` for copying).

    Returns:
        1-D int64 tensor of ``bos + n_repeats * length`` token ids.
    """
    tok, model = _tokenizer(tokenizer_or_model)
    if n_repeats < 1:
        raise HeadlensError(f"repeated_random_tokens: n_repeats must be >= 1, got {n_repeats}")
    length = sequence_length(seed) if length is None else int(length)
    d_vocab = int(model.cfg.d_vocab) if model is not None else None
    usable = usable_vocabulary(tok, exclude_frac=exclude_frac, d_vocab=d_vocab)
    if length > len(usable):
        raise HeadlensError(
            f"repeated_random_tokens: need {length} unique tokens but the vocabulary has only "
            f"{len(usable)} usable ones (after removing specials and {exclude_frac:.0%} at each "
            f"frequency extreme); use fewer/smaller seeds or a lower exclude_frac")
    rng = np.random.default_rng(int(seed))
    seq = torch.as_tensor(rng.choice(usable, size=length, replace=False), dtype=torch.long)
    out = seq.repeat(n_repeats)
    bos_id = getattr(tok, "bos_token_id", None)
    if bos and bos_id is not None:
        out = torch.cat([torch.tensor([int(bos_id)]), out])
    return out


# ----------------------------------------------------------------------------- prefix matching
def _repeat_offset(tokens: Tensor, period: int, what: str) -> int:
    """Length of the prefix before the copies of S (``pos % period``), after checking the copies."""
    n = tokens.shape[-1]
    if period < 1 or n < 2 * period:
        raise HeadlensError(f"{what}: period {period} needs at least two copies in {n} tokens")
    offset = n % period
    if not torch.equal(tokens[..., offset + period:], tokens[..., offset:n - period]):
        raise HeadlensError(
            f"{what}: tokens do not repeat with period {period} after a prefix of "
            f"{offset}; pass [BOS] + S * k from repeated_random_tokens and period=len(S)")
    return offset


def _pattern_offset(patterns: Tensor, tokens: Tensor, period: int, what: str) -> int:
    """:func:`_repeat_offset`, after checking that ``patterns`` end in [pos, pos]."""
    n = tokens.shape[-1]
    if patterns.shape[-2:] != (n, n):
        raise HeadlensError(
            f"{what}: patterns end in {tuple(patterns.shape[-2:])} but tokens "
            f"have {n} positions; pass one [.., pos, pos] pattern per token sequence")
    return _repeat_offset(tokens, period, what)


def prefix_matching_scores(
    patterns: Float[Tensor, "*batch_heads q_pos k_pos"],
    tokens: Int[Tensor, "*batch pos"],
    period: int,
    *,
    spurious_last_token: bool = False,
) -> Float[Tensor, "*batch_heads"]:
    """Mean attention from repeated tokens to the token after each earlier copy of themselves.

    With ``A`` the attention pattern and ``t`` the tokens (a prefix of ``offset = pos % period``
    tokens, 1 for BOS, then copies of S with ``len(S) = period``),
    ``score = mean over queries i of sum over keys k with 1 <= k <= i and t[k-1] == t[i] of A[i, k]``
    where the queries are the positions of copies 2..n (``i >= offset + period``): the
    prefix-matching score of Olsson et al. (2022) as used by Bansal et al. (2023). Because S
    has unique tokens the keys are ``i - m * period + 1`` for ``m = 1, 2, ...`` (while
    ``i - m * period >= offset``), so the score is one gather of [queries x (copies - 1)]
    entries per head, never a [query, key] mask.

    The reference code also adds, at the last token of every copy, the attention paid to
    the first token of S (position ``offset``), which follows BOS and not a copy of the
    query token. That term is wrong and dropped here; ``spurious_last_token=True`` puts it
    back, for reproducing the reference's numbers.

    Args:
        patterns: attention probabilities; leading dims (e.g. ``batch n_heads``) are kept.
        tokens: ``[pos]``, or ``[batch, pos]`` matching the first dim of ``patterns``; checked
            to repeat with ``period``.
        period: the length L of the repeated sequence S.

    Returns:
        The score for every leading index of ``patterns`` (in [0, 1]).
    """
    n = tokens.shape[-1]
    offset = _pattern_offset(patterns, tokens, period, "prefix_matching_scores")
    device = patterns.device
    queries = torch.arange(offset + period, n, device=device)
    back = torch.arange(1, (n - offset) // period, device=device) * period
    earlier = queries[:, None] - back[None, :]  # positions of earlier copies of the query token
    valid = earlier >= offset
    keys = (earlier + 1).clamp_min(0)
    rows = patterns[..., offset + period:, :]
    picked = rows.gather(-1, keys.expand(*rows.shape[:-1], keys.shape[-1]))
    per_query = (picked * valid).sum(-1)
    if spurious_last_token:
        last = (queries - offset) % period == period - 1
        per_query = per_query + rows[..., offset] * last
    return per_query.mean(-1)


def _check_lengths(model, seeds: list[int], n_copies: int, what: str) -> None:
    """Fail before any work if the longest seed's sequence does not fit the context."""
    n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 0)
    bos = 1 if getattr(model.tokenizer, "bos_token_id", None) is not None else 0
    n = bos + n_copies * sequence_length(max(seeds))
    if n_ctx and n > n_ctx:
        fits = [s for s in range(max(seeds)) if bos + n_copies * sequence_length(s) <= n_ctx]
        hint = f"at most {len(fits)} seeds (0..{len(fits) - 1})" if fits else "a model with a longer context"
        raise HeadlensError(
            f"{what}: seed {max(seeds)} gives a sequence of {n} tokens but the model's context is "
            f"{n_ctx} (S has 2*seed+25 tokens); use {hint}")


def _seeds(seeds: int | Iterable[int]) -> list[int]:
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise HeadlensError(f"induction: seeds must be non-empty and >= 0, got {seeds}")
    return seeds


def _progress(seeds: list[int], progress: bool, desc: str):
    if not progress:
        return seeds
    from tqdm.auto import tqdm

    return tqdm(seeds, desc=desc, unit="seed")


def _aggregate(per_seed: list[Tensor], metric: str, model, meta: dict) -> Scores:
    from headlens.model.loading import model_info

    stack = torch.stack(per_seed).double()
    std = stack.std(0, unbiased=True) if len(per_seed) > 1 else torch.zeros_like(stack[0])
    info = model_info(model)
    meta = {**meta, "variance": (std ** 2).tolist(), "model_fingerprint": info.fingerprint}
    return Scores(values=stack.mean(0).cpu().numpy(), metric=metric, model=info.name,
                  meta=meta, std=std.cpu().numpy())


def _pattern_scores(model, seeds: list[int], reduce, *, n_repeats: int, exclude_frac: float, bos: bool,
                    progress: bool, desc: str) -> list[Tensor]:
    """Per seed, ``reduce(pattern [n_heads, pos, pos], tokens, period)`` for every layer: [n_layers, n_heads].

    Each layer's ``hook_pattern`` is reduced as soon as it is computed, so only [n_heads]
    numbers per layer are kept (memory does not grow with depth).
    """
    _check_lengths(model, seeds, n_repeats, desc)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    per_seed = []
    for seed in _progress(seeds, progress, desc.replace("_", " ")):
        toks = repeated_random_tokens(model, seed, n_repeats=n_repeats, exclude_frac=exclude_frac, bos=bos)
        period = sequence_length(seed)
        out = torch.zeros(n_layers, n_heads)

        def keep(pattern: Tensor, hook) -> None:
            out[hooknames.layer_of(hook.name)] = reduce(pattern[0].float(), toks.to(pattern.device), period).cpu()

        hooks = [(hooknames.pattern(layer), keep) for layer in range(n_layers)]
        with torch.no_grad():
            model.run_with_hooks(toks[None].to(device_of(model)), fwd_hooks=hooks)
        per_seed.append(out)
    return per_seed


@torch.no_grad()
def prefix_matching(
    model,
    seeds: int | Iterable[int] = DEFAULT_SEEDS,
    *,
    n_repeats: int = 4,
    exclude_frac: float = 0.04,
    bos: bool = True,
    progress: bool = False,
) -> Scores:
    """Prefix-matching score of every head, mean (``values``) and spread (``std``) over seeds.

    For each seed, the model reads ``[BOS] + S * n_repeats`` (:func:`repeated_random_tokens`)
    and :func:`prefix_matching_scores` reduces each layer's ``hook_pattern`` as soon as it is
    computed, so only [n_heads] numbers per layer are kept (memory does not grow with depth).
    ``std`` is the sample standard deviation over seeds (0 for one seed);
    ``meta["variance"]`` is its square, the quantity the paper plots.

    Returns:
        Scores [n_layers, n_heads], metric ``prefix_matching``.
    """
    seeds = _seeds(seeds)
    per_seed = _pattern_scores(model, seeds, prefix_matching_scores, n_repeats=n_repeats, exclude_frac=exclude_frac,
                               bos=bos, progress=progress, desc="prefix_matching")
    return _aggregate(per_seed, "prefix_matching", model,
                      {"seeds": seeds, "n_repeats": n_repeats, "exclude_frac": exclude_frac, "bos": bos})


# ----------------------------------------------------------------------------- attention concentration
def attention_concentration_scores(
    patterns: Float[Tensor, "*batch_heads q_pos k_pos"],
    tokens: Int[Tensor, " pos"],
    period: int,
) -> Float[Tensor, "*batch_heads"]:
    """Mean over repeated queries of the largest share of attention that any one token receives.

    With ``A`` the attention pattern and ``t`` the tokens (a prefix of ``offset = pos % period``
    tokens, 1 for BOS, then copies of S with ``len(S) = period``):
    ``conc = mean over queries i >= offset + period of max over tokens u of
    sum over keys k <= i with t[k] == u of A[i, k]``. Keys holding the same token are pooled,
    so an induction head that splits its attention between two earlier copies of its target
    scores 1, and so does a head that attends only to BOS (the prefix counts as a token);
    uniform causal attention scores ``mean_i m_i / (i + 1)``, with ``m_i`` the copy number of
    query i. It measures how sharp attention is and nothing about what the head writes:
    reported beside the copying score, never mixed into it.

    Args:
        patterns: attention probabilities; leading dims (e.g. ``n_heads``) are kept.
        tokens: ``[pos]``, repeating with ``period`` after the prefix.
        period: the length L of the repeated sequence S.

    Returns:
        The score for every leading index of ``patterns`` (in (0, 1]).
    """
    if tokens.dim() != 1:
        raise HeadlensError(f"attention_concentration_scores: tokens must be 1-D [pos], got shape {tuple(tokens.shape)}")
    offset = _pattern_offset(patterns, tokens, period, "attention_concentration_scores")
    _, inverse = torch.unique(tokens.to(patterns.device), return_inverse=True)
    rows = patterns[..., offset + period:, :]
    pooled = torch.zeros(*rows.shape[:-1], int(inverse.max()) + 1, dtype=rows.dtype, device=rows.device)
    pooled.scatter_add_(-1, inverse.expand(rows.shape), rows)
    return pooled.max(-1).values.mean(-1)


@torch.no_grad()
def attention_concentration(
    model,
    seeds: int | Iterable[int] = DEFAULT_SEEDS,
    *,
    n_repeats: int = 4,
    exclude_frac: float = 0.04,
    bos: bool = True,
    progress: bool = False,
) -> Scores:
    """Attention concentration of every head on ``[BOS] + S * n_repeats``, mean and std over seeds.

    The same sequences and queries as :func:`prefix_matching` (copies 2..n), reduced by
    :func:`attention_concentration_scores` layer by layer.

    Returns:
        Scores [n_layers, n_heads], metric ``attention_concentration``.
    """
    seeds = _seeds(seeds)
    per_seed = _pattern_scores(model, seeds, attention_concentration_scores, n_repeats=n_repeats,
                               exclude_frac=exclude_frac, bos=bos, progress=progress, desc="attention_concentration")
    return _aggregate(per_seed, "attention_concentration", model,
                      {"seeds": seeds, "n_repeats": n_repeats, "exclude_frac": exclude_frac, "bos": bos})


# ----------------------------------------------------------------------------- copying
def copying_scores(
    writes: Float[Tensor, "n_heads pos d_model"],
    attended: Int[Tensor, "n_heads pos"],
    tokens: Int[Tensor, " pos"],
    W_U: Float[Tensor, "d_model d_vocab"],
    b_U: Float[Tensor, " d_vocab"] | None = None,
    *,
    chunk_size: int = 1024,
) -> Float[Tensor, " n_heads"]:
    """Share of the attended token in what a head's write promotes among the tokens seen so far.

    For head h and query position j >= 1, with ``p = softmax(writes[h, j] @ W_U + b_U)`` over
    the whole vocabulary and ``r_k = relu(p[t_k] - mean_{k' <= j} p[t_k'])`` for k <= j:
    ``share(h, j) = r_{a} / sum_{k <= j} r_k`` where ``a = attended[h, j]`` (0 when no r_k is
    positive), and ``score(h) = mean over j = 1 .. pos-1 of share(h, j)`` (Bansal et al. 2023,
    after Olsson et al. 2022). Raised values at or below ``NOISE_FLOOR`` times the mean are
    counted as zero (float residue of a uniform distribution is not a preference).

    The (head, position) rows are processed ``chunk_size`` at a time, so memory is
    ``chunk_size x (d_vocab + pos)`` however many heads and positions there are.

    Returns:
        [n_heads] scores in [0, 1] (float64).
    """
    n_heads, n, _ = writes.shape
    if attended.shape != (n_heads, n) or tokens.shape != (n,):
        raise HeadlensError(
            f"copying_scores: writes {tuple(writes.shape)}, attended {tuple(attended.shape)} and "
            f"tokens {tuple(tokens.shape)} disagree; expected [H, pos, d], [H, pos], [pos]")
    if chunk_size < 1:
        raise HeadlensError(f"copying_scores: chunk_size must be >= 1, got {chunk_size}")
    device = writes.device
    tokens = tokens.to(device)
    rows = writes.reshape(n_heads * n, -1)
    row_pos = torch.arange(n, device=device).repeat(n_heads)
    row_att = attended.reshape(-1).to(device)
    keys = torch.arange(n, device=device)
    shares = torch.empty(n_heads * n, dtype=torch.float64, device=device)
    for start in range(0, n_heads * n, chunk_size):
        sl = slice(start, start + chunk_size)
        logits = rows[sl] @ W_U
        if b_U is not None:
            logits = logits + b_U
        # float64 after the projection: raised values are small differences of probabilities
        lse = torch.logsumexp(logits.float(), -1, keepdim=True).double()
        seen = keys[None, :] <= row_pos[sl, None]
        probs = torch.exp(logits[:, tokens].double() - lse).masked_fill(~seen, 0.0)
        mean = probs.sum(-1, keepdim=True) / (row_pos[sl, None] + 1)
        raised = probs - mean
        raised = raised.masked_fill(~seen | (raised <= NOISE_FLOOR * mean), 0.0)
        total = raised.sum(-1)
        picked = raised.gather(-1, row_att[sl, None]).squeeze(-1)
        shares[sl] = torch.where(total > 0, picked / total.clamp_min(1e-300), torch.zeros_like(total))
    return shares.view(n_heads, n)[:, 1:].mean(-1)


def _ln_weight(module) -> Tensor | None:
    for mod in (module, getattr(module, "original_component", None)):
        w = getattr(mod, "weight", None) if mod is not None else None
        if isinstance(w, Tensor):
            return w
    return None


def _bias(model, name: str, layer: int | None = None) -> Tensor | None:
    try:
        b = getattr(model, name)
    except (AttributeError, NotImplementedError):
        return None
    if b is None:
        return None
    return b[layer] if layer is not None else b


def _kv_index(model) -> Tensor:
    """Query head -> key/value head (grouped-query attention repeats each kv head in order)."""
    n_heads = int(model.cfg.n_heads)
    n_kv = int(getattr(model.cfg, "n_key_value_heads", None) or n_heads)
    return torch.arange(n_heads) // (n_heads // n_kv)


def _paper_run(model, toks: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """The ``paper`` variant's pass: every layer fed the embeddings; per layer the argmax-attention
    positions [n_heads, pos] and the values [pos, n_kv_heads, d_head]."""
    n_layers = int(model.cfg.n_layers)
    attended: dict[int, Tensor] = {}
    acts: dict[int, Tensor] = {}
    state: dict[str, Tensor] = {}

    def keep_argmax(pattern: Tensor, hook) -> None:
        attended[hooknames.layer_of(hook.name)] = pattern[0].argmax(-1)

    def keep(act: Tensor, hook) -> None:
        acts[hooknames.layer_of(hook.name)] = act[0]

    def store_embed(x: Tensor, hook) -> None:
        state["x0"] = x

    def feed_embed(x: Tensor, hook) -> Tensor:
        return state["x0"].to(x.device)

    hooks = [(hooknames.pattern(l), keep_argmax) for l in range(n_layers)]
    hooks += [(hooknames.resid_pre(0), store_embed)]
    hooks += [(hooknames.resid_pre(l), feed_embed) for l in range(1, n_layers)]
    hooks += [(hooknames.v(l), keep) for l in range(n_layers)]
    model.run_with_hooks(toks[None].to(device_of(model)), fwd_hooks=hooks)
    return [attended[l] for l in range(n_layers)], [acts[l] for l in range(n_layers)]


@torch.no_grad()
def _paper_seed(model, seed: int, *, exclude_frac: float, bos: bool, chunk_size: int) -> Tensor:
    n_layers = int(model.cfg.n_layers)
    L = sequence_length(seed)
    toks = repeated_random_tokens(model, seed, n_repeats=1, length=4 * L, exclude_frac=exclude_frac, bos=bos)
    attended, acts = _paper_run(model, toks)
    W_O, W_U = model.W_O, model.W_U
    b_U = _bias(model, "b_U")
    kv = _kv_index(model).to(W_O.device)
    out = torch.zeros(n_layers, int(model.cfg.n_heads), dtype=torch.float64)
    for layer in range(n_layers):
        v = acts[layer][:, kv]  # [pos, H, d_head], kv heads expanded to query heads
        writes = torch.einsum("phd,hdm->hpm", v, W_O[layer])
        b_O = _bias(model, "b_O", layer)
        if b_O is not None:
            writes = writes + b_O
        out[layer] = copying_scores(writes, attended[layer], toks, W_U, b_U, chunk_size=chunk_size).cpu()
    return out


def most_attended_content(
    patterns: Float[Tensor, "*batch_heads q_pos k_pos"],
    tokens: Int[Tensor, " pos"],
    period: int,
) -> Int[Tensor, "*batch_heads queries"]:
    """For each query in copies 2..n, the content position it attends to most.

    ``k*(i) = argmax over offset <= k of A[i, k]`` for the queries ``i >= offset + period``
    (``offset = pos % period``, the BOS prefix), the first such position on ties. The prefix is
    left out: BOS carries no content a head could copy (how much attention goes there is
    :func:`attention_concentration_scores`' business). Causal patterns make ``k* <= i``.
    """
    offset = _pattern_offset(patterns, tokens, period, "most_attended_content")
    return patterns[..., offset + period:, offset:].argmax(-1) + offset


def attended_copying_scores(
    values: Float[Tensor, "n_heads pos d_head"],
    attended: Int[Tensor, "n_heads queries"],
    tokens: Int[Tensor, " pos"],
    period: int,
    W_O: Float[Tensor, "n_heads d_head d_model"],
    W_U: Float[Tensor, "d_model d_vocab"],
    *,
    scale: Float[Tensor, " pos"] | None = None,
    norm_weight: Float[Tensor, " d_model"] | None = None,
    center: bool = False,
    chunk_size: int = 1024,
) -> Float[Tensor, " n_heads"]:
    """Probability of the attended token, among the in-context tokens, in what its value makes a head write.

    ``tokens`` is a prefix of ``offset = pos % period`` tokens (BOS) then copies of S
    (``len(S) = period``); ``C`` is the set of distinct tokens after the prefix (the tokens of
    S). For head h and query position i in copies 2..n (``i >= offset + period``), with
    ``k = attended[h, i - offset - period]`` (:func:`most_attended_content`):

    - ``o = v[h, k] W_O^h``: what the head writes when it reads position k's value alone;
    - ``o' = (o - mean(o)) / scale[i] * norm_weight`` (the centring only when ``center``, i.e.
      LayerNorm): the final norm linearised at the real residual stream's scale at i, the
      usual direct logit attribution; no biases (they belong to no head);
    - ``share(h, i) = exp(o' W_U[:, t_k]) / sum over c in C of exp(o' W_U[:, c])``: the
      softmax of the head's direct logits restricted to the in-context tokens, read at the
      attended token ``t_k``.

    ``score(h) = mean over i of share(h, i)``. An exact copy head with a strong write scores
    near 1; a head that writes nothing about these tokens scores ``1/|C|`` (chance). A
    softmax at the real scale rather than a rank: it counts how strongly the head writes as
    well as which token it favours, so a head whose output is a negligible part of the
    residual stream is not called a copier because its tiny logits happen to rank the
    attended token first.

    Memory: only the |C| columns of W_U are used (folded into ``[n_heads, d_head, |C|]``
    matrices), and the ``[n_heads, queries, |C|]`` logits are formed about ``chunk_size``
    (head, query) rows at a time (at least one query per chunk); nothing has a vocabulary axis.

    Args:
        values: value vectors per query head (kv heads expanded under grouped-query attention).
        attended: the content position each query attends to most.
        tokens: ``[pos]`` (:func:`repeated_random_tokens`).
        period: ``len(S)``.
        W_O: the heads' output projections. W_U: the unembedding.
        scale: the final norm's divisor at every position (None: 1).
        norm_weight: the final norm's weight (None: 1).
        center: subtract the mean over d_model first (LayerNorm; not RMSNorm).

    Returns:
        [n_heads] scores in (0, 1) (float64).
    """
    n_heads, n, d_head = values.shape
    offset = _repeat_offset(tokens, period, "attended_copying_scores")
    n_queries = n - offset - period
    if (attended.shape != (n_heads, n_queries) or tokens.shape != (n,) or W_O.shape[:2] != (n_heads, d_head)
            or W_U.shape[0] != W_O.shape[-1]):
        raise HeadlensError(
            f"attended_copying_scores: values {tuple(values.shape)}, attended {tuple(attended.shape)}, tokens "
            f"{tuple(tokens.shape)}, W_O {tuple(W_O.shape)} and W_U {tuple(W_U.shape)} disagree; expected "
            f"[H, pos, d_head], [H, queries of copies 2..n], [pos], [H, d_head, d_model], [d_model, d_vocab]")
    if chunk_size < 1:
        raise HeadlensError(f"attended_copying_scores: chunk_size must be >= 1, got {chunk_size}")
    device = values.device
    tokens = tokens.to(device)
    attended = attended.to(device)
    if n_queries and ((attended < offset) | (attended >= n)).any():
        raise HeadlensError(f"attended_copying_scores: attended positions must be content positions "
                            f"{offset}..{n - 1}; use most_attended_content")
    context = torch.unique(tokens[offset:])  # sorted
    target = torch.searchsorted(context, tokens).clamp_max(len(context) - 1)[attended]  # [H, queries]
    unembed = W_U[:, context.to(W_U.device)].to(device).float()
    if norm_weight is not None:
        unembed = unembed * norm_weight.to(device).float()[:, None]
    if center:  # (o - mean(o)) . u == o . (u - mean(u)) for every column u
        unembed = unembed - unembed.mean(0, keepdim=True)
    ov = W_O.to(device).float() @ unembed  # [H, d_head, |C|]
    picked = values.float().gather(1, attended[..., None].expand(-1, -1, d_head))  # [H, queries, d_head]
    queries = torch.arange(offset + period, n, device=device)
    divisor = scale.to(device).float().reshape(-1)[queries] if scale is not None else torch.ones(n_queries, device=device)
    shares = torch.empty(n_heads, n_queries, dtype=torch.float64, device=device)
    step = max(1, chunk_size // n_heads)
    for start in range(0, n_queries, step):
        sl = slice(start, start + step)
        logits = torch.bmm(picked[:, sl], ov).double() / divisor[sl, None].double()
        shares[:, sl] = logits.log_softmax(-1).gather(-1, target[:, sl, None]).squeeze(-1).exp()
    return shares.mean(-1)


@torch.no_grad()
def _corrected_seed(model, seed: int, *, exclude_frac: float, bos: bool, chunk_size: int) -> Tensor:
    """``corrected`` copying of every head for one seed: one real forward pass on [BOS] + S*4."""
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    toks = repeated_random_tokens(model, seed, exclude_frac=exclude_frac, bos=bos)
    period = sequence_length(seed)
    attended: dict[int, Tensor] = {}
    values: dict[int, Tensor] = {}
    state: dict[str, Tensor] = {}

    def keep_attended(pattern: Tensor, hook) -> None:
        attended[hooknames.layer_of(hook.name)] = most_attended_content(pattern[0], toks.to(pattern.device), period)

    def keep_values(v: Tensor, hook) -> None:
        values[hooknames.layer_of(hook.name)] = v[0]

    def keep_scale(scale: Tensor, hook) -> None:
        state["scale"] = scale[0]

    hooks = [(hooknames.pattern(l), keep_attended) for l in range(n_layers)]
    hooks += [(hooknames.v(l), keep_values) for l in range(n_layers)]
    hooks += [(hooknames.final_scale(), keep_scale)]
    model.run_with_hooks(toks[None].to(device_of(model)), fwd_hooks=hooks)
    center = str(getattr(model.cfg, "normalization_type", None) or "").startswith("LN")
    weight = _ln_weight(model.ln_final)
    kv = _kv_index(model)
    W_O, W_U = model.W_O, model.W_U  # bridge properties stack every layer: read them once
    out = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        v = values[layer][:, kv.to(values[layer].device)].transpose(0, 1)  # [H, pos, d_head]
        out[layer] = attended_copying_scores(
            v, attended[layer], toks, period, W_O[layer], W_U, scale=state.get("scale"),
            norm_weight=weight, center=center, chunk_size=chunk_size).cpu()
    return out


@torch.no_grad()
def eigen_scores(model) -> Float[Tensor, "n_layers n_heads"]:
    """``sum(lambda) / sum(|lambda|)`` over the eigenvalues of each head's full OV circuit.

    The full OV circuit is ``W_E diag(g1) W_V W_O diag(gf) W_U`` (vocab x vocab; ``g1`` the
    layer's attention-norm weight and ``gf`` the final-norm weight, folded in as TransformerLens
    folds them; biases ignored), after Elhage et al. (2021). Its non-zero eigenvalues are
    those of the d_head x d_head product ``W_O M W_V`` with ``M = diag(gf) W_U W_E diag(g1)``
    (cyclic permutation), which TransformerLens's ``FactoredMatrix.eigenvalues`` computes, so
    nothing vocabulary-sized but ``M`` (d_model x d_model, formed once) is built. A head
    whose eigenvalues are all zero scores 0. Under grouped-query attention each query head
    uses its key/value head's W_V.
    """
    from transformer_lens import FactoredMatrix

    n_layers = int(model.cfg.n_layers)
    W_U = model.W_U.float()
    gf = _ln_weight(model.ln_final)
    if gf is not None:
        W_U = W_U * gf.float()[:, None]
    core = W_U @ model.W_E.float()  # [d_model, d_model]
    kv = _kv_index(model).to(core.device)
    out = torch.zeros(n_layers, int(model.cfg.n_heads), dtype=torch.float64)
    for layer in range(n_layers):
        W_V = model.W_V[layer].float()[kv]  # [H, d_model, d_head]
        g1 = _ln_weight(model.blocks[layer].ln1)
        M = core * g1.float()[None, :] if g1 is not None else core
        eig = FactoredMatrix(W_V, model.W_O[layer].float() @ M).eigenvalues.to(torch.complex128)
        total = eig.abs().sum(-1)
        out[layer] = torch.where(total > 0, eig.sum(-1).real / total.clamp_min(1e-300), torch.zeros_like(total)).cpu()
    return out


def copying(
    model,
    variant: CopyingVariant = "corrected",
    seeds: int | Iterable[int] = DEFAULT_SEEDS,
    *,
    exclude_frac: float = 0.04,
    bos: bool = True,
    chunk_size: int = 1024,
    progress: bool = False,
) -> Scores:
    """Copying score of every head: does what it writes raise the token it attends to?

    For seed s, ``L = 2s + 25``:

    - ``corrected`` (default): does the head's OV circuit copy the token it attends to, where
      it has something to attend to. Input: ``[BOS] + S * 4`` (the prefix-matching input, real
      forward pass). For every query i in copies 2-4, the most-attended content position
      ``k = argmax_{k >= 1} A[i, k]`` (BOS left out; :func:`most_attended_content`); that
      position's value through the head's W_O, ``o = v_k W_O^h``; the final norm linearised at
      the real residual stream's scale at i (centred for LayerNorm, divided by the real
      ``ln_final`` scale, times its weight); the unembedding of the tokens of S only; score =
      the softmax probability of ``t_k`` among those ``L`` tokens, averaged over queries:
      :func:`attended_copying_scores`. Chance (a head writing nothing) is ``1/L``
      (``meta["chance"]``, mean over seeds). Attention sharpness is not in it: see
      :func:`attention_concentration`. A head that attends to a fixed position scores high
      only if its value there is written as that position's token (its OV copies); read it
      beside prefix matching. For a mid-layer head the direct path through the unembedding
      may say nothing even when the head copies into a later layer's input.
    - ``paper`` (faithful to Bansal et al. 2023's code): on ``[BOS] + S`` with ``len(S) = 4L``
      unique tokens, not repeated; every layer is fed the layer-normed token+position
      embeddings instead of the residual stream; the head's value at the *query* position
      goes through its W_O (plus b_O) straight into W_U (plus b_U, no final norm):
      ``p_{h,j} = softmax((v_j W_O^h + b_O) W_U + b_U)``; attention (argmax position) comes
      from the same embedding-only pass; scored by :func:`copying_scores` (relu share).
    - ``eigen`` (weights only, Elhage et al. 2021): ``sum(lambda) / sum(|lambda|)`` over the
      eigenvalues of the full OV circuit, see :func:`eigen_scores`; in [-1, 1]; seeds unused.

    Returns:
        Scores [n_layers, n_heads], metric ``copying``, ``meta["variant"]``; ``std`` over seeds.
    """
    if variant not in COPYING_VARIANTS:
        raise HeadlensError(f"copying: unknown variant {variant!r}; {closest(str(variant), COPYING_VARIANTS)}")
    from headlens.model.loading import model_info

    if variant == "eigen":
        vals = eigen_scores(model)
        info = model_info(model)
        return Scores(values=vals.numpy(), metric="copying", model=info.name,
                      meta={"variant": "eigen", "seeds": None, "model_fingerprint": info.fingerprint})
    seeds = _seeds(seeds)
    _check_lengths(model, seeds, 4, "copying")
    meta: dict = {"variant": variant, "seeds": seeds, "exclude_frac": exclude_frac, "bos": bos}
    if variant == "paper":
        repeated_random_tokens(model, max(seeds), n_repeats=1, length=4 * sequence_length(max(seeds)),
                               exclude_frac=exclude_frac, bos=bos)  # fails early if the vocabulary is too small
        run = _paper_seed
    else:
        repeated_random_tokens(model, max(seeds), exclude_frac=exclude_frac, bos=bos)
        run = _corrected_seed
        meta.update(input="repeated", n_repeats=4, chance=float(np.mean([1 / sequence_length(s) for s in seeds])))
    per_seed = [run(model, seed, exclude_frac=exclude_frac, bos=bos, chunk_size=chunk_size)
                for seed in _progress(seeds, progress, f"copying ({variant})")]
    return _aggregate(per_seed, "copying", model, meta)


# ----------------------------------------------------------------------------- caching
Score = Literal["prefix_matching", "attention_concentration", "copying"]
SCORES: tuple[str, ...] = get_args(Score)


@dataclass(frozen=True)
class InductionOptions:
    """How induction scores are measured; validated once, here.

    Attributes:
        seeds: number of seeds (0..N-1) or the seeds themselves.
        exclude_frac: share of the most and of the least frequent tokens never sampled.
        bos: prefix a BOS token when the tokenizer has one.
        n_repeats: copies of S for prefix matching and attention concentration.
    """

    seeds: int | tuple[int, ...] = DEFAULT_SEEDS
    exclude_frac: float = 0.04
    bos: bool = True
    n_repeats: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or (isinstance(self.seeds, int) and self.seeds < 1):
            raise HeadlensError(f"induction: seeds must be >= 1 (or a list of seeds >= 0), got {self.seeds!r}")
        object.__setattr__(self, "seeds", tuple(_seeds(self.seeds)))
        if not 0 <= float(self.exclude_frac) < 0.5:
            raise HeadlensError(f"induction: exclude_frac must be in [0, 0.5), got {self.exclude_frac}")
        if isinstance(self.n_repeats, bool) or not isinstance(self.n_repeats, int) or self.n_repeats < 2:
            raise HeadlensError(f"induction: n_repeats must be an integer >= 2, got {self.n_repeats!r}")


def induction_key(model, score: Score, variant: CopyingVariant | None = None,
                  options: InductionOptions | None = None):
    """The cache key of :func:`induction_scores` (CLI, demo, sweep and notebooks alike).

    Built from the model's content fingerprint and dtype (which covers its tokenizer, the
    source of the random sequences), the score and copying variant, the options,
    :data:`VERSION` and the headlens version.
    """
    from headlens.model.fingerprint import model_key
    from headlens.results.cache import CacheKey

    options = options or InductionOptions()
    if score not in SCORES:
        raise HeadlensError(f"induction: unknown score {score!r}; {closest(str(score), SCORES)}")
    if score == "copying" and variant not in COPYING_VARIANTS:
        raise HeadlensError(f"induction: unknown copying variant {variant!r}; {closest(str(variant), COPYING_VARIANTS)}")
    mk = model_key(model)
    opts: dict = {"exclude_frac": float(options.exclude_frac), "bos": bool(options.bos)}
    if score in ("prefix_matching", "attention_concentration"):
        variant = None
        opts.update(seeds=list(options.seeds), n_repeats=options.n_repeats)
    elif variant != "eigen":  # eigen is weights only: no seeds, no sequences
        opts.update(seeds=list(options.seeds))
    else:
        opts = {}
    return CacheKey.make("induction", shape=mk.shape, model=mk.part(), score=score, variant=variant,
                         options=opts, version=VERSION)


def valid_induction(value, key) -> bool:
    """A cached score set of [n_layers, n_heads], finite, of the key's model."""
    from headlens.results.cache import valid_scores

    fp = key.parts.get("model", {}).get("fingerprint")
    return valid_scores(value, key.shape, fp) and np.ndim(value["values"]) == 2


def induction_scores(model, score: Score, variant: CopyingVariant | None = None,
                     options: InductionOptions | None = None, *, cache=None, progress: bool = False) -> Scores:
    """:func:`prefix_matching`, :func:`attention_concentration` or :func:`copying` (``variant``),
    stored in the result cache.

    Args:
        cache: a :class:`headlens.results.cache.ResultCache` (default one under
            ``$HEADLENS_CACHE``); ``False`` disables caching. The key is :func:`induction_key`.
    """
    from headlens.results.cache import ResultCache

    options = options or InductionOptions()
    key = induction_key(model, score, variant, options)
    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())

    def compute():
        if score in ("prefix_matching", "attention_concentration"):
            fn = prefix_matching if score == "prefix_matching" else attention_concentration
            out = fn(model, options.seeds, n_repeats=options.n_repeats, exclude_frac=options.exclude_frac,
                     bos=options.bos, progress=progress)
        else:
            out = copying(model, variant, options.seeds, exclude_frac=options.exclude_frac, bos=options.bos,
                          progress=progress)
        return out.to_dict()

    return Scores.from_dict(cache.get_or_compute(key, compute, validate=valid_induction))
