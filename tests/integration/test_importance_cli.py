"""`headlens importance` / `headlens prune` on a tiny model and fixture tasks; caching."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from headlens.results.cache import ResultCache
from headlens.cli.app import app, main
from headlens.analyses.importance import task_importance

FIXTURES = "tests/fixtures/tasks"


def test_importance_json_and_out(tiny_dir, tmp_path):
    res = CliRunner().invoke(app, ["importance", "--model", str(tiny_dir / "gpt2"), "--task", "arc_easy",
                                   "--shots", "1", "--data-dir", FIXTURES, "--format", "json",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"model", "task", "shots", "heads", "ffn", "variant", "meta"} <= set(obj)
    assert np.array(obj["heads"]).shape == (2, 4) and len(obj["ffn"]) == 2
    assert (tmp_path / "out" / "importance-heads.html").is_file()


def test_importance_normalize_reference_cli(tiny_dir, tiny_models):
    args = ["importance", "--model", str(tiny_dir / "gpt2"), "--task", "copa", "--shots", "0", "--limit", "3",
            "--data-dir", FIXTURES, "--format", "json"]
    ref = CliRunner().invoke(app, args + ["--normalize", "reference"])
    assert ref.exit_code == 0, ref.output
    obj = json.loads(ref.stdout.strip().splitlines()[-1])
    assert obj["normalize"] == "reference" and obj["meta"]["normalize"] == "reference"
    direct = task_importance(tiny_models["gpt2"], "copa", 0, limit=3, data_dir=FIXTURES, normalize="reference",
                             cache=False, progress=False)
    np.testing.assert_allclose(obj["heads"], direct.heads.values, rtol=1e-5)
    default = json.loads(CliRunner().invoke(app, args).stdout.strip().splitlines()[-1])
    assert default["normalize"] == "mean" and not np.allclose(default["heads"], obj["heads"])


def test_task_importance_is_cached_and_key_sensitive(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    cache = ResultCache(tmp_path)
    a = task_importance(model, "copa", 1, data_dir=FIXTURES, cache=cache, progress=False)
    b = task_importance(model, "copa", 1, data_dir=FIXTURES, cache=cache, progress=False)
    assert cache.misses == 1 and cache.hits == 1
    np.testing.assert_array_equal(a.heads.values, b.heads.values)
    task_importance(model, "copa", 0, data_dir=FIXTURES, cache=cache, progress=False)
    task_importance(model, "copa", 1, data_dir=FIXTURES, cache=cache, variant="michel", progress=False)
    assert cache.misses == 3
    task_importance(model, "copa", 1, data_dir=FIXTURES, cache=cache, normalize="reference", progress=False)
    assert cache.misses == 4


def test_prune_json_curve(tiny_dir):
    res = CliRunner().invoke(app, ["prune", "--model", str(tiny_dir / "gpt2"), "--task", "piqa",
                                   "--shots", "1", "--data-dir", FIXTURES, "--format", "json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout.strip().splitlines()[-1])
    assert [p["percent"] for p in obj["curve"]] == list(range(0, 100, 10))
    assert set(obj["curve"][0]) == {"percent", "acc", "acc_random_mean", "acc_random_std", "acc_random_low",
                                    "acc_random_high", "n_random", "random_exact", "n_removed"}
    # 8 heads: every subset is evaluated (C(8, 4) = 70 at 50%)
    half = obj["curve"][5]
    assert half["n_random"] == 70 and half["random_exact"] is True
    assert half["acc_random_low"] <= half["acc_random_mean"] <= half["acc_random_high"]


def test_ffn_pruning_oracle_and_gradient_cached(tiny_models, tmp_path):
    import torch

    from headlens.analyses.pruning import TaskEvaluator, ffn_pruning
    from headlens.model.gates import Gates
    from headlens.tasks import get_task

    model, task = tiny_models["gpt2"], get_task("copa")
    cache = ResultCache(tmp_path)
    ev = TaskEvaluator(model, task, 0, limit=4, data_dir=FIXTURES)
    oracle_ev = TaskEvaluator(model, task, 0, split=task.importance_split, limit=4, data_dir=FIXTURES)
    grad = task_importance(model, task, 0, limit=4, data_dir=FIXTURES, cache=cache, progress=False).ffn
    first = ffn_pruning(model, ev, oracle_ev, gradient=grad, cache=cache, progress=False)
    hits = cache.hits
    again = ffn_pruning(model, ev, oracle_ev, gradient=grad, cache=cache, progress=False)
    assert cache.hits == hits + 3  # oracle ranking and both curves
    assert again.oracle.equals(first.oracle) and again.gradient.equals(first.gradient)
    base = oracle_ev(None)
    for layer in range(2):  # the oracle is the accuracy drop on the importance split
        g = np.ones(2, dtype=np.float32)
        g[layer] = 0
        assert first.oracle_ranking.values[layer] == pytest.approx(base - oracle_ev(Gates(ffn=torch.from_numpy(g))))
    assert list(first.oracle.percent) == [0, 50] and first.oracle.random_exact.all()


def test_bad_variant_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["headlens", "importance", "--task", "copa", "--variant", "nope"])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--variant" in err[0]


@pytest.mark.parametrize("argv,needle", [(["--normalize", "sum"], "mean, reference"),
                                         (["--normalize", "reference", "--variant", "michel"], "--variant bansal")])
def test_bad_normalize_is_one_line(argv, needle, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["headlens", "importance", "--task", "copa", *argv])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--normalize" in err[0] and needle in err[0]
