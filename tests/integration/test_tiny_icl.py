"""The shipped model ``tiny-icl``: loads by name as a working bridge and learns in context.

Measured on a fixed sample (first 20 test queries of each of the 14 offline tasks, seed 0) with
the simple scorer of :mod:`tools.train_tiny` (sum of the choice's token log-probabilities,
argmax). The bars are issue 5's: mean 5-shot >= 0.80 and mean 5-shot - mean 0-shot >= 0.20.
"""

from __future__ import annotations

import pytest
import torch

from headlens.tasks import synthetic
from headlens.model.loading import shipped_models

pytestmark = pytest.mark.skipif("tiny-icl" not in shipped_models(), reason="tiny-icl not shipped")


@pytest.fixture(scope="module")
def bridge():
    from headlens.model.loading import load_model

    return load_model("tiny-icl", device="cpu")


def test_loads_as_a_working_bridge(bridge):
    from transformer_lens.model_bridge import TransformerBridge

    assert isinstance(bridge, TransformerBridge)
    assert bridge.headlens_info.source == "shipped"
    cfg = bridge.cfg
    assert (cfg.n_layers, cfg.n_heads) == (2, 4)
    tokens = bridge.to_tokens("q d m -> q\n\nb x k ->")
    assert tokens[0, 0].item() == bridge.tokenizer.bos_token_id  # exactly one BOS, prepended
    assert (tokens[0, 1:] != bridge.tokenizer.bos_token_id).all()
    assert bridge.tokenizer.unk_token_id not in tokens[0].tolist()
    logits = bridge(tokens)
    assert logits.shape == (1, tokens.shape[1], cfg.d_vocab)
    assert torch.isfinite(logits).all()
    # The answer of a 1-shot letter_first prompt is the query's first letter.
    assert bridge.tokenizer.decode([int(logits[0, -1].argmax())]).strip() == "b"


def test_card_bars_on_a_fixed_sample(bridge):
    """The model card's bars, measured by headlens itself (scorer, induction, importance) on
    the first 20 test queries per task and shot count; the card reports n = 100 as well."""
    from tools.tiny_card import BARS, measure

    res = measure("tiny-icl", n=20, induction_seeds=4)
    s = res["summary"]
    for key, bar in BARS.items():
        assert s[key] >= bar, (key, s)
    # 0-shot is at chance by construction (mean over a family is exactly 1/k for any rule
    # that ignores demonstrations); allow sampling noise at n = 20 per task.
    chance = sum(synthetic.chance(t) for t in synthetic.TASKS) / len(synthetic.TASKS)
    assert abs(s["mean_0shot"] - chance) < 0.1, s
    best = res["best_head"]
    assert min(best["prefix_matching"], best["copying_corrected"]) >= 0.5, best  # one head, both scores
    pruned = res["pruning_5shot_mean_acc"]
    assert pruned["without_10pct_most_important"] < pruned["without_50pct_least_important"]
