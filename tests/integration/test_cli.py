"""The command line as a user meets it: the ``headlens`` console script (a subprocess) or its
entry function ``headlens.cli.main`` (in this process, where a model must load), asserting the
one-line message on stderr and the exit status.

One tiny GPT-2 (2 layers x 4 heads) serves the whole file; every command gets small limits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = str(REPO / "tests" / "fixtures" / "tasks")
ERROR = "headlens: error: "


@pytest.fixture(scope="session")
def cli_model(tmp_path_factory) -> Path:
    from tests.builders import build_tiny

    return build_tiny("gpt2", tmp_path_factory.mktemp("cli") / "gpt2")


@pytest.fixture(scope="session")
def copy_task(tmp_path_factory) -> str:
    """A 16-line copying task (train and test lines) as a bring-your-own .jsonl file."""
    words = ["fox", "dog", "brown", "lazy", "quick", "time", "bird", "worm", "nine", "early", "yes", "no",
             "true", "false", "key", "value"]
    path = tmp_path_factory.mktemp("task") / "copy.jsonl"
    lines = []
    for i, w in enumerate(words):
        other = words[(i + 5) % len(words)]
        choices, gold = ([f" {w}", f" {other}"], 0) if i % 2 else ([f" {other}", f" {w}"], 1)
        lines.append(json.dumps({"context": f"the {w} and the {w} ->", "choices": choices, "gold": gold,
                                 "split": "train" if i < 10 else "test"}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def headlens(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script with this checkout's code first on the path."""
    full = dict(os.environ)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), full.get("PYTHONPATH", "")) if p)
    full.update(env or {})
    return subprocess.run(["headlens", *args], capture_output=True, text=True, cwd=cwd, env=full, timeout=300)


def one_error(res, *fragments: str, code: int = 2) -> str:
    """The single stderr line of a failed command; checks its status, prefix and content."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(ERROR), res.stderr[-2000:]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def run_main(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """``headlens.cli.main`` (what the console script calls) in this process, for commands whose
    errors come after torch is imported (a subprocess would spend seconds importing it again)."""
    from headlens.cli import main

    monkeypatch.setattr(sys, "argv", ["headlens", *args])
    capsys.readouterr()  # only what the command itself prints
    try:
        main()
        code = 0
    except SystemExit as ex:
        code = ex.code if isinstance(ex.code, int) else 1
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["headlens", *args], code, out.out, out.err)


# ----------------------------------------------------------------------------- outputs, before the work

LIGHT = ("importance", "prune", "induction", "demo")  # their --out check runs before torch is imported


def _out_commands(model: str, task: str) -> dict[str, list[str]]:
    return {
        "importance": ["importance", "--model", model, "--task", task, "--out"],
        "prune": ["prune", "--model", model, "--task", task, "--out"],
        "induction": ["induction", "--model", model, "--seeds", "1", "--out"],
        "demo": ["demo", "--model", model, "--out"],
        "overlap": ["overlap", "a.json", "b.json", "--out"],
        "layers prune": ["layers", "prune", "--model", model, "--n", "1", "--out"],
        "layers heal": ["layers", "heal", "--model", model, "--out"],
    }


@pytest.mark.parametrize("command", list(_out_commands("m", "t")))
def test_out_that_is_a_file_stops_before_the_work(command, cli_model, copy_task, tmp_path, monkeypatch, capsys):
    afile = tmp_path / "taken.txt"
    afile.write_text("mine\n")
    argv = _out_commands(str(cli_model), copy_task)[command]
    monkeypatch.chdir(tmp_path)
    run = (lambda *a: headlens(*a, cwd=tmp_path)) if command in LIGHT else \
        (lambda *a: run_main(monkeypatch, capsys, *a))
    one_error(run(*argv, str(afile)), f"--out {afile} is a file")
    assert afile.read_text() == "mine\n"
    one_error(run(*argv, str(afile / "sub")), f"{afile} is a file")  # unwritable even for root


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder(cli_model, copy_task, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        one_error(headlens("importance", "--model", str(cli_model), "--task", copy_task, "--out", str(ro / "x")),
                  "cannot write in")
    finally:
        ro.chmod(0o755)


def test_html_and_report_outputs_that_are_folders(cli_model, tmp_path):
    one_error(headlens("layers", "distances", "--model", str(cli_model), "--html", str(tmp_path)),
              f"--html {tmp_path} is a folder", "distances.html")
    one_error(headlens("report", str(tmp_path), "-o", str(tmp_path)), f"-o {tmp_path} is a folder")
    one_error(headlens("report", str(tmp_path)), "no saved figures")
    one_error(headlens("report", str(tmp_path / "missing")), "is not a folder")


def test_sweep_output_that_is_a_file(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "results"
    afile.write_text("")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: s\nmodels: [tiny-icl]\ntasks: [copa]\nshots: [0]\nlimit: 2\n"
                    f"data_dir: {FIXTURES}\noutput: {afile}\ncache: {tmp_path / 'cache'}\n"
                    f"analyses: {{importance: null}}\n")
    one_error(run_main(monkeypatch, capsys, "sweep", str(spec)), f"sweep output: {afile} is a file")
    assert not (tmp_path / "cache").exists()  # nothing ran


# ----------------------------------------------------------------------------- models on disk


def test_layers_prune_refuses_its_own_input_folder(cli_model, tmp_path, monkeypatch, capsys):
    link = tmp_path / "link"
    link.symlink_to(cli_model)
    before = sorted(p.name for p in cli_model.iterdir())
    for out in (cli_model, link):
        one_error(run_main(monkeypatch, capsys, "layers", "prune", "--model", str(cli_model), "--n", "1",
                           "--method", "deepest", "--out", str(out)), "would overwrite the input model")
        one_error(run_main(monkeypatch, capsys, "layers", "heal", "--model", str(link), "--out", str(out)),
                  "would overwrite the input model")
    assert sorted(p.name for p in cli_model.iterdir()) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    one_error(run_main(monkeypatch, capsys, "layers", "prune", "--model", str(cli_model), "--n", "1",
                       "--out", str(mine)), "not a headlens checkpoint")
    assert (mine / "notes.txt").read_text() == "keep"


def test_layers_prune_replaces_a_previous_output_whole(cli_model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pruned"
    for _ in range(2):  # the second run replaces the first checkpoint, leaving no temporary folder
        res = run_main(monkeypatch, capsys, "layers", "prune", "--model", str(cli_model), "--n", "1",
                       "--method", "deepest", "--out", str(out), "--device", "cpu")
        assert res.returncode == 0, res.stderr
    assert json.loads((out / "headlens.json").read_text())["removed_layers"] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned"]
    assert out.stat().st_mode & 0o777 != 0o700  # not the private mode of a temporary folder


def test_truncated_weights_are_one_line(cli_model, tmp_path, monkeypatch, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(cli_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    one_error(run_main(monkeypatch, capsys, "eval", "--model", str(broken), "--task", "copa", "--data-dir",
                       FIXTURES, "--limit", "2", "--device", "cpu"), "cannot be read", "truncated or corrupt")


def test_ragged_score_file_is_one_line(tmp_path, monkeypatch, capsys):
    from headlens.results.scores import Scores

    good = Scores(np.arange(8.0).reshape(2, 4), "head_importance", model="m").save(tmp_path / "a.json")
    ragged = tmp_path / "b.json"
    ragged.write_text(json.dumps({**json.loads(good.read_text()), "values": [[1, 2, 3, 4], [5, 6]]}))
    one_error(run_main(monkeypatch, capsys, "overlap", str(good), str(ragged)), str(ragged),
              "not a rectangular array")


# ----------------------------------------------------------------------------- NaN never becomes a number


def test_heal_with_a_huge_or_negative_lr(cli_model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "healed"
    one_error(run_main(monkeypatch, capsys, "layers", "heal", "--model", str(cli_model), "--lr", "-1",
                       "--out", str(out)), "lr must be a finite number > 0", "-1")
    res = run_main(monkeypatch, capsys, "layers", "heal", "--model", str(cli_model), "--lr", "1e6",
                   "--steps", "4", "--batch-size", "4", "--n-texts", "12", "--max-len", "32",
                   "--out", str(out), "--device", "cpu")
    one_error(res, "NaN", "nothing was saved")
    assert not out.exists()


def test_eval_of_a_nan_model_stops(cli_model, tmp_path, monkeypatch, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    nan_dir = tmp_path / "nan"
    hf = AutoModelForCausalLM.from_pretrained(cli_model)
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_proj.weight.fill_(float("nan"))
    hf.save_pretrained(nan_dir)
    AutoTokenizer.from_pretrained(cli_model).save_pretrained(nan_dir)
    res = run_main(monkeypatch, capsys, "eval", "--model", str(nan_dir), "--task", "copa",
                   "--data-dir", FIXTURES, "--limit", "2", "--device", "cpu")
    one_error(res, "NaN")
    assert "acc=" not in res.stdout


# ----------------------------------------------------------------------------- prune: --ranking and --what


def _json(res: subprocess.CompletedProcess):
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _curve(monkeypatch, capsys, model, task, *extra) -> dict:
    return _json(run_main(monkeypatch, capsys, "prune", "--model", str(model), "--task", task, "--shots", "1",
                          "--limit", "4", "--importance-limit", "6", "--random-seeds", "3",
                          "--format", "json", "--device", "cpu", *extra))


def test_prune_rankings(cli_model, copy_task, tmp_path, monkeypatch, capsys):
    """self, FILE.json (the same importance saved), TASK:SHOTS and aggregate (a lone task) agree."""
    res = run_main(monkeypatch, capsys, "importance", "--model", str(cli_model), "--task", copy_task,
                   "--shots", "1", "--limit", "6", "--out", str(tmp_path / "imp"), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    saved = [p for p in (tmp_path / "imp" / "importance").glob("*.json") if p.name.startswith("head")]
    assert len(saved) == 1, saved
    acc = {}
    for ranking in ("self", str(saved[0]), f"{copy_task}:1", "aggregate"):
        obj = _curve(monkeypatch, capsys, cli_model, copy_task, "--ranking", ranking)
        assert obj["ranking"] == ranking and [p["percent"] for p in obj["curve"]] == list(range(0, 100, 10))
        acc[ranking] = [p["acc"] for p in obj["curve"]]
    assert all(a == acc["self"] for a in acc.values()), acc
    other = _curve(monkeypatch, capsys, cli_model, copy_task, "--ranking", f"{copy_task}:0")
    assert len(other["curve"]) == 10


def test_prune_what_ffn_oracle_and_grid(cli_model, copy_task, monkeypatch, capsys):
    obj = _curve(monkeypatch, capsys, cli_model, copy_task, "--what", "ffn", "--ranking", "oracle")
    assert obj["what"] == "ffn" and obj["curve"][0]["percent"] == 0
    grid = _json(run_main(monkeypatch, capsys, "prune", "--model", str(cli_model), "--task", copy_task,
                          "--shots", "1", "--limit", "4", "--importance-limit", "6", "--what", "grid",
                          "--format", "json", "--device", "cpu"))
    assert np.array(grid["grid"]).shape == (len(grid["heads_percent"]), len(grid["ffn_percent"]))
    assert grid["grid"][0][0] == obj["curve"][0]["acc"]  # nothing removed: the same accuracy


def test_prune_bad_rankings_are_one_line(cli_model, copy_task, tmp_path, monkeypatch, capsys):
    common = ["prune", "--model", str(cli_model), "--task", copy_task, "--limit", "2", "--importance-limit", "2",
              "--device", "cpu"]
    for extra, fragment in ((["--ranking", f"{copy_task}:x"], "TASK:SHOTS"),
                            (["--ranking", "oracle"], "--what ffn"),
                            (["--ranking", str(tmp_path / "none.json")], "no file"),
                            (["--ranking", "nosuchtask"], "nosuchtask")):
        one_error(run_main(monkeypatch, capsys, *common, *extra), fragment)
    one_error(headlens("prune", "--task", "copa", "--what", "nope"), "--what must be heads, ffn or grid")


# ----------------------------------------------------------------------------- report, models


def test_report_and_a_corrupt_figure(cli_model, copy_task, tmp_path, monkeypatch, capsys):
    out = tmp_path / "figs"
    res = run_main(monkeypatch, capsys, "prune", "--model", str(cli_model), "--task", copy_task,
                   "--limit", "2", "--importance-limit", "2", "--random-seeds", "3",
                   "--out", str(out), "--format", "json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    (out / "broken.plotly.json").write_text('{"data": [')
    res = headlens("report", str(out), "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "r.html")
    warn = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and warn[0].startswith("headlens: warning: report: left out") and "broken" in warn[0]
    page = (tmp_path / "r.html").read_text()
    assert page.count('class="hl-figure"') == 1 and "broken.plotly.json" in page


def test_models_lists_the_shipped_model(monkeypatch, capsys):
    res = run_main(monkeypatch, capsys, "models", "--format", "json")
    assert res.returncode == 0 and res.stderr == ""
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["tiny-icl"]["present"] is True
