"""Pruning curves and grids with a fake evaluator whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from headlens.errors import HeadlensError
from headlens.analyses.pruning import pruning_curve, pruning_grid, random_ranking
from headlens.results.scores import Scores


def _fake_evaluate(key_heads):
    """Accuracy 1 while every key head is kept, else 0.25 (chance), minus 0.01 per FFN removed."""

    def evaluate(gates):
        acc = 1.0
        if gates is not None and gates.heads is not None:
            if any(gates.heads[l, h] == 0 for l, h in key_heads):
                acc = 0.25
        if gates is not None and gates.ffn is not None:
            acc -= 0.01 * float((gates.ffn == 0).sum())
        return acc

    return evaluate


def test_curve_keeps_accuracy_when_ranking_protects_the_key_head():
    vals = np.random.default_rng(0).random((4, 5))
    vals[2, 3] = 10.0  # the key head ranks first
    ranking = Scores(vals, metric="head_importance")
    df = pruning_curve(ranking, _fake_evaluate([(2, 3)]), random_seeds=range(5), progress=False)
    assert list(df.percent) == list(range(0, 100, 10))
    assert (df.acc == 1.0).all()
    assert list(df.n_removed) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    # random rankings remove the key head with probability n_removed/20: the mean falls
    assert df.acc_random_mean.iloc[-1] < 0.6 and df.acc_random_std.iloc[5] > 0


def test_curve_with_inverted_ranking_collapses_immediately():
    vals = np.ones((2, 5))
    vals[0, 0] = -1.0  # key head ranked least important
    df = pruning_curve(Scores(vals, metric="x"), _fake_evaluate([(0, 0)]), progress=False)
    assert df.acc.iloc[0] == 1.0 and (df.acc.iloc[1:] == 0.25).all()


def test_grid_shape_and_values():
    heads = Scores(np.arange(20.0).reshape(4, 5), metric="h")
    ffn = Scores(np.arange(4.0), metric="f")
    grid = pruning_grid(heads, ffn, _fake_evaluate([(3, 4)]), head_percents=[0, 50],
                        ffn_percents=[0, 50], progress=False)
    assert grid.shape == (2, 2)
    np.testing.assert_allclose(grid.values, [[1.0, 0.98], [1.0, 0.98]])


def test_bad_input_and_seeded_random_ranking():
    with pytest.raises(HeadlensError, match="per-layer"):
        pruning_curve(Scores(np.ones(3), metric="f"), lambda g: 1.0, what="heads", progress=False)
    with pytest.raises(HeadlensError, match="0..100"):
        pruning_curve(Scores(np.ones((2, 2)), metric="h"), lambda g: 1.0, percents=[150], progress=False)
    np.testing.assert_array_equal(random_ranking((3, 4), 1), random_ranking((3, 4), 1))
    assert not np.array_equal(random_ranking((3, 4), 1), random_ranking((3, 4), 2))


def test_ffn_oracle_scores_the_accuracy_drop_of_each_removed_ffn():
    from types import SimpleNamespace

    from headlens.analyses.importance import ffn_oracle

    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=3, model_name="fake"), parameters=lambda: iter([]))
    drop = {0: 0.1, 1: 0.0, 2: 0.5}

    def evaluate(gates):
        if gates is None:
            return 0.9
        (layer,) = [l for l in range(3) if gates.ffn[l] == 0]
        return 0.9 - drop[layer]

    s = ffn_oracle(model, evaluate)
    np.testing.assert_allclose(s.values, [0.1, 0.0, 0.5])
    assert s.meta["variant"] == "oracle" and s.meta["base_acc"] == 0.9
