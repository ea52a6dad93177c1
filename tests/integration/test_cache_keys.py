"""Cache keys hash content (model weights, data files, options), entries are validated on load,
and one key per analysis serves the CLI, the library and the sweep alike."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from headlens.analyses.importance import task_importance
from headlens.analyses.pruning import TaskEvaluator, cached_curve, pruning_curve
from headlens.cli.app import app
from headlens.results.cache import ResultCache

FIXTURES = Path("tests/fixtures/tasks").resolve()


def _copa(folder: Path, flip: bool) -> Path:
    """A copa data folder: the fixture's 3 train documents and 5 validation documents
    (odd, so flipped labels can never give the same accuracy), labels flipped if asked."""
    train = [json.loads(line) for line in (FIXTURES / "copa" / "train.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (FIXTURES / "copa" / "validation.jsonl").read_text().splitlines()]
    (folder / "copa").mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", val + train)):
        rows = [{**r, "label": 1 - r["label"]} if flip else r for r in rows]
        path = folder / "copa" / f"{name}.jsonl"
        existed = path.exists()
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        if existed:  # an edit in place within the same clock tick still counts as an edit
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5 * 10**9))
    return folder


def _entry_scores(obj):
    """Every saved Scores dict inside a cache entry (whatever wraps it)."""
    if isinstance(obj, dict):
        if "values" in obj and "metric" in obj:
            yield obj
        for v in obj.values():
            yield from _entry_scores(v)


# ----------------------------------------------------------------------------- validation on load


@pytest.mark.parametrize("damage", ["garbage", "empty", "list", "wrong-shape", "null-value"])
def test_damaged_importance_entry_is_recomputed(tiny_models, tmp_path, damage):
    model, cache = tiny_models["gpt2"], ResultCache(tmp_path)
    first = task_importance(model, "copa", 1, data_dir=FIXTURES, cache=cache, progress=False)
    (entry,) = (tmp_path / "importance").glob("*.json")
    if damage == "garbage":
        entry.write_bytes(b"\x89PNG\x00\xff garbage")
    elif damage in ("empty", "list"):
        entry.write_text("{}" if damage == "empty" else "[]")
    else:
        data = json.loads(entry.read_text())
        heads = next(s for s in _entry_scores(data) if s["metric"] == "head_importance")
        if damage == "wrong-shape":
            heads["values"] = [[0.5]]  # 1x1 for a 2x4 model
        else:
            heads["values"][1][2] = None
        entry.write_text(json.dumps(data))
    again = task_importance(model, "copa", 1, data_dir=FIXTURES, cache=ResultCache(tmp_path), progress=False)
    assert again.heads.values.shape == (2, 4)
    np.testing.assert_allclose(again.heads.values, first.heads.values, rtol=1e-6)
    assert task_importance(model, "copa", 1, data_dir=FIXTURES, cache=cache, progress=False).heads.meta[
        "model_fingerprint"] == model.headlens_info.fingerprint


# ----------------------------------------------------------------------------- model fingerprints


def test_lora_healings_that_differ_only_in_ffn_weights_get_their_own_entries(tiny_dir, tmp_path):
    from headlens.analyses.healing import heal
    from headlens.model.loading import load_model

    # a fresh bridge: one that ran a gradient pass keeps non-leaf tensors that deepcopy refuses
    model = load_model(str(tiny_dir / "gpt2"), device="cpu")
    texts = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine",
             "question answer true false neither", "headlens measures attention heads"]
    held = ["copy reverse successor larger label mapping"]
    a = heal(model, texts, heldout=held, steps=3, rank=2, lr=5e-2, batch_size=2, seed=0).model
    b = heal(model, texts, heldout=held, steps=3, rank=2, lr=5e-2, batch_size=2, seed=1).model
    pa, pb = dict(a.original_model.named_parameters()), dict(b.original_model.named_parameters())
    differ = sorted(n for n in pa if not np.array_equal(pa[n].numpy(), pb[n].numpy()))
    assert differ and all(".mlp." in n for n in differ)  # LoRA on the FFN projections only
    assert a.headlens_info.fingerprint != b.headlens_info.fingerprint
    cache = ResultCache(tmp_path)
    ia = task_importance(a, "copa", 1, data_dir=FIXTURES, cache=cache, progress=False)
    ib = task_importance(b, "copa", 1, data_dir=FIXTURES, cache=cache, progress=False)
    assert cache.misses == 2 and cache.hits == 0
    fresh = task_importance(b, "copa", 1, data_dir=FIXTURES, cache=False, progress=False)
    np.testing.assert_allclose(ib.heads.values, fresh.heads.values, rtol=1e-6)
    assert not np.allclose(ia.ffn.values, ib.ffn.values)


def test_copied_checkout_keeps_the_fingerprint_and_an_edited_weight_changes_it(tmp_path):
    from headlens.model.loading import identify, shipped_models

    if "tiny-icl" not in shipped_models():
        pytest.skip("the shipped model data/models/tiny-icl is not installed")
    copy = Path(shutil.copytree(shipped_models()["tiny-icl"], tmp_path / "tiny-icl"))
    for f in copy.iterdir():  # a fresh clone: every file has a new mtime
        os.utime(f, (1_000_000_000, 1_000_000_000))
    assert identify(str(copy)).fingerprint == identify("tiny-icl").fingerprint
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert identify(str(copy)).fingerprint != identify("tiny-icl").fingerprint


def test_curve_key_includes_dtype(tiny_dir, tmp_path):
    from headlens.model.loading import load_model

    cache = ResultCache(tmp_path)
    for dtype in ("float32", "bfloat16"):
        model = load_model(str(tiny_dir / "gpt2"), device="cpu", dtype=dtype)
        ranking = task_importance(model, "copa", 0, limit=2, data_dir=FIXTURES, cache=False, progress=False).heads
        ranking = ranking.with_values(np.arange(8.0).reshape(2, 4))  # one ranking for both dtypes
        cached_curve(TaskEvaluator(model, "copa", 0, data_dir=FIXTURES), ranking, random_draws=1, percents=(0, 25),
                     cache=cache, progress=False)
    assert cache.misses == 2 and cache.hits == 0


# ----------------------------------------------------------------------------- data fingerprints


def test_data_dir_results_are_keyed_on_file_contents(tiny_models, tmp_path):
    model, cache = tiny_models["gpt2"], ResultCache(tmp_path / "cache")
    a, b = _copa(tmp_path / "a", flip=False), _copa(tmp_path / "b", flip=True)
    ranking = task_importance(model, "copa", 0, data_dir=a, cache=False, progress=False).heads

    def both(folder):
        imp = task_importance(model, "copa", 1, data_dir=folder, cache=cache, progress=False)
        curve = cached_curve(TaskEvaluator(model, "copa", 1, data_dir=folder), ranking, random_draws=1, percents=(0, 25),
                             cache=cache, progress=False)
        return imp, curve

    def fresh(folder):
        imp = task_importance(model, "copa", 1, data_dir=folder, cache=False, progress=False)
        curve = pruning_curve(ranking, TaskEvaluator(model, "copa", 1, data_dir=folder), random_draws=1, percents=(0, 25),
                              progress=False)
        return imp, curve

    def check(folder):
        (imp, curve), (imp0, curve0) = both(folder), fresh(folder)
        np.testing.assert_allclose(imp.heads.values, imp0.heads.values, rtol=1e-6)
        np.testing.assert_allclose(curve["acc"], curve0["acc"])
        return curve

    ca, cb = check(a), check(b)  # same task name, flipped labels: never the other folder's result
    assert ca["acc"][0] != cb["acc"][0]  # 5 queries: acc_b = 1 - acc_a, never equal
    _copa(a, flip=True)  # edit both files in place
    np.testing.assert_allclose(check(a)["acc"], cb["acc"])


def test_yaml_files_task_is_keyed_on_file_contents(tiny_models, tmp_path):
    model = tiny_models["gpt2"]
    (tmp_path / "d").mkdir()
    train = tmp_path / "d" / "train.jsonl"
    rows = [{"q": "1+1", "a": 0}, {"q": "2+2", "a": 1}, {"q": "3+1", "a": 0}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d" / "test.jsonl").write_text('{"q": "3+3", "a": 1}\n')
    spec = tmp_path / "sum.yaml"
    spec.write_text("name: sum\nversion: 1\nmetric: acc\nsource: {kind: files, path: d}\n"
                    "splits: {train: train, eval: test}\n"
                    "template: {context: 'Sum {q} =', choices: [' two', ' six'], gold: a}\n")
    cache = ResultCache(tmp_path / "cache")
    first = task_importance(model, str(spec), 1, cache=cache, progress=False)
    train.write_text("".join(json.dumps({**r, "a": 1 - r["a"]}) + "\n" for r in rows))
    os.utime(train, ns=(train.stat().st_atime_ns, train.stat().st_mtime_ns + 5 * 10**9))
    edited = task_importance(model, str(spec), 1, cache=cache, progress=False)
    assert cache.misses == 2
    fresh = task_importance(model, str(spec), 1, cache=False, progress=False)
    np.testing.assert_allclose(edited.heads.values, fresh.heads.values, rtol=1e-6)
    assert not np.allclose(edited.heads.values, first.heads.values)


# ----------------------------------------------------------------------------- one key: sweep <-> CLI


@pytest.fixture(scope="module")
def sweep_spec(tmp_path_factory):
    from tests.builders import build_tiny

    root = tmp_path_factory.mktemp("cache-sweep")
    model = str(build_tiny("gpt2", root / "gpt2"))
    texts = root / "texts.txt"
    texts.write_text("the quick brown fox jumps over the lazy dog\na stitch in time saves nine\n"
                     "question answer true false\n")

    def make(name):
        from headlens.runs.sweep import parse_sweep

        return parse_sweep({"name": name, "models": [model], "tasks": ["copa"], "shots": [1], "limit": 2,
                            "data_dir": str(FIXTURES), "output": str(root / f"out-{name}"),
                            "cache": str(root / f"cache-{name}"),
                            "analyses": {"importance": None,
                                         "pruning": {"what": ["heads", "ffn"], "random_draws": 1, "limit": 2},
                                         "induction": {"seeds": 2, "copying": ["corrected"]},
                                         "layer_distances": {"n_texts": 3, "text_file": str(texts)}}})
    return make


def _run_cli(command: str) -> None:
    words = shlex.split(command)
    assert words[0].startswith("HEADLENS_CACHE=") and words[1] == "headlens"
    res = CliRunner().invoke(app, words[2:] + ["--format", "json"], env={"HEADLENS_CACHE": words[0].split("=", 1)[1]})
    assert res.exit_code == 0, (command, res.output)


def _forbid_computing(monkeypatch):
    import headlens.analyses.importance
    import headlens.analyses.induction
    import headlens.analyses.layers
    import headlens.analyses.scoring

    def boom(*a, **k):
        raise AssertionError("recomputed although the other side cached it")

    for mod, name in [(headlens.analyses.importance, "head_importance"), (headlens.analyses.scoring, "evaluate_prepared"),
                      (headlens.analyses.induction, "prefix_matching"), (headlens.analyses.induction, "copying"),
                      (headlens.analyses.layers, "layer_distances")]:
        monkeypatch.setattr(mod, name, boom)


def test_sweep_results_are_hits_for_the_cli(sweep_spec, monkeypatch):
    from headlens.runs.execute import run_sweep

    spec = sweep_spec("sweep-first")
    report = run_sweep(spec)
    assert report.count("done") == 7, report.summary()
    _forbid_computing(monkeypatch)
    commands = [record.job.command for record in report.records]
    oracle = [c for c in commands if "--ranking oracle" in c]  # the FFN oracle curve's command
    assert len(oracle) == 1 and "headlens prune" in oracle[0] and "--what ffn" in oracle[0]
    for command in commands:  # importance, prune (heads, FFN oracle, FFN gradient), induction, layers distances
        _run_cli(command)  # all from the cache: the oracle ranking and its curve included


def test_cli_results_are_hits_for_the_sweep(sweep_spec, monkeypatch):
    from headlens.runs import sweep
    from headlens.runs.execute import plan, run_sweep

    spec = sweep_spec("cli-first")
    jobs = sweep.expand(spec)
    for job in jobs:
        _run_cli(job.command)
    assert all(cached for _, cached in plan(spec))

    def never(job, cache_root):
        raise AssertionError(f"sweep ran {job.label} although the CLI cached it")

    monkeypatch.setattr(sweep, "run_job", never)
    report = run_sweep(spec)
    assert report.count("cached") == len(jobs) == 7, report.summary()
    assert len(list(Path(spec.output).rglob("*.json"))) >= 5  # outputs written from the cache


def test_sweep_skips_nothing_on_a_damaged_entry(sweep_spec):
    from headlens.runs.execute import plan, run_sweep

    spec = sweep_spec("damaged")
    run_sweep(spec)
    for entry in (Path(spec.cache) / "importance").glob("*.json"):
        data = json.loads(entry.read_text())
        next(s for s in _entry_scores(data) if s["metric"] == "head_importance")["values"] = [[1.0]]
        entry.write_text(json.dumps(data))
    assert [j.analysis for j, cached in plan(spec) if not cached] == ["importance"]
    report = run_sweep(spec)
    assert report.count("done") == 1 and report.count("cached") == 6, report.summary()


# ----------------------------------------------------------------------------- model identity


def test_scores_of_another_model_are_refused(tiny_dir, tmp_path, monkeypatch, capsys):
    import sys

    from headlens.cli.app import main

    files = {}
    for arch in ("gpt2", "llama"):  # both 2 layers x 4 heads: only the identity tells them apart
        res = CliRunner().invoke(app, ["importance", "--model", str(tiny_dir / arch), "--task", "copa",
                                       "--shots", "0", "--data-dir", str(FIXTURES), "--out", str(tmp_path / arch)])
        assert res.exit_code == 0, res.output
        (files[arch],) = (tmp_path / arch / "importance").glob("head_importance-*.json")
    overlap = ["overlap", str(files["gpt2"]), str(files["llama"])]
    prune = ["prune", "--model", str(tiny_dir / "gpt2"), "--task", "copa", "--data-dir", str(FIXTURES),
             "--limit", "2", "--random-seeds", "1", "--ranking", str(files["llama"])]
    for argv in (overlap, prune):
        monkeypatch.setattr(sys, "argv", ["headlens", *argv])
        with pytest.raises(SystemExit) as ex:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert ex.value.code == 2 and len(err) == 1 and "another model" in err[0], err
        assert "--allow-other-model" in err[0]
        res = CliRunner().invoke(app, argv + ["--allow-other-model"])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["prune", *prune[1:-1], str(files["gpt2"])])
    assert res.exit_code == 0, res.output  # its own model's ranking is fine


def test_importance_out_files_carry_seed_and_model(tiny_dir, tmp_path):
    for seed in (0, 1):
        res = CliRunner().invoke(app, ["importance", "--model", str(tiny_dir / "gpt2"), "--task", "copa,piqa",
                                       "--shots", "1", "--data-dir", str(FIXTURES), "--seed", str(seed),
                                       "--out", str(tmp_path)])
        assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "importance").glob("*.json"))
    assert "head_importance-copa-1-bansal-seed0-gpt2.json" in names
    assert "head_importance-copa-1-bansal-seed1-gpt2.json" in names
    assert "head_importance-aggregate-bansal-seed1-gpt2.json" in names
    assert len(names) == 2 * (2 * 2 + 1)  # per seed: heads and FFNs of 2 tasks, and the aggregate


def test_importance_options_are_validated_once_with_the_choices(tiny_dir, monkeypatch, capsys):
    import sys

    from headlens.analyses.importance import ImportanceOptions
    from headlens.cli.app import main
    from headlens.errors import HeadlensError

    with pytest.raises(HeadlensError, match="did you mean bansal"):
        ImportanceOptions(variant="bansol")  # type: ignore[arg-type]
    with pytest.raises(HeadlensError, match="limit must be an integer >= 1"):
        ImportanceOptions(limit=0)
    monkeypatch.setattr(sys, "argv", ["headlens", "importance", "--model", "/no/such/model", "--task", "copa",
                                      "--limit", "0"])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1 and "limit must be" in err[0]  # before loading the model


def test_cli_cache_entries_are_0644_and_an_unwritable_cache_only_warns(tiny_dir, tmp_path, monkeypatch, capsys):
    import stat
    import sys

    from headlens.cli.app import main

    argv = ["headlens", "importance", "--model", str(tiny_dir / "gpt2"), "--task", "copa", "--shots", "0",
            "--data-dir", str(FIXTURES), "--format", "json"]
    old = os.umask(0o022)
    try:
        monkeypatch.setenv("HEADLENS_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(sys, "argv", argv)
        main()
        (entry,) = (tmp_path / "cache" / "importance").glob("*.json")
        assert stat.S_IMODE(entry.stat().st_mode) == 0o644  # readable by the other users of a shared cache
        capsys.readouterr()
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("HEADLENS_CACHE", str(tmp_path / "file" / "cache"))  # unwritable, even for root
        main()
    finally:
        os.umask(old)
    out = capsys.readouterr()
    assert np.array(json.loads(out.out)["heads"]).shape == (2, 4)
    warnings = [line for line in out.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "cannot write the result cache" in warnings[0]


def test_data_fingerprint_follows_prompt_format_and_definition_not_paths(tmp_path, monkeypatch):
    from dataclasses import replace

    import headlens.tasks.sources as sources
    from headlens.tasks import get_task

    a, b = _copa(tmp_path / "a", flip=False), _copa(tmp_path / "b", flip=False)
    task = get_task("copa")
    fa = sources.data_fingerprint(task, {"train"}, a)
    assert fa == sources.data_fingerprint(task, {"train"}, b)  # same bytes in another folder: same key
    assert str(tmp_path) not in json.dumps(fa)
    assert fa != sources.data_fingerprint(replace(task, separator="\n"), {"train"}, a)
    monkeypatch.setattr(sources, "PROMPT_VERSION", sources.PROMPT_VERSION + 1)
    assert fa != sources.data_fingerprint(task, {"train"}, a)  # a new prompt format: stale
