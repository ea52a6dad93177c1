"""Gradient-gate importance against an independent computation on tiny real architectures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from headlens.model import hooknames
from headlens.errors import HeadlensError
from headlens.analyses.importance import aggregate, gold_nll, head_importance, normalize, pack_gold
from headlens.results.scores import Scores


@dataclass
class Item:
    context_ids: list[int]
    choice_ids: list[list[int]]
    gold: int


def _items(vocab, n=5, seed=0):
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ctx = g.integers(3, vocab, g.integers(4, 9)).tolist()
        choices = [g.integers(3, vocab, g.integers(1, 4)).tolist() for _ in range(3)]
        out.append(Item(ctx, choices, int(g.integers(0, 3))))
    return out


def _reference(model, items):
    """Per-token a_t . g_t by replacing hook_z/hook_mlp_out with leaf tensors, one example at a time."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    bansal_h, michel_h = np.zeros((L, H)), np.zeros((L, H))
    bansal_f, michel_f = np.zeros(L), np.zeros(L)
    T = 0
    for it in items:
        toks, attn, target = pack_gold([it], 0)
        leaves = {}

        def grab(name):
            def hook(x, hook):
                leaves[name] = x  # a non-leaf tensor of the graph; autograd.grad gives dL/dx
                return x

            return hook

        def track(x, hook):  # make the residual stream require grad (parameters are frozen)
            return x.detach().requires_grad_(True)

        names = [hooknames.z(l) for l in range(L)] + [hooknames.mlp_out(l) for l in range(L)]
        fwd = [(hooknames.embed(), track)] + [(n, grab(n)) for n in names]
        with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
            loss = gold_nll(model(toks), toks, target).sum()
            keys = list(leaves)
            grads = torch.autograd.grad(loss, [leaves[k] for k in keys])
        for k, g in zip(keys, grads):
            a = leaves[k].detach()
            per_tok = (a * g).sum(-1)[0].double().numpy()  # [pos, heads] or [pos]
            layer = hooknames.layer_of(k)
            if hooknames.is_z(k):
                bansal_h[layer] += np.abs(per_tok).sum(0)
                michel_h[layer] += np.abs(per_tok.sum(0))
            else:
                bansal_f[layer] += np.abs(per_tok).sum()
                michel_f[layer] += abs(per_tok.sum())
        T += toks.shape[1]
    n = len(items)
    return bansal_h / T, michel_h / n, bansal_f / T, michel_f / n


@pytest.mark.parametrize("arch", ["gpt2", "opt", "neox", "llama"])
def test_gate_importance_equals_direct_per_token_gradients(arch, tiny_models):
    model = tiny_models[arch]
    items = _items(model.cfg.d_vocab)
    bh, mh, bf, mf = _reference(model, items)
    b = head_importance(model, items, variant="bansal", batch_size=3, progress=False)
    m = head_importance(model, items, variant="michel", batch_size=3, progress=False)
    # fp32 on CPU; batching and padding change summation order only: 1e-5 relative
    np.testing.assert_allclose(b.heads.values, bh, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(m.heads.values, mh, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(b.ffn.values, bf, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(m.ffn.values, mf, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())
    assert (b.heads.values > 0).all()


def test_importance_errors(tiny_models):
    model = tiny_models["gpt2"]
    with pytest.raises(HeadlensError, match="no examples"):
        head_importance(model, [], progress=False)
    with pytest.raises(HeadlensError, match="did you mean"):
        head_importance(model, _items(50, 1), variant="michell", progress=False)  # type: ignore


def test_nonfinite_gradients_are_reported_not_written(tiny_models, monkeypatch):
    import headlens.analyses.importance as imp

    model = tiny_models["gpt2"]

    def nan_grads(*a, **k):
        L, H = model.cfg.n_layers, model.cfg.n_heads
        b, p = a[1].shape
        return torch.full((L, b, p, H), float("nan")), torch.ones(L, b, p)

    monkeypatch.setattr(imp, "gate_gradients", nan_grads)
    with pytest.raises(HeadlensError, match="float32 or bfloat16"):
        head_importance(model, _items(model.cfg.d_vocab, 2), progress=False)


def test_normalize_and_aggregate():
    v = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(normalize(v, "l2_layer"), [[0.6, 0.8], [0, 0]])
    np.testing.assert_allclose(normalize(v, "sum").sum(), 1.0)
    big = Scores(np.array([[100.0, 0.0]]), metric="head_importance", meta={"task": "a"})
    small = Scores(np.array([[0.0, 1.0]]), metric="head_importance", meta={"task": "b"})
    # raw mean would rank head 0 first by far; normalised mean treats the tasks equally
    agg = aggregate([big, small])
    np.testing.assert_allclose(agg.values, [[0.5, 0.5]])
    with pytest.raises(HeadlensError):
        normalize(v, "max")  # type: ignore


def _reference_scaling_loop(model, items):
    """The study code's importance, written as its loop: one example at a time, Hugging Face
    style MEAN NLL over the gold tokens, |z . dL/dz| summed over every position, then layers
    before the last / sum(N_i - 1) and the last layer / sum(C_i)."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    total = np.zeros((L, H))
    tot_tokens = eff_tokens = 0
    for it in items:
        ctx, cont = list(it.context_ids), list(it.choice_ids[it.gold])
        toks = torch.tensor([ctx + cont])
        acts = {}

        def grab(name):
            def hook(x, hook):
                acts[name] = x
                return x

            return hook

        def track(x, hook):
            return x.detach().requires_grad_(True)

        fwd = [(hooknames.embed(), track)] + [(hooknames.z(l), grab(hooknames.z(l))) for l in range(L)]
        with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
            logp = torch.log_softmax(model(toks)[0].double(), -1)
            # position p predicts token p + 1; the gold tokens sit at len(ctx) .. end
            nll = [-logp[len(ctx) - 1 + j, tok] for j, tok in enumerate(cont)]
            loss = torch.stack(nll).mean()
            names = [hooknames.z(l) for l in range(L)]
            grads = torch.autograd.grad(loss, [acts[n] for n in names])
        for layer, (n, g) in enumerate(zip(names, grads)):
            dot = (acts[n].detach().double() * g.double()).sum(-1)[0]  # [pos, heads]
            total[layer] += dot.abs().sum(0).numpy()
        tot_tokens += len(ctx) + len(cont) - 1
        eff_tokens += len(cont)
    total[:-1] /= tot_tokens
    total[-1] /= eff_tokens
    return total


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reference_normalisation_equals_the_reference_loop(arch, tiny_models):
    model = tiny_models[arch]
    items = _items(model.cfg.d_vocab, n=6, seed=1)
    expected = _reference_scaling_loop(model, items)
    got = head_importance(model, items, variant="bansal", normalize="reference", batch_size=4, progress=False)
    # fp32 forward, batched and padded vs one at a time: 1e-4 relative
    np.testing.assert_allclose(got.heads.values, expected, rtol=1e-4, atol=1e-8)
    assert got.heads.meta["normalize"] == "reference"
    default = head_importance(model, items, variant="bansal", batch_size=4, progress=False)
    assert not np.allclose(default.heads.values, expected, rtol=1e-2)  # a different definition
    with pytest.raises(HeadlensError, match="variant='bansal'"):
        head_importance(model, items, variant="michel", normalize="reference", progress=False)
    with pytest.raises(HeadlensError, match="did you mean"):
        head_importance(model, items, normalize="referense", progress=False)  # type: ignore[arg-type]


def test_examples_without_a_correct_answer_are_not_scored():
    """A ReCoRD document whose answers match no entity has gold_set () and a placeholder gold:
    importance must skip it, not train on the placeholder (it did before)."""
    from dataclasses import replace

    from headlens.analyses.importance import head_importance
    from headlens.model.loading import load_model
    from headlens.tasks.prompts import prepare

    model = load_model("tiny-icl")
    items = prepare(model, "letter_first", 1, limit=6).items
    unanswerable = replace(items[0], gold=1, gold_set=())
    base = head_importance(model, items[1:], progress=False)
    with_it = head_importance(model, [unanswerable] + list(items[1:]), progress=False)
    np.testing.assert_allclose(with_it.heads.values, base.heads.values, rtol=1e-6)
    assert with_it.heads.meta["n_without_answer"] == 1
