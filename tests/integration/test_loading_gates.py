"""Loading real architectures from local folders, and the head/FFN gates."""

from __future__ import annotations

import pytest
import torch

from headlens.model import hooknames
from headlens.errors import HeadlensError
from headlens.model.gates import Gates, gated, mask_lowest, ones
from headlens.model.loading import load_model
from tests.builders import ARCHS


def _tokens(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.cfg.d_vocab, (2, 12), generator=g)


@pytest.mark.parametrize("arch", ARCHS)
def test_loaded_model_is_frozen_eval_and_matches_hf(arch, tiny_models, tiny_dir):
    from transformers import AutoModelForCausalLM

    model = tiny_models[arch]
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert model.headlens_info.source == "local"
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_dir / arch)).eval()
    toks = _tokens(model)
    with torch.no_grad():
        # parity with Hugging Face logits: fp32 on CPU, 1e-5 absolute
        assert torch.allclose(model(toks), hf(toks).logits, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_gate_one_is_identity_and_gate_zero_is_ablation(arch, tiny_models):
    model = tiny_models[arch]
    toks = _tokens(model)
    with torch.no_grad():
        base = model(toks)
        g = ones(model)
        with gated(model, g):
            same = model(toks)
        assert (same - base).abs().max() <= 1e-6

        heads = torch.ones(model.cfg.n_layers, model.cfg.n_heads)
        heads[1, 2] = 0.0

        def zero_head(z, hook):
            z = z.clone()
            z[:, :, 2] = 0.0
            return z

        with gated(model, heads=heads):
            gated_out = model(toks)
        ablated = model.run_with_hooks(toks, fwd_hooks=[(hooknames.z(1), zero_head)])
        assert (gated_out - ablated).abs().max() <= 1e-6
        assert (gated_out - base).abs().max() > 1e-4  # the head mattered at all

        ffn = torch.ones(model.cfg.n_layers)
        ffn[0] = 0.0
        with gated(model, ffn=ffn):
            no_ffn = model(toks)
        zeroed = model.run_with_hooks(toks, fwd_hooks=[(hooknames.mlp_out(0), lambda x, hook: x * 0)])
        assert (no_ffn - zeroed).abs().max() <= 1e-6
        assert (no_ffn - base).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_gate_gradients_reach_gates_with_frozen_parameters(arch, tiny_models):
    model = tiny_models[arch]
    g = ones(model, requires_grad=True)
    with gated(model, g):
        model(_tokens(model)).logsumexp(-1).sum().backward()
    assert g.heads.grad is not None and g.heads.grad.abs().sum() > 0
    assert g.ffn.grad is not None and g.ffn.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_gate_shape_mismatch_is_a_clear_error(tiny_models):
    model = tiny_models["gpt2"]
    with pytest.raises(HeadlensError, match="n_layers, n_heads"):
        with gated(model, Gates(heads=torch.ones(3, 3))):
            pass


def test_mask_lowest_zeroes_exactly_the_lowest():
    scores = torch.tensor([[0.5, 0.1], [0.9, 0.3]])
    m = mask_lowest(scores, 0.5)
    assert m.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert mask_lowest(scores, 0.0).sum() == 4
    with pytest.raises(HeadlensError):
        mask_lowest(scores, 1.5)


def test_missing_path_and_offline_hub_errors(tmp_path, monkeypatch):
    with pytest.raises(HeadlensError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HeadlensError, match="config.json"):
        load_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HeadlensError, match="offline"):
        load_model("some-org/some-model-that-is-not-here")


def test_missing_tokenizer_is_a_clear_error(tiny_dir, tmp_path):
    import shutil

    folder = tmp_path / "notok"
    folder.mkdir()
    for f in (tiny_dir / "gpt2").iterdir():
        if f.name.startswith(("config", "model", "generation")):
            shutil.copy(f, folder / f.name)
    with pytest.raises(HeadlensError, match="tokenizer"):
        load_model(str(folder))


def test_bad_dtype(tiny_dir):
    with pytest.raises(HeadlensError, match="dtype"):
        load_model(str(tiny_dir / "gpt2"), dtype="float8")  # type: ignore[arg-type]
