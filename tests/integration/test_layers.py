"""Layer pruning: angular distances, block removal, saving, LM loss, healing, CLI.

Tolerances: distances and logits are compared at 1e-5 absolute (fp32 model, fp64 distance
arithmetic; observed differences are ~1e-8).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from headlens.model import hooknames
from headlens.errors import HeadlensError
from headlens.analyses.layers import layer_distances, lm_loss, pruning_curve, residual_points
from headlens.model.surgery import clean_hf_copy, deepest_block, remove_layers, save_model
from headlens.model.loading import load_model
from headlens.tasks.texts import last_index
from tests.builders import ARCHS, build_tiny

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "yes no",
    "a stitch in time saves nine and the early bird catches the worm",
    "headlens measures attention heads",
    "copy reverse successor larger label mapping key value recall and the quick brown fox",
]
IDENTITY_LAYERS = (1, 2)  # of a 4-layer model


@pytest.fixture(scope="module")
def deep_models(tmp_path_factory):
    """4-layer gpt2 and llama, plus copies whose layers 1 and 2 are exact identities."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("deep")
    out = {}
    for arch in ("gpt2", "llama"):
        folder = build_tiny(arch, root / arch, n_layers=4)
        hf = AutoModelForCausalLM.from_pretrained(str(folder))
        with torch.no_grad():
            for i in IDENTITY_LAYERS:
                if arch == "gpt2":  # attention and MLP outputs (weights and biases) set to zero
                    block = hf.transformer.h[i]
                    outs = [block.attn.c_proj, block.mlp.c_proj]
                else:
                    block = hf.model.layers[i]
                    outs = [block.self_attn.o_proj, block.mlp.down_proj]
                for lin in outs:
                    lin.weight.zero_()
                    if getattr(lin, "bias", None) is not None:
                        lin.bias.zero_()
        ident = root / f"{arch}-identity"
        shutil.copytree(folder, ident)
        hf.save_pretrained(str(ident))
        out[arch] = load_model(str(folder), device="cpu")
        out[f"{arch}-identity"] = load_model(str(ident), device="cpu")
    return out


def _direct_distances(model, texts):
    """Per text, one unpadded run; every (l, n) pair by cosine_similarity in a plain loop."""
    L = model.cfg.n_layers
    total = torch.zeros(L + 1, L + 1, dtype=torch.float64)
    for text in texts:
        tokens = torch.tensor([[model.tokenizer.bos_token_id] +
                               model.tokenizer(text, add_special_tokens=False)["input_ids"]])
        _, cache = model.run_with_cache(tokens)
        xs = [cache[hooknames.resid_pre(layer)][0, -1].double() for layer in range(L)]
        xs.append(cache[hooknames.resid_post(L - 1)][0, -1].double())
        for n in range(1, L + 1):
            for start in range(L + 1 - n):
                cos = torch.nn.functional.cosine_similarity(xs[start], xs[start + n], dim=0)
                total[n, start] += math.acos(max(-1.0, min(1.0, float(cos)))) / math.pi
    return total / len(texts)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_distances_equal_direct_two_pass(arch, deep_models):
    model = deep_models[arch]
    dist = layer_distances(model, TEXTS, batch_size=3)  # padded batches of mixed lengths
    ref = _direct_distances(model, TEXTS)
    L = model.cfg.n_layers
    for n in range(1, L + 1):
        got = dist.distance[n, : L + 1 - n].double()
        assert torch.allclose(got, ref[n, : L + 1 - n], atol=1e-5), (n, got, ref[n])
        assert torch.isnan(dist.distance[n, L + 1 - n:]).all()
        assert int(dist.best_start[n]) == int(ref[n, : L + 1 - n].argmin())
    assert dist.n_samples == len(TEXTS) and dist.n_truncated == 0
    as_json = dist.to_dict()
    assert [len(row) for row in as_json["distance"]] == [L, L - 1, L - 2, L - 3]


def test_padding_is_never_the_last_token(tiny_models):
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_index(left).tolist() == [3, 3, 3]
    assert last_index(left.flip(-1)).tolist() == [1, 3, 0]
    with pytest.raises(HeadlensError):
        last_index(torch.tensor([[0, 0]]))
    for arch in ARCHS:
        model = tiny_models[arch]
        pad = model.tokenizer.pad_token_id
        a, b = [0, 5, 6, 7, 8, 9], [0, 11, 12]
        single = torch.cat([residual_points(model, torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long))
                            for x in (a, b)])
        right = torch.tensor([a, b + [pad] * 3])
        left = torch.tensor([a, [pad] * 3 + b])
        rmask = (right != pad).long()
        lmask = (left != pad).long()
        for tokens, mask in ((right, rmask), (left, lmask)):
            assert torch.allclose(residual_points(model, tokens, mask), single, atol=1e-5), arch
    model = tiny_models["gpt2"]
    assert torch.allclose(layer_distances(model, TEXTS, batch_size=5).pairwise,
                          layer_distances(model, TEXTS, batch_size=1).pairwise, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_identity_block_has_distance_zero_and_removal_keeps_logits(arch, deep_models):
    model = deep_models[f"{arch}-identity"]
    dist = layer_distances(model, TEXTS)
    first, last = IDENTITY_LAYERS
    assert float(dist.distance[1, first]) < 1e-5 and float(dist.distance[1, last]) < 1e-5
    assert float(dist.distance[2, first]) < 1e-5
    assert dist.best(2) == (first, pytest.approx(0.0, abs=1e-5))
    assert float(dist.distance[1, 0]) > 1e-3 and float(dist.distance[1, 3]) > 1e-3  # real layers

    tokens = torch.randint(3, model.cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(tokens)
        pruned = remove_layers(model, first, last - first + 1)
        assert pruned.cfg.n_layers == 2 and model.cfg.n_layers == 4
        assert (pruned(tokens) - base).abs().max() <= 1e-5
        other = remove_layers(model, 0, 2)  # removing real layers must change the output
        assert (other(tokens) - base).abs().max() > 1e-3
        assert (model(tokens) - base).abs().max() == 0  # the input model is untouched


@pytest.mark.parametrize("arch", ARCHS)
def test_removal_equals_skipping_layers_with_hooks(arch, tiny_models):
    """Removing layer 0 of a 2-layer model = feeding x(0) into layer 1 of the original."""
    model = tiny_models[arch]
    tokens = torch.randint(3, model.cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(1))
    kept = {}

    def grab(x, hook):
        kept["x"] = x.clone()
        return x

    with torch.no_grad():
        ref = model.run_with_hooks(tokens, fwd_hooks=[(hooknames.resid_pre(0), grab),
                                                      (hooknames.resid_pre(1), lambda x, hook: kept["x"])])
        pruned = remove_layers(model, 0, 1)
        assert (pruned(tokens) - ref).abs().max() <= 1e-5
    hf = clean_hf_copy(pruned)
    assert hf.config.num_hidden_layers == 1
    assert all(m.layer_idx == 0 for m in hf.modules() if isinstance(getattr(m, "layer_idx", None), int))
    prompt = tokens[:1, :5]
    with torch.no_grad():  # the KV cache (indexed by layer_idx) gives the same greedy text
        cached = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                             do_sample=False, use_cache=True, pad_token_id=2)
        uncached = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4,
                               do_sample=False, use_cache=False, pad_token_id=2)
    assert torch.equal(cached, uncached)


def test_save_load_round_trip(deep_models, tmp_path):
    from transformers import AutoModelForCausalLM

    model = deep_models["llama"]
    pruned = remove_layers(model, 1, 2)
    folder = save_model(pruned, tmp_path / "pruned")
    loaded = load_model(str(folder), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tokens = torch.randint(3, model.cfg.d_vocab, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert loaded.cfg.n_layers == 2 and hf.config.num_hidden_layers == 2
        assert (loaded(tokens) - pruned(tokens)).abs().max() <= 1e-5
        assert (hf(tokens).logits - pruned(tokens)).abs().max() <= 1e-5
    assert json.loads((folder / "headlens.json").read_text())["removed_layers"] == [1, 2]


def test_bad_input(deep_models, tmp_path):
    model = deep_models["gpt2"]
    assert deepest_block(6, 2) == 3  # layers 3, 4 of 0..5: the deepest but the last
    assert deepest_block(4, 3) == 0
    for n in (4, 5, 0):
        with pytest.raises(HeadlensError):
            remove_layers(model, 0, n)
        with pytest.raises(HeadlensError):
            deepest_block(4, n)
    with pytest.raises(HeadlensError):
        remove_layers(model, 3, 2)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(HeadlensError, match="no non-empty lines"):
        layer_distances(model, str(empty))
    with pytest.raises(HeadlensError):
        layer_distances(model, [])
    with pytest.raises(HeadlensError):
        layer_distances(model, TEXTS, max_len=10_000)
    short = layer_distances(model, TEXTS, max_len=4)
    n_tokens = [1 + len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]
    assert short.n_truncated == sum(k > 4 for k in n_tokens) > 0


def test_lm_loss_matches_hf_and_pads_are_ignored(tiny_models, tiny_dir):
    from transformers import AutoModelForCausalLM

    model = tiny_models["opt"]
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_dir / "opt")).eval()
    per_text, counts = [], []
    for text in TEXTS:
        ids = torch.tensor([[model.tokenizer.bos_token_id] + model.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            per_text.append(float(hf(ids, labels=ids).loss))  # HF's own shifted cross-entropy
        counts.append(ids.shape[1] - 1)
        assert lm_loss(model, [text]) == pytest.approx(per_text[-1], abs=1e-5)
    pooled = sum(x * c for x, c in zip(per_text, counts)) / sum(counts)
    assert lm_loss(model, TEXTS, batch_size=3) == pytest.approx(pooled, abs=1e-5)


def test_healing_lowers_heldout_loss(tiny_models, monkeypatch):
    import copy

    from headlens.analyses import healing
    from headlens.analyses.healing import heal

    model = tiny_models["gpt2"]
    held = ["the quick brown fox saves nine", "question answer jumps over the lazy dog"]
    train = [f"{a} {b}" for a in ("the quick brown fox", "a stitch in time", "question answer")
             for b in ("jumps over the lazy dog", "saves nine", "true false neither", "yes no")
             if f"{a} {b}" not in held] * 2  # held-out texts are never trained on (heal checks it)
    before = lm_loss(model, held)
    result = heal(model, train, heldout=held, steps=12, rank=4, lr=1e-2, batch_size=4, seed=0)
    assert result.heldout_loss_before == pytest.approx(before, abs=1e-5)
    assert result.heldout_loss_after < result.heldout_loss_before - 0.05
    assert lm_loss(result.model, held) == pytest.approx(result.heldout_loss_after, abs=1e-5)
    assert lm_loss(model, held) == before  # the input model is untouched
    # the QLoRA path with a stand-in "4-bit" base (a plain copy; no GPU here): same seed, so the
    # adapter merged into the full-precision base must give the same model (also shows seeding)
    monkeypatch.setattr(healing, "_use_4bit", lambda quantize: True)
    monkeypatch.setattr(healing, "_load_4bit", lambda hf, tok: copy.deepcopy(hf))
    again = heal(model, train, heldout=held, steps=12, rank=4, lr=1e-2, batch_size=4, seed=0)
    assert again.quantized
    assert again.heldout_loss_after == pytest.approx(result.heldout_loss_after, abs=1e-6)


def test_pruning_curve_and_figures(deep_models):
    from headlens.report.layers import distance_heatmap, pruning_curves

    model = deep_models["llama-identity"]
    dist = layer_distances(model, TEXTS)
    frame = pruning_curve(model, TEXTS, ns=[0, 2], distances=dist)
    assert set(frame["method"]) == {"similarity", "deepest"}
    sim = frame[(frame.method == "similarity") & (frame.n == 2)].iloc[0]
    deep = frame[(frame.method == "deepest") & (frame.n == 2)].iloc[0]
    base = frame[frame.n == 0].iloc[0]
    assert sim.start == 1 and deep.start == 1  # both pick layers 1-2 on a 4-layer model
    assert sim.loss == pytest.approx(base.loss, abs=1e-5)  # identity layers removed
    assert sim.fraction_removed == 0.5
    assert len(distance_heatmap(dist).data) == 2
    assert len(pruning_curves(frame).data) == 2


def test_cli_layers(deep_models, tmp_path):
    from typer.testing import CliRunner

    from headlens.cli.app import app

    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXTS) + "\n")
    folder = str(deep_models["llama-identity"].headlens_info.name)
    runner = CliRunner()
    res = runner.invoke(app, ["layers", "distances", "--model", folder, "--text-file", str(text),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["best_start"][1] == 1 and [len(r) for r in out["distance"]] == [4, 3, 2, 1]
    res = runner.invoke(app, ["layers", "prune", "--model", folder, "--n", "2", "--text-file", str(text),
                              "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "removed layers 1..2" in res.stdout
    assert load_model(str(tmp_path / "p"), device="cpu").cfg.n_layers == 2


def test_pruning_curve_accuracy_per_task(deep_models, tmp_path):
    """Accuracy columns come from headlens.scoring.evaluate; removing identity layers keeps them."""
    import json

    task = tmp_path / "pick.jsonl"
    task.write_text("\n".join(json.dumps({"context": f"the quick brown fox {w}", "choices": [" dog", " cat"],
                                          "gold": i % 2}) for i, w in enumerate(["jumps", "runs", "sits", "naps"])) + "\n")
    model = deep_models["llama-identity"]
    frame = pruning_curve(model, TEXTS, ns=[0, 2], methods=("similarity",), tasks=[str(task)], shots=0)
    col = f"acc_{str(task)}"
    assert col in frame and frame[col].between(0, 1).all()
    assert frame.loc[frame.n == 2, col].item() == frame.loc[frame.n == 0, col].item()
