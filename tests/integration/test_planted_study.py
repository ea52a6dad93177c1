"""Ground truth for importance, pruning, overlap and task files (issues 4, 6, 9).

The planted GPT-2 (tests/planted.py) answers "... A B ... A" with B through its induction
head L1H2, fed by the previous-token head L0H1. A JSONL task whose answer can only be
recovered by copying from the context therefore depends on exactly these heads.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headlens.analyses import overlap as ov
from headlens.cli.app import app
from headlens.model.gates import Gates
from headlens.analyses.importance import task_importance
from headlens.analyses.induction import copying, prefix_matching
from headlens.analyses.pruning import TaskEvaluator, cached_curve
from tests.planted import INDUCTION_HEAD, PREV_HEAD

N_CHOICES = 4


@pytest.fixture(scope="module")
def copy_task(tmp_path_factory):
    """Lines `t.. t.. ... A` whose gold continuation is the token that followed A earlier;
    the distractors are other tokens of the same context, so only copying can tell."""
    from tests.planted import write_copy_task

    return write_copy_task(tmp_path_factory.mktemp("task") / "copy.jsonl", n_choices=N_CHOICES)


def test_cli_importance_on_a_task_file_ranks_the_induction_head_first(planted_dir, copy_task):
    res = CliRunner().invoke(app, ["importance", "--model", str(planted_dir), "--task", str(copy_task),
                                   "--shots", "0", "--format", "json"])
    assert res.exit_code == 0, res.output
    heads = np.array(json.loads(res.stdout.strip().splitlines()[-1])["heads"])
    assert np.unravel_index(heads.argmax(), heads.shape) == INDUCTION_HEAD
    # the two heads of the circuit outrank every inert head by far
    inert = [heads[l, h] for l in range(2) for h in range(4) if (l, h) not in (INDUCTION_HEAD, PREV_HEAD)]
    assert heads[PREV_HEAD] > 10 * max(inert)


@pytest.mark.parametrize("variant", ["bansal", "michel"])
def test_pruning_the_key_head_collapses_accuracy_but_random_heads_do_not(planted, copy_task, variant):
    imp = task_importance(planted, str(copy_task), 0, variant=variant, progress=False)
    top = imp.heads.top(1)[0][:2]
    assert top == INDUCTION_HEAD
    ev = TaskEvaluator(planted, str(copy_task), 0)
    assert ev(None) == 1.0
    mask = torch.ones(2, 4)
    mask[top] = 0.0
    assert ev(Gates(heads=mask)) <= 1 / N_CHOICES + 0.15  # chance is 1/4
    rng = np.random.default_rng(0)
    random_acc = []
    for _ in range(8):
        m = torch.ones(8)
        m[rng.integers(0, 8)] = 0.0
        random_acc.append(ev(Gates(heads=m.reshape(2, 4))))
    assert np.mean(random_acc) >= 0.6  # only 2 of 8 heads matter
    # the curve by this ranking keeps full accuracy until the circuit itself is removed (75%)
    curve = cached_curve(ev, imp.heads, progress=False)
    assert (curve.loc[curve.percent <= 70, "acc"] == 1.0).all()
    assert curve.loc[curve.percent == 90, "acc"].item() <= 0.5
    assert curve.loc[curve.percent == 50, "acc_random_mean"].item() < 1.0


def test_overlap_measures_report_that_the_key_head_is_the_induction_head(planted, copy_task):
    imp = task_importance(planted, str(copy_task), 0, progress=False).heads
    pm = prefix_matching(planted, seeds=[0, 1, 2])
    cp = copying(planted, variant="corrected", seeds=[0, 1, 2])
    assert ov.top_k_set(imp, k=1) == ov.top_k_set(pm, k=1) == ov.top_k_set(cp, k=1) == {INDUCTION_HEAD}
    s = ov.overlap_summary(imp, pm, k=1)
    assert s.jaccard == 1.0 and s.spearman > 0
    assert s.retained > s.random_expected
    assert ov.head_sets(imp, pm, cp, k=1)["induction"] == {INDUCTION_HEAD}
    cc = ov.causal_check(planted, str(copy_task), 0, pm, imp, [1], limit=None, seed=0, n_random=3)
    acc = {r.condition: r.acc for r in cc.itertuples()}
    assert acc["top_induction"] < 0.5 < acc["none"] and acc["least_important"] == acc["none"]
