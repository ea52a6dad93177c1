"""Layer removal keeps every surviving layer's computation (GPT-2's inverse-layer attention
scale), saving never loses or overwrites a model, healing and pruning curves keep their texts
apart. Logits are compared at 1e-5 absolute (fp32; observed differences ~1e-6)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from headlens.errors import HeadlensError
from headlens.model.loading import load_model
from headlens.model.surgery import remove_layers, save_model
from tests.builders import build_tiny

TEXTS = [f"the quick brown fox {w} over the lazy dog" for w in
         ("jumps", "runs", "sits", "naps", "looks", "yes", "no", "time", "nine", "bird", "worm", "early")]


class Skip(nn.Module):
    """A GPT-2 block that passes the residual stream through unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@pytest.fixture(scope="module")
def scaled_gpt2(tmp_path_factory):
    """4-layer GPT-2 with scale_attn_by_inverse_layer_idx and sharp attention (so the scale matters)."""
    from transformers import AutoModelForCausalLM

    folder = build_tiny("gpt2", tmp_path_factory.mktemp("scaled") / "gpt2", layers=4,
                        scale_attn_by_inverse_layer_idx=True)
    hf = AutoModelForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        for block in hf.transformer.h:
            block.attn.c_attn.weight[:, :64] *= 30  # queries and keys: scores of order 10
    hf.save_pretrained(str(folder))
    return folder, hf.eval()


@pytest.mark.parametrize("start", [0, 1])
def test_gpt2_inverse_layer_scale_survives_removal(scaled_gpt2, tmp_path, start):
    """Removing block ``start`` = skipping it in the original: in memory, reloaded by headlens and by HF."""
    from transformers import AutoModelForCausalLM

    folder, hf = scaled_gpt2
    assert hf.config.scale_attn_by_inverse_layer_idx
    skipped = copy.deepcopy(hf)
    skipped.transformer.h[start] = Skip()
    tokens = torch.randint(3, hf.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = skipped(tokens).logits
        unscaled = copy.deepcopy(skipped)  # what renumbering alone would compute: later layers re-scaled
        for i, block in enumerate(b for b in unscaled.transformer.h if not isinstance(b, Skip)):
            block.attn.scaling = block.attn.head_dim ** -0.5 / (i + 1)
        assert (unscaled(tokens).logits - want).abs().max() > 1e-2  # the scale matters here
        pruned = remove_layers(load_model(str(folder), device="cpu"), start, 1)
        assert (pruned(tokens) - want).abs().max() <= 1e-5
        saved = save_model(pruned, tmp_path / "pruned")
        assert (load_model(str(saved), device="cpu")(tokens) - want).abs().max() <= 1e-5
        reloaded = AutoModelForCausalLM.from_pretrained(str(saved)).eval()
        assert [b.attn.layer_idx for b in reloaded.transformer.h] == [0, 1, 2]
        assert (reloaded(tokens).logits - want).abs().max() <= 1e-5


def test_save_model_refuses_nan_weights_and_its_own_folder(scaled_gpt2, tmp_path):
    folder, _ = scaled_gpt2
    model = load_model(str(folder), device="cpu")
    pruned = remove_layers(model, 3, 1)
    with pytest.raises(HeadlensError, match="would overwrite the input model"):
        save_model(pruned, folder)  # the pruned model remembers where its parent came from
    with pytest.raises(HeadlensError, match="would overwrite the input model"):
        save_model(model, folder.parent)  # a folder containing the input
    broken = remove_layers(model, 3, 1)
    with torch.no_grad():
        next(broken.original_model.parameters()).fill_(float("nan"))
    with pytest.raises(HeadlensError, match="NaN or inf"):
        save_model(broken, tmp_path / "broken")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one
    first = save_model(pruned, tmp_path / "out")
    again = save_model(remove_layers(model, 0, 2), tmp_path / "out")  # an earlier checkpoint: replaced
    assert first == again and json.loads((again / "headlens.json").read_text())["removed_layers"] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_heal_keeps_training_and_heldout_apart_and_checks_options(scaled_gpt2):
    from headlens.analyses.healing import heal

    model = load_model(str(scaled_gpt2[0]), device="cpu")
    with pytest.raises(HeadlensError, match="held-out texts also appear among the training texts"):
        heal(model, TEXTS, heldout=TEXTS[:2], steps=1)
    for kwargs, fragment in (({"lr": -1.0}, "lr must be a finite number > 0"),
                             ({"lr": float("nan")}, "lr must be"),
                             ({"steps": 0, "rank": 0}, "steps must be an integer >= 1, got 0; rank must be"),
                             ({"heldout_fraction": 1.5}, "heldout fraction"),
                             ({"batch_size": 0}, "batch_size")):
        with pytest.raises(HeadlensError, match=fragment):
            heal(model, TEXTS, **kwargs)


def test_heal_stops_on_a_nan_loss(scaled_gpt2):
    from headlens.analyses.healing import heal

    model = load_model(str(scaled_gpt2[0]), device="cpu")
    with pytest.raises(HeadlensError, match=r"training loss became nan .* at step \d+ of 6 with lr=1e\+06"):
        heal(model, TEXTS, steps=6, lr=1e6, batch_size=4, max_len=16)


def test_pruning_curve_keeps_evaluation_texts_apart(scaled_gpt2):
    from headlens.analyses.layers import layer_distances, pruning_curve
    from headlens.tasks.texts import split_texts

    model = load_model(str(scaled_gpt2[0]), device="cpu")
    with pytest.raises(HeadlensError, match="evaluation .texts."):
        pruning_curve(model, TEXTS[:6], ns=[1], heal=True, heal_texts=TEXTS[4:])
    with pytest.raises(HeadlensError, match="calibration"):
        pruning_curve(model, TEXTS[:6], ns=[1], calibration_texts=TEXTS[5:])
    splits = split_texts(TEXTS, n_calibration=4, n_heal=4, n_eval=4, seed=0)
    frame = pruning_curve(model, splits, ns=[0, 2], methods=("similarity",))
    start = layer_distances(model, list(splits.calibration)).best(2)[0]
    assert frame.loc[frame.n == 2, "start"].item() == start  # chosen on the calibration texts
