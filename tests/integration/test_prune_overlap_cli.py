"""`headlens prune` / `headlens overlap` through the console entry point: bad counts are one
line on stderr with exit status 2 (no traceback, no NaN matrix); ties are reported, not hidden."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from headlens.results.scores import Scores

REPO = str(Path(__file__).resolve().parents[2])


def headlens(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("headlens")
    if exe is None:
        pytest.skip("the headlens console script is not installed")
    env = {**os.environ, "PYTHONPATH": REPO, "HEADLENS_CACHE": str(tmp_path / "cache")}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=120)


def one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert len(lines) == 1 and lines[0].startswith("headlens: error: "), res.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.mark.parametrize("flag", ["--random-seeds", "--random-draws"])
def test_prune_zero_random_draws_is_refused(flag, tmp_path):
    res = headlens("prune", "--task", "letter_first", flag, "0", tmp_path=tmp_path)
    one_line_error(res, "--random-draws", ">= 1", "got 0")


def _score_files(tmp_path: Path) -> list[str]:
    files = []
    for task in ("a", "b"):
        vals = np.zeros((2, 4))
        vals[0, 1] = 1.0  # one shared head among zeros
        files.append(str(Scores(vals, metric="head_importance", model="m",
                                meta={"task": task, "shots": 0}).save(tmp_path / f"{task}.json")))
    return files


@pytest.mark.parametrize("top", ["0", "-1", "9"])
def test_overlap_bad_top_is_refused(top, tmp_path):
    res = headlens("overlap", *_score_files(tmp_path), "--top", top, tmp_path=tmp_path)
    one_line_error(res, "--top", top)
    assert "nan" not in res.stdout.lower()


def test_overlap_reports_ties_instead_of_a_perfect_overlap(tmp_path):
    from typer.testing import CliRunner

    from headlens.cli.app import app

    res = CliRunner().invoke(app, ["overlap", *_score_files(tmp_path), "--top", "3", "--format", "json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout.strip().splitlines()[-1])
    # index tie-breaks gave Jaccard 1.0 and p = 1/C(8,3) = 0.018 here
    assert obj["jaccard"][0][1] < 1.0 and obj["p_values"][0][1] >= 0.05
    assert obj["tied"] == [7, 7] and obj["seed"] == 0
    text = CliRunner().invoke(app, ["overlap", *_score_files(tmp_path), "--top", "3"])
    assert "straddle the top-3 boundary" in text.stdout and "TieWarning" not in text.output
