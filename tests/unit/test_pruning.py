"""Pruning curves and grids with a fake evaluator whose answer is known exactly."""

from __future__ import annotations

import itertools

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
    df = pruning_curve(ranking, _fake_evaluate([(2, 3)]), progress=False)
    assert list(df.percent) == list(range(0, 100, 10))
    assert (df.acc == 1.0).all()
    assert list(df.n_removed) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    # removing k of 20 heads at random keeps the key head with probability 1 - k/20, so the
    # exact mean is 0.25 + 0.75 (1 - k/20); C(20, k) <= 2,000 for k in {0, 2, 18}: exact there
    exact = df.n_removed.isin([0, 2, 18])
    assert (df.random_exact == exact).all()
    expected = 0.25 + 0.75 * (1 - df.n_removed / 20)
    np.testing.assert_allclose(df.acc_random_mean[exact], expected[exact], atol=1e-12)
    assert list(df.n_random[exact]) == [1, 190, 190] and (df.n_random[~exact] == 50).all()
    # 50 draws elsewhere: within 4 binomial standard errors of the exact mean
    se = 0.75 * np.sqrt((df.n_removed / 20) * (1 - df.n_removed / 20) / 50)
    assert (np.abs(df.acc_random_mean - expected)[~exact] <= 4 * se[~exact] + 1e-12).all()
    assert ((df.acc_random_low <= df.acc_random_mean) & (df.acc_random_mean <= df.acc_random_high)).all()
    assert df.acc_random_std.iloc[5] > 0 and df.acc_random_std.iloc[0] == 0


def _additive_evaluate(weights):
    """Accuracy = 1 - sum of the weights of the removed units (a known function of the set);
    records every gate pattern it is called with."""
    w = np.asarray(weights, dtype=float)

    def evaluate(gates):
        mask = None if gates is None else (gates.heads if gates.heads is not None else gates.ffn)
        removed = np.zeros(w.shape, bool) if mask is None else mask.numpy() == 0
        evaluate.calls.append(tuple(np.flatnonzero(removed.ravel())))
        return float(1.0 - w[removed].sum())

    evaluate.calls = []
    return evaluate


def test_random_band_is_the_exact_mean_over_all_subsets_when_few():
    # 8 heads at 25%: every one of the C(8, 2) = 28 pairs, mean/std/percentiles by brute force
    w = np.random.default_rng(3).random((2, 4)) / 8
    ranking = Scores(np.arange(8.0).reshape(2, 4), metric="head_importance")
    df = pruning_curve(ranking, _additive_evaluate(w), percents=[0, 25], progress=False)
    brute = np.array([1.0 - w.ravel()[list(pair)].sum() for pair in itertools.combinations(range(8), 2)])
    row = df.set_index("percent").loc[25]
    # float64 sums of the same 28 numbers: 1e-12
    assert abs(row.acc_random_mean - brute.mean()) < 1e-12
    assert row.n_removed == 2 and row.n_random == 28 and bool(row.random_exact)
    assert abs(row.acc_random_std - brute.std()) < 1e-12
    np.testing.assert_allclose([row.acc_random_low, row.acc_random_high],
                               np.percentile(brute, [2.5, 97.5]), atol=1e-12)
    assert row.acc_random_mean == pytest.approx(1.0 - 2 / 8 * w.sum(), abs=1e-12)


def test_two_ffns_are_each_removed_by_the_random_baseline():
    # the old baseline reused seeds 0, 1, 2: with 2 FFNs all three removed the same block
    ev = _additive_evaluate([0.1, 0.4])
    df = pruning_curve(Scores(np.array([1.0, 2.0]), metric="ffn_importance"), ev, what="ffn",
                       percents=[50], progress=False)
    assert {(0,), (1,)} <= set(ev.calls)
    assert df.acc_random_mean.item() == pytest.approx(0.75) and df.acc_random_std.item() == pytest.approx(0.15)
    # drawn rather than enumerated, the 50 draws still remove both blocks
    ev = _additive_evaluate([0.1, 0.4])
    df = pruning_curve(Scores(np.array([1.0, 2.0]), metric="ffn_importance"), ev, what="ffn",
                       percents=[50], exact_limit=0, key="k", progress=False)
    assert df.n_random.item() == 50 and not df.random_exact.item()
    assert {(0,), (1,)} <= set(ev.calls)


class _KeyedEvaluate:
    """An evaluator with a ``key`` (as TaskEvaluator has) that records the removed sets."""

    def __init__(self, key):
        self.key, self.calls = key, []
        self.w = np.linspace(0.0, 0.05, 20)

    def __call__(self, gates):
        removed = () if gates is None else tuple(np.flatnonzero(gates.heads.numpy().ravel() == 0))
        self.calls.append(removed)
        return float(1.0 - self.w[list(removed)].sum())


def test_random_draws_differ_between_curve_keys_and_repeat_for_one_key():
    ranking = Scores(np.arange(20.0).reshape(4, 5), metric="head_importance")
    runs = {}
    for name, key in (("a", {"task": "a"}), ("b", {"task": "b"}), ("a2", {"task": "a"})):
        ev = _KeyedEvaluate(key)
        df = pruning_curve(ranking, ev, percents=[50], progress=False)  # C(20, 10) > 2,000: draws
        runs[name] = (ev.calls, df.acc_random_mean.item())
    assert runs["a"] == runs["a2"]  # reproducible for the same key
    assert runs["a"][0] != runs["b"][0]  # another key, other subsets
    assert len(set(runs["a"][0][2:]) & set(runs["b"][0][2:])) <= 2  # 50 of C(20, 10) = 184,756 each
    assert len(set(runs["a"][0][2:])) > 45  # independent draws, not one permutation repeated
    assert df.n_random.item() == 50 and not df.random_exact.item()


def test_random_subsets_exact_and_drawn():
    from headlens.analyses.pruning import random_subsets

    subsets, exact = random_subsets(5, 2, key="x")
    assert exact and subsets.shape == (10, 2) and len({tuple(s) for s in subsets}) == 10
    drawn, exact = random_subsets(30, 15, key="x", draws=7)
    assert not exact and drawn.shape == (7, 15)
    assert all(len(set(d)) == 15 for d in drawn)
    np.testing.assert_array_equal(drawn, random_subsets(30, 15, key="x", draws=7)[0])
    assert not np.array_equal(drawn, random_subsets(30, 15, key="y", draws=7)[0])
    assert random_subsets(4, 0, key="x")[0].shape == (1, 0)
    with pytest.raises(HeadlensError, match="random_draws must be an integer >= 1"):
        random_subsets(30, 15, key="x", draws=0)


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
    with pytest.raises(HeadlensError, match="random_draws must be an integer >= 1"):
        pruning_curve(Scores(np.ones((2, 2)), metric="h"), lambda g: 1.0, random_draws=0, progress=False)
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


def test_ffn_pruning_ranks_by_removal_first_and_gradient_second():
    from types import SimpleNamespace

    from headlens.analyses.pruning import FfnPruning, ffn_pruning

    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=4, model_name="fake"), parameters=lambda: iter([]))
    # removal hurts FFN 2 most, then 0; the gradient ranking gets it wrong (FFN 2 least important)
    drops = [0.2, 0.05, 0.5, 0.0]
    evaluate, oracle_evaluate = _additive_evaluate(drops), _additive_evaluate(drops)
    gradient = Scores(np.array([3.0, 2.0, 0.0, 1.0]), metric="ffn_importance")
    res = ffn_pruning(model, evaluate, oracle_evaluate, gradient=gradient, progress=False)
    np.testing.assert_allclose(res.oracle_ranking.values, drops)
    assert len(oracle_evaluate.calls) == 5  # unpruned + one per FFN, on the ranking's data
    assert list(res.oracle.percent) == [0, 25, 50, 75]
    # oracle: remove 3, then 1, then 0 -> 1, 1, 0.95, 0.75; gradient removes FFN 2 first
    np.testing.assert_allclose(res.oracle.acc, [1.0, 1.0, 0.95, 0.75])
    np.testing.assert_allclose(res.gradient.acc, [1.0, 0.5, 0.5, 0.45])
    rand = ["acc_random_mean", "acc_random_std", "acc_random_low", "acc_random_high", "n_random"]
    assert res.oracle[rand].equals(res.gradient[rand])  # one baseline for both lines
    np.testing.assert_allclose(res.oracle.acc_random_mean, 1 - np.array([0, 1, 2, 3]) / 4 * sum(drops))
    assert list(res.curves()) == ["FFNs, removal oracle", "FFNs, gradient ranking"]
    back = FfnPruning.from_dict(res.to_dict())
    assert back.oracle.equals(res.oracle) and back.gradient.equals(res.gradient)
    with pytest.raises(HeadlensError, match="FFN scores of this model"):
        ffn_pruning(model, evaluate, oracle_evaluate, gradient=Scores(np.ones(3), metric="f"), progress=False)


def test_ffn_pruning_orders_equal_oracle_drops_by_the_gradient():
    from types import SimpleNamespace

    from headlens.analyses.pruning import ffn_pruning

    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=3, model_name="fake"), parameters=lambda: iter([]))
    # FFNs 0 and 1 cost nothing alone on the ranking's data (a tie), but FFN 0 matters on
    # the evaluation queries; the gradient ranks FFN 1 lower, so it goes first
    oracle_evaluate = _additive_evaluate([0.0, 0.0, 0.3])
    evaluate = _additive_evaluate([0.2, 0.0, 0.3])
    gradient = Scores(np.array([0.5, 0.1, 0.9]), metric="ffn_importance")
    res = ffn_pruning(model, evaluate, oracle_evaluate, gradient=gradient, percents=[0, 33], progress=False)
    np.testing.assert_allclose(res.oracle_ranking.values, [0.0, 0.0, 0.3])
    assert res.oracle.acc.tolist() == [1.0, 1.0]
    alone = ffn_pruning(model, evaluate, oracle_evaluate, percents=[0, 33], progress=False)
    assert alone.oracle.acc.tolist() == [1.0, 0.8] and alone.gradient is None  # ties by layer index
