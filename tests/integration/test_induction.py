"""Induction scores on a planted model (ground truth), on tiny real architectures, and the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from headlens.errors import HeadlensError
from headlens.model.gates import gated
from headlens.model.loading import load_model
from headlens.analyses.induction import (
    _paper_run,
    attention_concentration,
    copying,
    prefix_matching,
    repeated_random_tokens,
    sequence_length,
)
from tests.planted import BOS_HEAD, INDUCTION_HEAD, N_VOCAB, PREV_HEAD, build_planted

ROOT = Path(__file__).resolve().parents[2]
SEEDS = [0, 1, 2]


def _reference():
    spec = importlib.util.spec_from_file_location("induction_reference", ROOT / "benchmarks" / "induction_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _others(values: np.ndarray, head: tuple[int, int]) -> np.ndarray:
    mask = np.ones(values.shape, dtype=bool)
    mask[head] = False
    return values[mask]


# ----------------------------------------------------------------------------- planted model
def _induction_accuracy(model, heads: torch.Tensor | None = None) -> tuple[float, float]:
    """(argmax accuracy, mean prob) of the next token over copies 2-4 of [BOS]+S*4, seed 0."""
    toks = repeated_random_tokens(model, 0)
    L = sequence_length(0)
    with torch.no_grad():
        if heads is None:
            logits = model(toks[None])[0]
        else:
            with gated(model, heads=heads):
                logits = model(toks[None])[0]
    q = torch.arange(1 + L, len(toks) - 1)
    probs = logits[q].softmax(-1).gather(-1, toks[q + 1, None]).squeeze(-1)
    return float((logits[q].argmax(-1) == toks[q + 1]).float().mean()), float(probs.mean())


def test_planted_model_predicts_through_its_induction_head(planted):
    acc, prob = _induction_accuracy(planted)
    assert acc == 1.0 and prob > 0.99
    for head, broken in ((INDUCTION_HEAD, True), (PREV_HEAD, True), ((1, 0), False), ((0, 3), False)):
        mask = torch.ones(2, 4)
        mask[head] = 0.0
        acc_ablated, prob_ablated = _induction_accuracy(planted, mask)
        if broken:  # the induction circuit needs both heads: prediction collapses
            assert acc_ablated < 0.1 and prob_ablated < 2.0 / N_VOCAB, head
        else:
            assert acc_ablated == 1.0 and prob_ablated == pytest.approx(prob, abs=1e-6), head


def test_planted_induction_head_ranks_first_by_prefix_matching(planted):
    scores = prefix_matching(planted, SEEDS)
    assert scores.values.shape == (2, 4) and scores.std.shape == (2, 4)
    (layer, head, value), *_ = scores.top(1)
    assert (layer, head) == INDUCTION_HEAD and value >= 0.9
    assert _others(scores.values, INDUCTION_HEAD).max() < 0.2
    assert scores.meta["seeds"] == SEEDS and scores.metric == "prefix_matching"
    assert np.allclose(np.asarray(scores.meta["variance"]), scores.std ** 2)


@pytest.mark.parametrize("variant", ["paper", "corrected", "eigen"])
def test_planted_induction_head_ranks_first_by_copying(planted, variant):
    """All three variants apply to the planted head, for different reasons.

    ``corrected`` and ``eigen`` see its OV circuit copy the attended token (``corrected`` at
    the earlier copy's next token it attends to in copies 2-4; heads that write nothing sit
    at chance, 1/len(S)). ``paper`` feeds layer 1 the embeddings only, so the PREV features
    the head matches on are absent and it attends by its fallback to the current token; the
    paper variant reads the OV output of the query position, which is then the attended one.
    It ranks first there only because of that fallback (asserted below), not because the
    paper variant sees induction.
    """
    scores = copying(planted, variant, SEEDS)
    (layer, head, value), *_ = scores.top(1)
    assert (layer, head) == INDUCTION_HEAD and value >= 0.9
    assert _others(scores.values, INDUCTION_HEAD).max() < 0.1
    assert scores.meta["variant"] == variant
    if variant == "corrected":
        chance = np.mean([1 / sequence_length(s) for s in SEEDS])
        assert scores.meta["chance"] == pytest.approx(chance)
        assert np.allclose(_others(scores.values, INDUCTION_HEAD), chance, atol=1e-3)
    if variant == "paper":
        toks = repeated_random_tokens(planted, 0, n_repeats=1, length=4 * sequence_length(0))
        attended, _ = _paper_run(planted, toks)
        assert torch.equal(attended[INDUCTION_HEAD[0]][INDUCTION_HEAD[1]], torch.arange(len(toks)))


def test_corrected_copying_scores_a_copy_head_that_has_nothing_to_match_on_unique_tokens(tmp_path):
    """Without its current-token fallback, the planted induction head spreads its attention on
    unique tokens (its attention-weighted output is a mix; the old definition gave it 0.03).
    On the repeated copies it attends to the token to copy, and copies it exactly."""
    model = load_model(str(build_planted(tmp_path / "no-fallback", fallback_gap=0.0)), device="cpu")
    scores = copying(model, "corrected", SEEDS)
    assert scores.values[INDUCTION_HEAD] >= 0.9
    assert _others(scores.values, INDUCTION_HEAD).max() < 0.1
    assert attention_concentration(model, SEEDS).values[INDUCTION_HEAD] > 0.99


def test_corrected_copying_does_not_reward_a_head_fixed_on_bos(tmp_path):
    """A head that attends to BOS from everywhere and writes a constant (the BOS token) copies
    no content token: ``corrected`` puts it at chance (the old definition gave it 1.0, since
    BOS was both attended and promoted). Its sharpness shows in attention concentration."""
    model = load_model(str(build_planted(tmp_path / "bos-head", bos_head=True)), device="cpu")
    scores = copying(model, "corrected", SEEDS)
    chance = np.mean([1 / sequence_length(s) for s in SEEDS])  # what a head writing nothing scores
    assert scores.values[BOS_HEAD] == pytest.approx(chance, abs=1e-3)
    assert scores.values[INDUCTION_HEAD] >= 0.9
    conc = attention_concentration(model, SEEDS)
    assert conc.values[BOS_HEAD] > 0.99 and conc.metric == "attention_concentration"
    assert prefix_matching(model, SEEDS).values[BOS_HEAD] < 0.01


def test_every_score_runs_in_bfloat16(planted_dir):
    """``--dtype bfloat16`` (and float16) crashed in ``corrected`` copying (float @ half)."""
    model = load_model(str(planted_dir), device="cpu", dtype="bfloat16")
    for variant in ("corrected", "paper", "eigen"):
        scores = copying(model, variant, [0])
        assert np.isfinite(scores.values).all(), variant
        assert scores.values[INDUCTION_HEAD] >= 0.9, variant
    conc = attention_concentration(model, [0])
    assert np.isfinite(conc.values).all() and conc.values[INDUCTION_HEAD] > 0.95


@pytest.mark.parametrize("which", ["planted", "gpt2"])
def test_vectorised_scores_equal_reference_loops(which, planted_dir, tiny_dir):
    """Against slow loops on the Hugging Face model itself (no TransformerLens): 1e-5 (fp32)."""
    from transformers import AutoModelForCausalLM

    from headlens.analyses.induction import prefix_matching_scores

    ref = _reference()
    path = planted_dir if which == "planted" else tiny_dir / "gpt2"
    model = load_model(str(path), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    seed = 1
    L = sequence_length(seed)
    with torch.no_grad():
        toks = repeated_random_tokens(model, seed)
        run = ref.gpt2_patterns(hf, toks)
        assert torch.allclose(run["logits"], hf(toks[None]).logits[0], atol=1e-4)
        assert np.allclose(prefix_matching(model, [seed]).values, ref.prefix_loop(run["pattern"], L).numpy(), atol=1e-5)
        spurious = torch.stack([prefix_matching_scores(p, toks, L, spurious_last_token=True) for p in run["pattern"]])
        assert np.allclose(spurious.numpy(), ref.prefix_loop(run["pattern"], L, fix=False).numpy(), atol=1e-5)
        ctoks = repeated_random_tokens(model, seed, n_repeats=1, length=4 * L)
        assert np.allclose(copying(model, "paper", [seed]).values, ref.copying_loop(hf, ctoks).numpy(), atol=1e-5)
        assert np.allclose(copying(model, "corrected", [seed]).values, ref.corrected_loop(hf, toks, L, run).numpy(),
                           atol=1e-5)
        assert np.allclose(attention_concentration(model, [seed]).values,
                           ref.concentration_loop(run["pattern"], toks, L).numpy(), atol=1e-5)
        assert np.allclose(copying(model, "eigen").values, ref.eigen_loop(hf).numpy(), atol=1e-5)


def test_scores_are_deterministic_for_a_seed(planted):
    a, b = prefix_matching(planted, [1]), prefix_matching(planted, [1])
    assert np.array_equal(a.values, b.values)
    c, d = copying(planted, "corrected", [1]), copying(planted, "corrected", [1])
    assert np.array_equal(c.values, d.values)


def test_seeds_beyond_context_or_vocabulary_are_clear_errors(planted):
    with pytest.raises(HeadlensError, match="context is 160"):
        prefix_matching(planted, 20)
    with pytest.raises(HeadlensError, match="usable"):
        copying(planted, "paper", 7)
    with pytest.raises(HeadlensError, match="did you mean"):
        copying(planted, "eigne")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- real architectures
@pytest.mark.parametrize("arch", ["gpt2", "opt", "neox", "llama"])
def test_shapes_and_ranges_on_tiny_architectures(arch, tiny_models):
    model = tiny_models[arch]
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    pm = prefix_matching(model, 2)
    assert pm.values.shape == shape and np.isfinite(pm.values).all()
    assert (pm.values >= 0).all() and (pm.values <= 1).all() and (pm.std >= 0).all()
    for variant in ("paper", "corrected"):
        c = copying(model, variant, 2, chunk_size=64)
        assert c.values.shape == shape and np.isfinite(c.values).all()
        assert (c.values >= 0).all() and (c.values <= 1).all()
    conc = attention_concentration(model, 2)
    assert conc.values.shape == shape and np.isfinite(conc.values).all()
    assert (conc.values > 0).all() and (conc.values <= 1 + 1e-6).all()
    e = copying(model, "eigen")
    assert e.values.shape == shape and (np.abs(e.values) <= 1 + 1e-9).all()
    assert np.abs(e.values).max() > 0  # random weights: not all zero


def test_eigen_maps_query_heads_to_their_kv_head_under_gqa(tiny_models):
    """Llama fixture: 4 query heads, 2 kv heads. Full vocab x vocab circuits, one by one (last layer)."""
    model = tiny_models["llama"]
    e = copying(model, "eigen").values
    n_rep = model.cfg.n_heads // model.cfg.n_key_value_heads
    assert n_rep == 2
    gf = model.ln_final.original_component.weight.double()
    W_E, W_U = model.W_E.double(), model.W_U.double() * gf[:, None]
    for layer in [model.cfg.n_layers - 1]:
        g1 = model.blocks[layer].ln1.original_component.weight.double()
        for head in range(model.cfg.n_heads):
            W_V = model.W_V[layer, head // n_rep].double() * g1[:, None]
            lam = torch.linalg.eigvals(W_E @ W_V @ model.W_O[layer, head].double() @ W_U)
            assert e[layer, head] == pytest.approx(float(lam.sum().real / lam.abs().sum()), abs=1e-5)


# ----------------------------------------------------------------------------- CLI
def test_cli_json_and_out(planted_dir, tmp_path):
    from typer.testing import CliRunner

    from headlens.cli.app import app
    from headlens.results.scores import Scores

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["induction", "--model", str(planted_dir), "--seeds", "2",
                                      "--copying", "eigen", "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"model", "n_layers", "n_heads", "prefix_matching", "copying", "attention_concentration"} <= set(payload)
    assert payload["n_layers"] == 2 and payload["n_heads"] == 4
    for key in ("prefix_matching", "copying", "attention_concentration"):
        assert len(payload[key]) == 2 and all(len(row) == 4 for row in payload[key])
        assert all(isinstance(v, float) for row in payload[key] for v in row)
    assert payload["prefix_matching"][1][2] >= 0.9 and payload["copying"][1][2] >= 0.9
    saved = Scores.load(out / "prefix_matching.json")
    assert np.allclose(saved.values, payload["prefix_matching"])
    assert Scores.load(out / "copying-eigen.json").meta["variant"] == "eigen"
    assert np.allclose(Scores.load(out / "attention_concentration.json").values, payload["attention_concentration"])
    for html in ("prefix_matching.html", "copying-eigen.html", "attention_concentration.html", "induction.html"):
        text = (out / html).read_text()
        assert "<script src=\"http" not in text and "Plotly.newPlot" in text
        assert 'src="plotly.min.js"' in text  # offline: the one plotly.js shared by the folder
    assert (out / "plotly.min.js").is_file() and [p.name for p in out.glob("*.js")] == ["plotly.min.js"]


def test_cli_bfloat16_text_output(planted_dir):
    """``--dtype bfloat16`` runs the default (``corrected``) copying; the text output keeps its
    lines and adds attention concentration."""
    from typer.testing import CliRunner

    from headlens.cli.app import app

    result = CliRunner().invoke(app, ["induction", "--model", str(planted_dir), "--seeds", "1", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("top ")]
    assert [line.split(":")[0] for line in lines] == ["top prefix matching", "top copying (corrected)",
                                                      "top attention concentration"]
    assert lines[1].split(": ")[1].startswith("L1H2=")


def test_cli_rejects_unknown_variant(planted_dir):
    from typer.testing import CliRunner

    from headlens.cli.app import app

    result = CliRunner().invoke(app, ["induction", "--model", str(planted_dir), "--copying", "papr"])
    assert isinstance(result.exception, HeadlensError) and "paper, corrected, eigen" in str(result.exception)
