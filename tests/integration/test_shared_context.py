"""Shared-context scoring: one packed row per query equals the per-choice path to 1e-4.

The per-choice path (:func:`per_choice_logprobs`, one row ``context_j + choice_j[:-1]`` per
choice) is the reference; it is itself checked against Hugging Face logits by hand in
test_eval.py. Tolerance 1e-4 absolute on summed log-probabilities: both are fp32 forward
passes over the same tokens with different batch layouts (differences seen: <= 3e-5).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from headlens.analyses import scoring
from headlens.analyses.scoring import choice_logprobs, pack, packed_mask, per_choice_logprobs
from headlens.model.gates import Gates, mask_lowest
from headlens.tasks.prompts import prepare
from tests.builders import ARCHS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tasks"
ATOL = 1e-4


@dataclasses.dataclass(frozen=True)
class Item:  # the fields of PreparedExample that scoring reads
    context_ids: list
    choice_ids: list
    contexts_ids: list | None = None

    def context_for(self, j):
        return self.contexts_ids[j] if self.contexts_ids is not None else self.context_ids


def _items(model, task, shots=1):
    return prepare(model, task, shots, data_dir=FIXTURES).items


def _mixed(items):
    """Variants the fixtures lack: all single-token choices; single and multi-token mixed;
    choices sharing their first tokens (the common prefix reaches into the choices)."""
    out = []
    for it in items:
        out.append(dataclasses.replace(it, choice_ids=[c[:1] for c in it.choice_ids]))
        out.append(dataclasses.replace(it, choice_ids=[c[:1] if j % 2 else c for j, c in enumerate(it.choice_ids)]))
        first = it.choice_ids[0][:1]  # same length as before, so the prompt still fits
        out.append(dataclasses.replace(it, choice_ids=[first + c[1:] for c in it.choice_ids]))
    return out


def _gates(model, kind):
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    if kind == "off":
        return None
    g = torch.Generator().manual_seed(3)
    if kind == "random":
        return Gates(heads=torch.rand(n_layers, n_heads, generator=g), ffn=torch.rand(n_layers, generator=g))
    # pruning: half the heads and one FFN removed, as a pruning curve does
    heads = mask_lowest(torch.rand(n_layers, n_heads, generator=g), 0.5)
    ffn = torch.ones(n_layers)
    ffn[0] = 0.0
    return Gates(heads=heads, ffn=ffn)


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def models(tiny_models):
    from headlens.model.loading import load_model, shipped_models

    out = dict(tiny_models)
    if "tiny-icl" in shipped_models():
        out["tiny-icl"] = load_model("tiny-icl", device="cpu")
    return out


@pytest.mark.parametrize("arch", [*ARCHS, "tiny-icl"])
@pytest.mark.parametrize("gates", ["off", "random", "pruned"])
def test_shared_equals_per_choice(models, arch, gates):
    if arch not in models:
        pytest.skip("the shipped model data/models/tiny-icl is not installed")
    model = models[arch]
    assert scoring._can_pack(model), f"{arch}: the packing probe failed, shared scoring would be off"
    if arch == "tiny-icl":  # offline tasks: single-token choices, 5 shots
        items = [it for t in ("letter_first", "recall_value", "label_flipped")
                 for it in prepare(model, t, 5, limit=4).items]
    else:  # shared multi-token contexts, per-choice contexts (winogrande), 12 entities (record)
        items = [it for t in ("hellaswag", "winogrande", "record", "copa") for it in _items(model, t)]
    items += _mixed(items[:3])
    g = _gates(model, gates)
    got = choice_logprobs(model, items, batch_size=4, gates=g, progress=False)
    _assert_same(got, per_choice_logprobs(model, items, batch_size=4, gates=g, progress=False))
    # one query per pass and many per pass agree too (padding never leaks into a row)
    _assert_same(choice_logprobs(model, items, batch_size=1, gates=g, progress=False), got)


def test_gates_change_shared_scores(models):
    model = models["llama"]
    items = _items(model, "hellaswag")
    plain = choice_logprobs(model, items, progress=False)
    pruned = choice_logprobs(model, items, gates=_gates(model, "pruned"), progress=False)
    assert max(np.abs(a - b).max() for a, b in zip(plain, pruned)) > 1e-3


def test_packed_row_longer_than_the_context_window(models):
    """Positions restart per choice, so a packed row may exceed n_ctx (GPT-2: 128)."""
    model = models["gpt2"]
    items = _items(model, "hellaswag")
    assert max(len(pack(it).tokens) for it in items) > model.cfg.n_ctx
    _assert_same(choice_logprobs(model, items, progress=False),
                 per_choice_logprobs(model, items, progress=False))


def test_each_context_is_computed_once(models):
    """The embedding sees one row per query (the packed row), never one per choice."""
    model = models["gpt2"]
    items = _items(model, "hellaswag") + _items(model, "winogrande")
    seen: list[int] = []

    def count(x, hook):
        seen.extend([x.shape[1]] * x.shape[0])
        return x

    scoring._can_pack(model)  # the one-time probe runs outside the count
    with model.hooks(fwd_hooks=[("hook_embed", count)]):
        choice_logprobs(model, items, batch_size=1, progress=False)
    assert seen == sorted((len(pack(it).tokens) for it in items), reverse=True)
    contexts = sum(len(it.context_ids) for it in items)
    choice_tokens = sum(len(c) for it in items for c in it.choice_ids)
    assert sum(seen) <= contexts + choice_tokens


def test_pack_shared_context_and_targets():
    it = Item([5, 6, 7], [[8, 9], [8, 10, 11], [12]])
    p = pack(it)
    # rows [5,6,7,8], [5,6,7,8,10], [5,6,7]: common prefix [5,6,7] (row 2 ends there)
    assert p.tokens == [5, 6, 7, 8, 8, 10]
    assert p.positions == [0, 1, 2, 3, 3, 4]
    assert p.segment == [-1, -1, -1, 0, 1, 1]
    assert p.targets == [(2, 8, 0), (3, 9, 0), (2, 8, 1), (4, 10, 1), (5, 11, 1), (2, 12, 2)]


def test_pack_common_prefix_reaches_into_choices_and_per_choice_contexts():
    p = pack(Item([5, 6], [[7, 8, 9], [7, 8, 10]]))
    assert p.tokens == [5, 6, 7, 8] and p.segment == [-1] * 4  # rows equal: nothing after the prefix
    assert p.targets == [(1, 7, 0), (2, 8, 0), (3, 9, 0), (1, 7, 1), (2, 8, 1), (3, 10, 1)]
    w = pack(Item([1, 2, 3], [[9, 4], [9, 4]], contexts_ids=[[1, 2, 3], [1, 2, 6, 7]]))
    # winogrande: rows [1,2,3,9], [1,2,6,7,9] share [1,2]
    assert w.tokens == [1, 2, 3, 9, 6, 7, 9]
    assert w.positions == [0, 1, 2, 3, 2, 3, 4]
    assert w.targets == [(2, 9, 0), (3, 4, 0), (5, 9, 1), (6, 4, 1)]
    e = pack(Item([1, 2], [[], [3]]))  # an empty choice scores 0 (no targets), as before
    assert e.targets == [(1, 3, 1)]


def test_packed_mask_by_hand():
    seg = torch.tensor([[-1, -1, 0, 0, 1, -2]])
    visible = packed_mask(seg)[0, 0] == 0
    want = torch.tensor([[1, 0, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0, 0],
                         [1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 0, 0],
                         [1, 1, 0, 0, 1, 0],
                         [1, 1, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(visible, want)
    assert packed_mask(seg, torch.float16).dtype == torch.float16


def test_probe_failure_falls_back_to_per_choice(models, monkeypatch):
    model = models["neox"]
    items = _items(model, "copa")
    monkeypatch.setattr(scoring, "_PACKING_OK", scoring.weakref.WeakKeyDictionary())
    # a mask that lets every choice see the others: the probe must catch it
    monkeypatch.setattr(scoring, "packed_mask", lambda seg, dtype=torch.float32: torch.zeros(
        seg.shape[0], 1, seg.shape[1], seg.shape[1], dtype=dtype).masked_fill_(
        ~torch.ones(seg.shape[1], seg.shape[1], dtype=torch.bool).tril(), torch.finfo(dtype).min))
    with pytest.warns(UserWarning, match="shared-context scoring does not reproduce"):
        got = choice_logprobs(model, items, progress=False)
    assert scoring._PACKING_OK[model] is False
    _assert_same(got, per_choice_logprobs(model, items, progress=False))


def test_plain_callable_uses_per_choice(models):
    model = models["qwen2"]
    items = _items(model, "piqa")

    def fn(tokens):
        return model(tokens)

    _assert_same(choice_logprobs(fn, items, progress=False), per_choice_logprobs(model, items, progress=False))


def _leaky_mask(seg, dtype=torch.float32):
    """Every choice on one segment: later choices see the earlier ones."""
    return packed_mask(torch.where(seg >= 0, 0, seg), dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_probe_catches_a_leaking_mask_in_any_precision(tiny_dir, monkeypatch, dtype):
    from headlens.model.loading import load_model

    model = load_model(str(tiny_dir / "llama"), device="cpu", dtype=dtype)
    assert scoring._probe_packing(model)  # bfloat16: layouts round 1e-2 apart, still accepted
    monkeypatch.setattr(scoring, "packed_mask", _leaky_mask)
    assert not scoring._probe_packing(model)
