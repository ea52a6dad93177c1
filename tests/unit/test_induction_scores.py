"""Pure induction-score functions on synthetic patterns and tokenizers (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headlens.errors import HeadlensError
from headlens.analyses.induction import (
    attended_copying_scores,
    attention_concentration_scores,
    copying_scores,
    frequency_ranking,
    most_attended_content,
    prefix_matching_scores,
    repeated_random_tokens,
    sequence_length,
    usable_vocabulary,
)


def _seq(length: int, copies: int = 4, bos: bool = True, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.randperm(100, generator=g)[:length] + 10
    out = s.repeat(copies)
    return torch.cat([torch.tensor([1]), out]) if bos else out


def _random_patterns(shape, n, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(*shape, n, n, generator=g, dtype=torch.float64) * 3
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


def _slow_prefix(pattern: torch.Tensor, tokens: list[int], period: int, spurious: bool = False) -> float:
    """The definition, element by element: earlier copies found by comparing tokens."""
    n = len(tokens)
    offset = n % period
    total, count = 0.0, 0
    for i in range(offset + period, n):
        for k in range(1, i + 1):
            if tokens[k - 1] == tokens[i]:
                total += float(pattern[i, k])
        if spurious and (i - offset) % period == period - 1:
            total += float(pattern[i, offset])
        count += 1
    return total / count


@pytest.mark.parametrize("bos", [True, False])
@pytest.mark.parametrize("spurious", [False, True])
def test_prefix_matching_equals_slow_loop(bos, spurious):
    period = 7
    toks = _seq(period, bos=bos)
    pats = _random_patterns((2, 3), len(toks))
    fast = prefix_matching_scores(pats, toks, period, spurious_last_token=spurious)
    assert fast.shape == (2, 3)
    for b in range(2):
        for h in range(3):
            # float64 inputs: the gather and the loop add the same numbers, 1e-12 is ample
            assert abs(float(fast[b, h]) - _slow_prefix(pats[b, h], toks.tolist(), period, spurious)) < 1e-12


def test_prefix_matching_batched_tokens_match_single():
    period = 5
    toks = torch.stack([_seq(period, seed=0), _seq(period, seed=1)])
    pats = _random_patterns((2, 4), toks.shape[1])
    batched = prefix_matching_scores(pats, toks, period)
    for b in range(2):
        assert torch.allclose(batched[b], prefix_matching_scores(pats[b], toks[b], period), atol=1e-12)


def test_prefix_matching_hand_built_patterns():
    period = 6
    toks = _seq(period)
    n = len(toks)
    # a perfect induction head: all attention on the token after the previous copy
    induction = torch.zeros(n, n)
    for i in range(n):
        induction[i, i - period + 1 if i >= 1 + period else i] = 1.0
    assert float(prefix_matching_scores(induction, toks, period)) == pytest.approx(1.0, abs=1e-7)
    # a previous-token head never looks at a target (period > 1)
    prev = torch.zeros(n, n)
    prev[0, 0] = 1.0
    prev[torch.arange(1, n), torch.arange(0, n - 1)] = 1.0
    assert float(prefix_matching_scores(prev, toks, period)) == 0.0
    # uniform causal attention: query i has (copies before it) targets among i + 1 keys
    uniform = torch.ones(n, n).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    expected = np.mean([((i - 1) // period) / (i + 1) for i in range(1 + period, n)])
    assert float(prefix_matching_scores(uniform, toks, period)) == pytest.approx(expected, abs=1e-6)


def test_prefix_matching_spurious_term_is_attention_to_first_token():
    period = 4
    toks = _seq(period)
    n = len(toks)
    first = torch.zeros(n, n)
    first[1:, 1] = 1.0  # every query looks only at the first token of S
    first[0, 0] = 1.0
    assert float(prefix_matching_scores(first, toks, period)) == 0.0
    # 3 of the 3 * period queries are last tokens of a copy
    assert float(prefix_matching_scores(first, toks, period, spurious_last_token=True)) == pytest.approx(1 / period)


def test_prefix_matching_rejects_bad_input():
    toks = _seq(5)
    with pytest.raises(HeadlensError, match="positions"):
        prefix_matching_scores(torch.zeros(3, 4, 4), toks, 5)
    with pytest.raises(HeadlensError, match="do not repeat"):
        prefix_matching_scores(torch.zeros(len(toks), len(toks)), toks, 6)
    with pytest.raises(HeadlensError, match="two copies"):
        prefix_matching_scores(torch.zeros(len(toks), len(toks)), toks, 15)


def _slow_copying(writes, attended, tokens, W_U) -> list[float]:
    out = []
    for h in range(writes.shape[0]):
        total = 0.0
        for j in range(1, writes.shape[1]):
            probs = torch.softmax((writes[h, j] @ W_U).double(), -1)
            seen = probs[tokens[: j + 1]]
            raised = torch.relu(seen - seen.mean())
            raised = torch.where(raised > 1e-6 * seen.mean(), raised, torch.zeros_like(raised))
            total += float(raised[attended[h, j]] / raised.sum()) if raised.sum() > 0 else 0.0
        out.append(total / (writes.shape[1] - 1))
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
def test_copying_scores_equal_slow_loop_for_any_chunk(chunk_size):
    g = torch.Generator().manual_seed(3)
    n_heads, n, d, vocab = 3, 9, 6, 40
    writes = torch.randn(n_heads, n, d, generator=g)
    W_U = torch.randn(d, vocab, generator=g)
    tokens = torch.randperm(vocab, generator=g)[:n]
    attended = torch.stack([torch.randint(0, j + 1, (n_heads,), generator=g) for j in range(n)], 1)
    fast = copying_scores(writes, attended, tokens, W_U, chunk_size=chunk_size)
    slow = _slow_copying(writes, attended, tokens, W_U)
    # float32 logits, float64 afterwards in both: agree to 1e-6
    assert np.allclose(fast.numpy(), slow, atol=1e-6)


def test_copying_scores_hand_built():
    vocab, n = 20, 6
    tokens = torch.arange(3, 3 + n)
    W_U = torch.eye(vocab)
    # head 0 writes exactly the attended token; head 1 writes nothing
    attended = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long)])
    writes = torch.zeros(2, n, vocab)
    writes[0, torch.arange(n), tokens] = 10.0
    scores = copying_scores(writes, attended, tokens, W_U, chunk_size=4)
    assert float(scores[0]) == pytest.approx(1.0)
    assert float(scores[1]) == 0.0  # uniform output: nothing raised, share 0 (not NaN)


def test_copying_scores_rejects_mismatched_shapes():
    with pytest.raises(HeadlensError, match="disagree"):
        copying_scores(torch.zeros(2, 5, 4), torch.zeros(2, 4, dtype=torch.long), torch.zeros(5, dtype=torch.long),
                       torch.zeros(4, 10))


# ----------------------------------------------------------------------------- corrected copying
def _slow_attended_copying(values, patterns, tokens, period, W_O, W_U, scale, weight, center) -> list[float]:
    """The definition, one head and one query at a time, through the full vocabulary (float64)."""
    n = len(tokens)
    offset = n % period
    context = sorted(set(tokens[offset:].tolist()))
    out = []
    for h in range(values.shape[0]):
        shares = []
        for i in range(offset + period, n):
            best = offset
            for k in range(offset, i + 1):  # first maximum among content positions
                if float(patterns[h, i, k]) > float(patterns[h, i, best]):
                    best = k
            o = values[h, best].double() @ W_O[h].double()
            if center:
                o = o - o.mean()
            o = o / float(scale[i]) * weight.double()
            logits = (o @ W_U.double())[context]
            shares.append(float(torch.softmax(logits, -1)[context.index(int(tokens[best]))]))
        out.append(sum(shares) / len(shares))
    return out


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
def test_attended_copying_equals_slow_loop(center, chunk_size):
    g = torch.Generator().manual_seed(5)
    period, n_heads, d_head, d_model, vocab = 6, 3, 4, 8, 120
    tokens = _seq(period)  # [BOS] + S*4, ids 10..109
    n = len(tokens)
    values = torch.randn(n_heads, n, d_head, generator=g)
    W_O = torch.randn(n_heads, d_head, d_model, generator=g)
    W_U = torch.randn(d_model, vocab, generator=g)
    scale = torch.rand(n, generator=g) + 0.5
    weight = torch.rand(d_model, generator=g) + 0.5
    patterns = _random_patterns((n_heads,), n, seed=6).float()
    attended = most_attended_content(patterns, tokens, period)
    assert attended.shape == (n_heads, n - 1 - period)
    fast = attended_copying_scores(values, attended, tokens, period, W_O, W_U, scale=scale, norm_weight=weight,
                                   center=center, chunk_size=chunk_size)
    slow = _slow_attended_copying(values, patterns, tokens, period, W_O, W_U, scale, weight, center)
    # float32 products on the vectorised side, float64 in the loop: 1e-5 is the stated bound
    assert np.allclose(fast.numpy(), slow, atol=1e-5)
    assert 0 < float(fast.min()) and float(fast.max()) < 1


def test_attended_copying_exact_copy_and_silent_heads():
    period, n = 5, 21
    tokens = _seq(period)
    vocab = 120
    # values are one-hot token vectors; head 0 copies them (W_O = identity), head 1 writes nothing
    values = torch.zeros(2, n, vocab)
    values[:, torch.arange(n), tokens] = 1.0
    W_O = torch.stack([torch.eye(vocab) * 50, torch.zeros(vocab, vocab)])
    induction = torch.zeros(n, n)
    for i in range(n):
        induction[i, i - period + 1 if i >= 1 + period else 0] = 1.0
    patterns = induction.expand(2, n, n)
    attended = most_attended_content(patterns, tokens, period)
    assert torch.equal(attended[0], torch.arange(1 + period, n) - period + 1)
    scores = attended_copying_scores(values, attended, tokens, period, W_O, torch.eye(vocab))
    assert float(scores[0]) > 0.999
    assert float(scores[1]) == pytest.approx(1 / period, abs=1e-12)  # chance: uniform over S


def test_most_attended_content_leaves_out_the_prefix_and_takes_the_first_tie():
    period = 4
    tokens = _seq(period)
    n = len(tokens)
    bos_heavy = torch.zeros(n, n)
    bos_heavy[:, 0] = 0.9
    for i in range(1, n):
        bos_heavy[i, 1:i + 1] = 0.1 / i  # equal content attention: ties
    bos_heavy[9, 3] += 0.01  # one query prefers position 3
    picked = most_attended_content(bos_heavy, tokens, period)
    expected = torch.ones(n - 1 - period, dtype=torch.long)
    expected[9 - 1 - period] = 3
    assert torch.equal(picked, expected)


def test_attended_copying_rejects_bad_input():
    tokens = _seq(5)
    n = len(tokens)
    args = (torch.zeros(2, n, 3), torch.ones(2, n - 6, dtype=torch.long), tokens, 5, torch.zeros(2, 3, 4),
            torch.zeros(4, 200))
    attended_copying_scores(*args)  # well-formed
    with pytest.raises(HeadlensError, match="disagree"):
        attended_copying_scores(args[0], torch.ones(2, n, dtype=torch.long), *args[2:])
    with pytest.raises(HeadlensError, match="content positions"):
        attended_copying_scores(args[0], torch.zeros(2, n - 6, dtype=torch.long), *args[2:])
    with pytest.raises(HeadlensError, match="do not repeat"):
        attended_copying_scores(*args[:3], 6, *args[4:])
    with pytest.raises(HeadlensError, match="chunk_size"):
        attended_copying_scores(*args, chunk_size=0)


# ----------------------------------------------------------------------------- attention concentration
def _slow_concentration(pattern, tokens: list[int], period: int) -> float:
    n = len(tokens)
    offset = n % period
    total = []
    for i in range(offset + period, n):
        per_token: dict[int, float] = {}
        for k in range(i + 1):
            per_token[tokens[k]] = per_token.get(tokens[k], 0.0) + float(pattern[i, k])
        total.append(max(per_token.values()))
    return sum(total) / len(total)


@pytest.mark.parametrize("bos", [True, False])
def test_attention_concentration_equals_slow_loop(bos):
    period = 7
    toks = _seq(period, bos=bos)
    pats = _random_patterns((2, 3), len(toks))
    fast = attention_concentration_scores(pats, toks, period)
    assert fast.shape == (2, 3)
    for b in range(2):
        for h in range(3):
            assert abs(float(fast[b, h]) - _slow_concentration(pats[b, h], toks.tolist(), period)) < 1e-12


def test_attention_concentration_hand_built_patterns():
    period = 6
    toks = _seq(period)
    n = len(toks)
    # induction head splitting its attention over every earlier copy of the target: one token
    split = torch.zeros(n, n)
    split[0, 0] = 1.0
    for i in range(1, n):
        keys = [i - m * period + 1 for m in range(1, 4) if i - m * period >= 1] or [i]
        split[i, keys] = 1.0 / len(keys)
    assert float(attention_concentration_scores(split, toks, period)) == pytest.approx(1.0)
    # attention to BOS only: fully concentrated (sharpness, whatever the head writes)
    bos = torch.zeros(n, n)
    bos[:, 0] = 1.0
    assert float(attention_concentration_scores(bos, toks, period)) == 1.0
    # uniform causal attention: the query token has m_i copies among i + 1 keys
    uniform = torch.ones(n, n).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    expected = np.mean([((i - 1) // period + 1) / (i + 1) for i in range(1 + period, n)])
    assert float(attention_concentration_scores(uniform, toks, period)) == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------- token generator
@pytest.fixture(scope="module")
def bpe_tok(tmp_path_factory):
    from tests.builders import build_tokenizer

    folder = tmp_path_factory.mktemp("bpe")
    build_tokenizer(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def word_dir(tmp_path_factory):
    from tests.planted import build_word_tokenizer

    folder = tmp_path_factory.mktemp("word")
    build_word_tokenizer(folder)
    return folder


@pytest.fixture
def word_tok(word_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(word_dir))


def test_bpe_ranking_is_merge_order_with_base_alphabet_first(bpe_tok):
    import json

    order, source = frequency_ranking(bpe_tok)
    assert source == "bpe_merge_rank"
    model = json.loads(bpe_tok.backend_tokenizer.to_str())["model"]
    vocab = model["vocab"]
    merged = ["".join(m.split(" ") if isinstance(m, str) else m) for m in model["merges"]]
    merged_ids = [vocab[t] for t in merged]
    base_ids = sorted(set(range(len(bpe_tok))) - set(merged_ids))
    assert order.tolist() == base_ids + merged_ids


def test_usable_vocabulary_excludes_specials_and_both_extremes(bpe_tok):
    order, _ = frequency_ranking(bpe_tok)
    specials = set(bpe_tok.all_special_ids)
    ranked = [i for i in order.tolist() if i not in specials]
    k = int(0.04 * len(ranked))
    usable = usable_vocabulary(bpe_tok, exclude_frac=0.04)
    assert usable.tolist() == ranked[k:len(ranked) - k]
    assert not specials & set(usable.tolist())
    assert k > 0 and ranked[0] not in usable and ranked[-1] not in usable


def test_repeated_random_tokens_seeded_unique_with_bos(bpe_tok):
    a = repeated_random_tokens(bpe_tok, 3)
    b = repeated_random_tokens(bpe_tok, 3)
    c = repeated_random_tokens(bpe_tok, 4)
    L = sequence_length(3)
    assert L == 31
    assert torch.equal(a, b) and len(a) == 1 + 4 * L and len(c) == 1 + 4 * sequence_length(4)
    assert int(a[0]) == bpe_tok.bos_token_id
    s = a[1:1 + L]
    assert len(set(s.tolist())) == L and torch.equal(a[1:], s.repeat(4))
    assert set(s.tolist()) <= set(usable_vocabulary(bpe_tok).tolist())
    assert not torch.equal(c[1:1 + L], s)  # another seed, another sequence
    assert torch.equal(repeated_random_tokens(bpe_tok, 3, bos=False), a[1:])  # BOS is only a prefix
    no_bos = repeated_random_tokens(bpe_tok, 3, n_repeats=1, length=10, bos=False)
    assert len(no_bos) == 10 and bpe_tok.bos_token_id not in no_bos.tolist()


def test_tokenizer_without_bos_gets_no_prefix(word_tok):
    word_tok.bos_token = None
    toks = repeated_random_tokens(word_tok, 0, n_repeats=2)
    assert len(toks) == 2 * 25


def test_word_level_falls_back_to_id_order_and_small_vocab_is_a_clear_error(word_tok):
    order, source = frequency_ranking(word_tok)
    assert source == "id_order" and order.tolist() == list(range(len(word_tok)))
    with pytest.raises(HeadlensError, match="usable"):
        repeated_random_tokens(word_tok, 0, length=1000)
