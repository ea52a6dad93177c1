"""Overlap measures on constructed scores: scipy parity, the argsort mistake, hypergeometric
p-values by brute force, chance on independent scores, planted overlap, retained curve by
hand, causal check wiring through a fake evaluate, and the CLI."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from headlens.analyses import overlap as ov
from headlens.errors import HeadlensError
from headlens.model.gates import check, mask_lowest
from headlens.results.scores import Scores


def S(values, metric="head_importance", **meta) -> Scores:
    return Scores(np.asarray(values, dtype=float), metric=metric, model="m", meta=meta)


def reference_argsort_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """The reference's mistake, kept here only to show the difference: it correlated the
    argsort vectors (which head sits at each rank), not the scores."""
    return float(stats.spearmanr(np.argsort(a.ravel()), np.argsort(b.ravel())).statistic)


# ------------------------------------------------------------------------- rank agreement
@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_rank_agreement_equals_scipy_with_ties(method):
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(4, 6, 8))
    vals[1] = np.round(vals[1], 1)  # ties: scipy averages their ranks
    vals[2] = 0.6 * vals[0] + rng.normal(size=(6, 8))
    scores = [S(v, task=f"t{i}", shots=1) for i, v in enumerate(vals)]
    ag = ov.rank_agreement(scores, method)
    fn = {"spearman": stats.spearmanr, "kendall": stats.kendalltau}[method]
    for i, j in itertools.combinations(range(4), 2):
        res = fn(vals[i].ravel(), vals[j].ravel())
        assert abs(ag.matrix[i, j] - res.statistic) < 1e-12
        assert abs(ag.matrix[j, i] - res.statistic) < 1e-12
        assert abs(ag.p_values[i, j] - res.pvalue) < 1e-12
    np.testing.assert_array_equal(np.diag(ag.matrix), 1.0)
    assert ag.labels == ("t0/1-shot", "t1/1-shot", "t2/1-shot", "t3/1-shot") and ag.n == 48


def test_scores_not_argsort_vectors():
    # 144 heads (12 x 12) whose scores correlate at rho ~ 0.44; the reference's argsort
    # correlation compares head indices at each rank and comes out near 0
    rng = np.random.default_rng(1)
    a = rng.normal(size=(12, 12))
    b = 0.5 * a + rng.normal(size=(12, 12))
    ag = ov.rank_agreement([S(a, task="x", shots=0), S(b, task="y", shots=0)])
    rho = ag.matrix[0, 1]
    assert abs(rho - stats.spearmanr(a.ravel(), b.ravel()).statistic) < 1e-12
    wrong = reference_argsort_spearman(a, b)
    assert 0.35 < rho < 0.55 and ag.p_values[0, 1] < 1e-5
    assert abs(wrong) < 0.2 and rho - wrong > 0.25


def test_by_shot_by_task_groups_and_constant_scores():
    rng = np.random.default_rng(2)
    scores = [S(rng.random((3, 4)), task=t, shots=k) for t in ("b", "a") for k in (5, 0, 1)]
    shot = ov.by_shot(scores)
    assert list(shot) == [0, 1, 5] and shot[0].labels == ("b/0-shot", "a/0-shot")
    task = ov.by_task(scores)
    assert list(task) == ["a", "b"] and task["a"].labels == ("a/0-shot", "a/1-shot", "a/5-shot")
    flat = ov.rank_agreement([S(np.ones((3, 4))), scores[0]])
    # undefined for a constant set, not a silent number
    assert np.isnan(flat.matrix[0]).all() and np.isnan(flat.matrix[:, 0]).all() and flat.matrix[1, 1] == 1
    with pytest.raises(HeadlensError, match="meta\\['shots'\\]"):
        ov.by_shot([S(np.ones((3, 4)), metric="prefix_matching")])
    with pytest.raises(HeadlensError, match="different shapes"):
        ov.rank_agreement([S(np.ones((3, 4))), S(np.ones((4, 3)))])
    with pytest.raises(HeadlensError, match="spearman or kendall"):
        ov.rank_agreement(scores, "pearson")  # type: ignore[arg-type]


def test_aggregate_normalisations():
    a = np.array([[1.0, 3.0], [0.0, 4.0]])
    b = np.array([[10.0, 0.0], [0.0, 10.0]])
    agg = ov.aggregate([S(a, task="x"), S(b, task="y")], "sum")
    np.testing.assert_allclose(agg.values, (a / 8 + b / 20) / 2, atol=1e-15)
    l2 = ov.aggregate([S(a), S(b)], "l2_layer").values
    np.testing.assert_allclose(l2, (a / np.linalg.norm(a, axis=1, keepdims=True)
                                    + b / np.linalg.norm(b, axis=1, keepdims=True)) / 2, atol=1e-15)
    np.testing.assert_allclose(ov.aggregate([S(a), S(b)], "none").values, (a + b) / 2)
    assert agg.meta["aggregate_of"] == ["x", "y"] and agg.metric == "head_importance"
    zero = ov.aggregate([S(np.zeros((2, 2))), S(a)], "sum").values  # zero set adds zeros
    np.testing.assert_allclose(zero, a / 8 / 2)


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_random_baseline_matches_theory(method):
    base = ov.random_baseline(100, method, n_samples=1000, seed=0)
    # mean 0 within 4 standard errors; the 95% band matches +-1.96 sd of the null (the
    # 2.5% quantile of 1000 draws has a standard error of about 0.085 sd)
    assert abs(base.mean) < 4 * base.sd_theory / np.sqrt(base.n_samples)
    assert abs(base.high - 1.96 * base.sd_theory) < 0.25 * base.sd_theory
    assert abs(base.low + 1.96 * base.sd_theory) < 0.25 * base.sd_theory
    assert ov.random_baseline(100, method, n_samples=50, seed=3) == ov.random_baseline(
        100, method, n_samples=50, seed=3)


# ------------------------------------------------------------------------- set overlap
def test_top_k_set_count_percent_ties():
    vals = np.array([[0.5, 0.9, 0.9], [0.1, 0.7, 0.0]])
    assert ov.top_k_set(S(vals), k=2) == {(0, 1), (0, 2)}
    assert ov.top_k_set(S(vals), percent=50) == {(0, 1), (0, 2), (1, 1)}
    with pytest.warns(ov.TieWarning, match="6 heads tie at k=2"):
        tied = ov.top_k_set(S(np.zeros((2, 3))), k=2)
    assert len(tied) == 2
    with pytest.raises(HeadlensError, match="exactly one"):
        ov.top_k_set(S(vals))
    with pytest.raises(HeadlensError, match="k must be"):
        ov.top_k_set(S(vals), k=7)
    with pytest.raises(HeadlensError, match=r"k must be an integer in \[1, 6\]"):
        ov.top_k_set(S(vals), k=0)
    with pytest.raises(HeadlensError, match=r"k must be an integer in \[1, 6\]"):
        ov.overlap_matrix([S(vals), S(vals)], k=0)  # was a NaN Jaccard matrix


def _one_shared_head(task):
    """8 heads (2 x 4): head L0H1 scores 1, every other head 0."""
    vals = np.zeros((2, 4))
    vals[0, 1] = 1.0
    return S(vals, task=task, shots=0)


def test_ties_among_zeros_do_not_make_one_shared_head_a_perfect_overlap():
    # the reference scenario: one genuinely shared head, zeros elsewhere, top 3 of 8 heads;
    # breaking ties by head index gave both sets {L0H0, L0H1, L0H2}: Jaccard 1.0, p = 1/C(8,3)
    a, b = _one_shared_head("a"), _one_shared_head("b")
    with pytest.warns(ov.TieWarning, match="straddle the top-k boundary"):
        res = ov.set_overlap(ov.top_k_set(a, 3), ov.top_k_set(b, 3), 8)
    assert res["jaccard"] < 1.0 and res["p_value"] >= 0.05
    with pytest.warns(ov.TieWarning):
        mat = ov.overlap_matrix([a, b], k=3)
    assert mat.jaccard[0, 1] == res["jaccard"] and mat.tied == (7, 7)
    with pytest.warns(ov.TieWarning):
        sweep = ov.overlap_sweep(a, b, ks=[3])
    assert sweep.jaccard.item() == res["jaccard"] and sweep.ties_a.item() == 7
    # over seeds the two other heads of each set are independent draws from the 7 tied
    # heads: intersection - 1 ~ Hypergeometric(7, 2, 2), mean 4/7; 400 seeds, sd 0.61 each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ov.TieWarning)
        inter = np.array([len(ov.top_k_set(a, 3, seed=s) & ov.top_k_set(b, 3, seed=s)) for s in range(400)])
        # the same scores under the same label always break ties the same way
        assert ov.top_k_set(a, 3, seed=5) == ov.top_k_set(_one_shared_head("a"), 3, seed=5)
    assert (inter >= 1).all()
    assert abs((inter - 1).mean() - 4 / 7) < 4 * np.sqrt(stats.hypergeom.var(7, 2, 2) / 400)
    assert abs((inter == 3).mean() - 1 / 21) < 4 * np.sqrt((1 / 21) * (20 / 21) / 400)


def test_no_tie_warning_when_the_boundary_is_clear():
    vals = np.array([[0.5, 0.9, 0.9], [0.1, 0.7, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ov.TieWarning)
        assert ov.top_k_set(S(vals), k=2) == {(0, 1), (0, 2)}  # the tie is inside the set
        assert ov.overlap_matrix([S(vals, task="x"), S(vals, task="y")], k=3).tied == (0, 0)


@pytest.mark.parametrize("n,na,nb", [(8, 3, 4), (10, 5, 5), (9, 2, 6)])
def test_hypergeometric_p_value_by_brute_force(n, na, nb):
    heads = [(i // 3, i % 3) for i in range(n)]
    a = set(heads[:na])
    for obs_b in itertools.islice(itertools.combinations(heads, nb), 0, None, 7):
        b = set(obs_b)
        res = ov.set_overlap(a, b, n)
        obs = len(a & b)
        # enumerate every b of size nb: share with intersection >= obs
        hits = sum(len(a & set(c)) >= obs for c in itertools.combinations(heads, nb))
        brute = hits / math.comb(n, nb)
        direct = sum(math.comb(na, i) * math.comb(n - na, nb - i)
                     for i in range(obs, min(na, nb) + 1)) / math.comb(n, nb)
        assert abs(res["p_value"] - brute) < 1e-12 and abs(res["p_value"] - direct) < 1e-12
        assert res["intersection"] == obs
        assert res["jaccard"] == obs / len(a | b)
        assert res["recall_b_by_a"] == obs / nb and res["recall_a_by_b"] == obs / na
        assert abs(res["expected_intersection"] - na * nb / n) < 1e-12
    # expected Jaccard by enumeration
    jac = [len(a & set(c)) / len(a | set(c)) for c in itertools.combinations(heads, nb)]
    assert abs(ov.set_overlap(a, set(heads[:nb]), n)["expected_jaccard"] - np.mean(jac)) < 1e-12


def test_set_overlap_rejects_small_total():
    with pytest.raises(HeadlensError, match="n_total"):
        ov.set_overlap({(0, 0), (0, 1)}, {(1, 1)}, 2)


def test_independent_random_scores_report_chance():
    rng = np.random.default_rng(3)
    n_pairs, shape, k = 300, (10, 10), 10
    rows = [ov.overlap_sweep(S(rng.random(shape)), S(rng.random(shape)), ks=[k]).iloc[0]
            for _ in range(n_pairs)]
    jac = np.array([r["jaccard"] for r in rows])
    p = np.array([r["p_value"] for r in rows])
    expected = rows[0]["expected_jaccard"]
    # mean Jaccard within 4 standard errors of its exact expectation under random choice
    assert abs(jac.mean() - expected) < 4 * jac.std() / np.sqrt(n_pairs)
    # p-values: P(X >= obs) is conservative for a discrete law, so P(p <= 0.05) <= 0.05;
    # allow sampling noise (sd ~ 0.013 at 300 draws)
    assert (p <= 0.05).mean() < 0.09 and np.median(p) > 0.3
    scores = [S(rng.random(shape), task=f"t{i}", shots=1) for i in range(30)]
    ag = ov.rank_agreement(scores)
    off = ag.matrix[~np.eye(30, dtype=bool)]
    base = ov.random_baseline(100)
    assert abs(off.mean()) < 0.03
    assert ((off >= base.low) & (off <= base.high)).mean() > 0.9
    mat = ov.overlap_matrix(scores, k=k)
    assert (mat.p_values[~np.eye(30, dtype=bool)] <= 0.05).mean() < 0.1


def test_planted_overlap_is_detected():
    rng = np.random.default_rng(4)
    imp = rng.random((12, 12))
    induction = 0.5 * imp + 0.5 * rng.random((12, 12))  # related beyond the planted heads
    planted = [(3, 1), (5, 7), (7, 2), (8, 8), (9, 0), (10, 5), (11, 3), (4, 4), (6, 6), (2, 9)]
    for l, h in planted:  # the same ten heads are top in both
        imp[l, h] += 2.0
        induction[l, h] += 2.0
    a, b = S(imp, task="x", shots=1), S(induction, metric="prefix_matching", variant="paper")
    sweep = ov.overlap_sweep(a, b, ks=[10, 20])
    assert sweep.loc[0, "jaccard"] == 1.0 and sweep.loc[0, "p_value"] < 1e-3
    assert sweep.loc[1, "intersection"] >= 10 and sweep.loc[1, "p_value"] < 1e-3
    summary = ov.overlap_summary(a, b, k=10, fraction=0.5)
    assert summary.spearman > 0.2 and summary.spearman_p < 1e-2
    assert summary.retained > summary.random_expected + 0.1
    sets = ov.head_sets(a, b, S(induction, metric="copying"), k=10)
    assert sets["important"] == sets["prefix_matching"] == sets["induction"] == set(planted)
    assert ov.head_sets(a, b, S(induction, metric="copying"), k=10, both="rank")["induction"] == set(planted)


def test_combined_rank_and_head_sets_intersection():
    pm = S([[3.0, 2.0, 1.0, 0.0]], metric="prefix_matching")
    cp = S([[0.0, 2.0, 3.0, 1.0]], metric="copying")
    np.testing.assert_allclose(ov.combined_rank(pm, cp).values, [[2.5 / 4, 3 / 4, 3 / 4, 1.5 / 4]])
    sets = ov.head_sets(prefix_matching=pm, copying=cp, k=2)
    assert sets["induction"] == {(0, 1)} and "important" not in sets
    assert ov.head_sets(prefix_matching=pm, copying=cp, k=2, both="rank")["induction"] == {(0, 1), (0, 2)}


# ------------------------------------------------------------------------- retained score
def test_retained_curve_by_hand_and_matches_mask_lowest():
    ranking = S([[1.0, 2.0], [3.0, 4.0]])
    target = S([[4.0, -1.0], [2.0, 3.0]], metric="prefix_matching")
    df = ov.retained_curve(ranking, target, [0, 0.25, 0.5, 0.75, 1.0], n_random=500, seed=0)
    # clipped target 4, 0, 2, 3 (total 9); removed in order L0H0, L0H1, L1H0, L1H1
    np.testing.assert_allclose(df["retained"], [1, 5 / 9, 5 / 9, 3 / 9, 0], atol=1e-15)
    np.testing.assert_allclose(df["random_expected"], [1, 0.75, 0.5, 0.25, 0])
    assert list(df["n_removed"]) == [0, 1, 2, 3, 4]
    assert abs(df["random_mean"].iloc[2] - 0.5) < 0.05 and (df["random_low"] <= df["random_high"]).all()
    # same heads as the pruning mask of gates.mask_lowest, on a larger random case
    rng = np.random.default_rng(5)
    r, t = rng.random((6, 8)), rng.random((6, 8))
    got = ov.retained_curve(S(r), S(t, metric="copying"), [0.3], n_random=2)["retained"].item()
    keep = mask_lowest(torch.tensor(r), 0.3).numpy()
    assert abs(got - (t * keep).sum() / t.sum()) < 1e-12
    with pytest.raises(HeadlensError, match="no positive score"):
        ov.retained_curve(ranking, S(-np.ones((2, 2))))


# ------------------------------------------------------------------------- causal check
class FakeModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(n_layers=2, n_heads=3)
        self.w = torch.nn.Parameter(torch.zeros(1))


def test_causal_check_gates_the_right_heads():
    calls = []

    def fake_evaluate(model, task, shots, *, limit, seed, gates):
        check(model, gates)  # the shape headlens.gates.gated will demand
        assert gates.ffn is None and gates.heads.dtype == torch.float32
        off = {(int(l), int(h)) for l, h in torch.nonzero(gates.heads == 0)}
        assert set(torch.unique(gates.heads).tolist()) <= {0.0, 1.0}
        calls.append((task, shots, limit, seed, frozenset(off)))
        # head L1H2 carries the task; every ablated head costs a little
        return SimpleNamespace(metrics={"acc": 0.9 - 0.5 * ((1, 2) in off) - 0.01 * len(off)})

    induction = S([[0.1, 0.0, 0.2], [0.3, 0.4, 0.9]], metric="prefix_matching")
    importance = S([[0.05, 0.5, 0.6], [0.01, 0.7, 0.8]])
    df = ov.causal_check(FakeModel(), "copy", 2, induction, importance, [1, 2], limit=7, seed=11,
                         n_random=4, evaluate=fake_evaluate)
    assert all(c[:4] == ("copy", 2, 7, 11) for c in calls) and len(calls) == 1 + 2 * (1 + 4 + 1)
    row = df.set_index(["k", "condition"])
    assert row.loc[(0, "none"), "acc"] == pytest.approx(0.9)
    assert row.loc[(1, "top_induction"), "heads"] == "L1H2"
    assert row.loc[(1, "top_induction"), "acc"] == pytest.approx(0.39)
    assert row.loc[(2, "top_induction"), "heads"] == "L1H1 L1H2"
    assert row.loc[(2, "least_important"), "heads"] == "L0H0 L1H0"
    assert row.loc[(2, "least_important"), "acc"] == pytest.approx(0.88)
    # random: mean and std over the four recorded draws of size 2
    draws = [c[4] for c in calls if len(c[4]) == 2][1:5]
    accs = [0.9 - 0.5 * ((1, 2) in d) - 0.02 for d in draws]
    assert row.loc[(2, "random"), "acc"] == pytest.approx(np.mean(accs))
    assert row.loc[(2, "random"), "acc_std"] == pytest.approx(np.std(accs))
    assert row.loc[(2, "random"), "n_runs"] == 4
    again = ov.causal_check(FakeModel(), "copy", 2, induction, importance, [1, 2], limit=7,
                            seed=11, n_random=4, evaluate=fake_evaluate)
    assert again.equals(df)  # seeded
    with pytest.raises(HeadlensError, match="model has"):
        ov.causal_check(FakeModel(), "copy", 2, S(np.ones((3, 3))), S(np.ones((3, 3))), [1],
                        evaluate=fake_evaluate)


# ------------------------------------------------------------------------- figures and CLI
def test_figures_build():
    from headlens.report import overlap as figs

    rng = np.random.default_rng(6)
    scores = [S(rng.random((3, 4)), task=t, shots=k) for t in ("a", "b") for k in (0, 1)]
    assert len(figs.agreement_dropdown(ov.by_shot(scores), key_name="shots").data) == 2
    fig = figs.agreement_heatmap(ov.rank_agreement(scores), baseline=ov.random_baseline(12))
    assert fig.data[0].z.shape == (4, 4)
    figs.overlap_matrix_heatmap(ov.overlap_matrix(scores, k=3))
    sweep = figs.overlap_vs_k({"a vs b": ov.overlap_sweep(scores[0], scores[1])})
    assert {t.name for t in sweep.data} == {"a vs b", "random expectation"}
    figs.retained_figure({"a": ov.retained_curve(scores[0], scores[1])})
    df = ov.causal_check(FakeModel(), "t", 0, S(rng.random((2, 3))), S(rng.random((2, 3))), [1],
                         evaluate=lambda *a, **k: {"acc": 0.5})
    assert len(figs.causal_bars(df).data) == 3


def test_cli_overlap_json_and_text(tmp_path):
    from typer.testing import CliRunner

    from headlens.cli.app import app

    rng = np.random.default_rng(7)
    base = rng.random((4, 5))
    for t, shots in [("a", 0), ("a", 1), ("b", 0)]:
        S(base + 0.1 * rng.random((4, 5)), task=t, shots=shots).save(tmp_path / "res")
    pm = S(rng.random((4, 5)), metric="prefix_matching", variant="paper").save(tmp_path / "pm.json")
    runner = CliRunner()
    res = runner.invoke(app, ["overlap", str(tmp_path / "res"), str(pm), "--top", "4",
                              "--format", "json", "--out", str(tmp_path / "figs")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"labels", "spearman", "jaccard", "p_values", "k"} <= set(out)
    assert out["labels"] == ["a/0-shot", "a/1-shot", "b/0-shot", "prefix_matching/paper"]
    assert out["k"] == 4 and np.asarray(out["spearman"]).shape == (4, 4)
    assert np.asarray(out["spearman"])[0, 1] > 0.8  # shared base scores
    assert np.asarray(out["p_values"])[0, 1] < 0.05
    assert (tmp_path / "figs" / "overlap-by-shot.html").is_file()
    assert (tmp_path / "figs" / "overlap-retained-prefix_matching-paper.html").is_file()
    text = runner.invoke(app, ["overlap", str(tmp_path / "res"), "--method", "kendall"])
    assert text.exit_code == 0 and "kendall rank agreement over 20 heads" in text.stdout
    bad = runner.invoke(app, ["overlap", str(tmp_path / "res" / "head_importance-a-0.json")])
    assert isinstance(bad.exception, HeadlensError) and "at least 2" in str(bad.exception)
