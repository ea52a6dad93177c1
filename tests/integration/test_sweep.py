"""Sweeps: file validation, job keys = cache keys, local and Ray runs agree, kill + resume,
retry-then-record failures with a working reproduce command, analysis wiring, CLI."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from headlens.runs import sweep
from headlens.errors import HeadlensError
from headlens.runs.sweep import expand, load_sweep, model_identity, parse_memory, parse_sweep
from headlens.runs.execute import JobRecord, _Live, plan, run_sweep

FIXTURES = str(Path("tests/fixtures/tasks").resolve())
REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from tests.builders import build_tiny

    root = tmp_path_factory.mktemp("sweep-models")
    return {arch: str(build_tiny(arch, root / arch)) for arch in ("gpt2", "llama")}


def grid(models, root: Path, name: str, **extra) -> dict:
    """Two models x two fixture tasks x two shot counts of importance (8 jobs)."""
    return {"name": name, "models": [models["gpt2"], models["llama"]], "tasks": ["copa", "piqa"],
            "shots": [0, 1], "limit": 2, "data_dir": FIXTURES, "output": str(root / f"out-{name}"),
            "cache": str(root / f"cache-{name}"), "analyses": {"importance": None}, **extra}


def cached_values(cache: Path, kind: str = "importance") -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["value"] for p in sorted((cache / kind).glob("*.json"))}


@pytest.fixture(scope="module")
def local_sweep(two_models, tmp_path_factory):
    """The 8-job grid run locally, killed after 3 jobs, then resumed (calls counted)."""
    root = tmp_path_factory.mktemp("sweep-local")
    spec = parse_sweep(grid(two_models, root, "local"))
    real = sweep.run_job
    first: list[str] = []
    resumed: list[str] = []
    loads: list[bool] = []

    def killed_after_three(job, cache_root):
        if len(first) == 3:
            raise KeyboardInterrupt  # what Ctrl-C (or a scheduler's SIGINT) does mid-sweep
        first.append(job.key)
        out = real(job, cache_root)
        loads.append(out["loaded_model"])
        return out

    def counting(job, cache_root):
        resumed.append(job.key)
        out = real(job, cache_root)
        loads.append(out["loaded_model"])
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "run_job", killed_after_three)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec)
        cache = Path(spec.cache)
        after_kill = {p.stem: p.stat().st_mtime_ns for p in (cache / "importance").glob("*.json")}
        mp.setattr(sweep, "run_job", counting)
        report = run_sweep(spec)
        rerun = run_sweep(spec)
    return {"spec": spec, "first": first, "after_kill": after_kill, "resumed": resumed, "report": report,
            "rerun": rerun, "cache": cache, "loads": loads}


# ----------------------------------------------------------------------------- validation


def test_sweep_file_errors_name_the_fix(two_models, tmp_path):
    good = grid(two_models, tmp_path, "v")
    cases = [
        ({**good, "modles": []}, "unknown key 'modles'; did you mean models"),
        ({**good, "shots": [0, "one"]}, "shots: must be an integer >= 0"),
        ({**good, "shots": [-1]}, "shots: must be an integer >= 0"),
        ({**good, "analyses": {"importanse": None}}, "did you mean importance"),
        ({**good, "analyses": {"importance": {"variants": ["bansol"]}}}, "did you mean bansal"),
        ({**good, "analyses": {"pruning": {"wat": "heads"}}}, "unknown key 'wat'; did you mean what"),
        ({**good, "analyses": {}}, "analyses is empty"),
        ({**good, "tasks": ["copaa"]}, "did you mean copa"),
        ({**good, "tasks": ["nope/tasks.yaml"]}, "does not exist"),
        ({**good, "models": [str(tmp_path / "missing-model")]}, "does not exist"),
        ({**good, "models": [{"name": two_models["gpt2"], "num_gpus": -1}]}, "num_gpus must be a number >= 0"),
        ({**good, "models": [{"name": two_models["gpt2"], "memory": "lots"}]}, "is not a size"),
        ({**good, "models": [{"name": two_models["gpt2"], "gpus": 1}]}, "did you mean num_gpus"),
        ({**good, "models": [two_models["gpt2"], two_models["gpt2"]]}, "distinct 'label'"),
        ({**good, "tasks": None}, "importance and pruning need tasks"),
        ({**good, "data_dir": str(tmp_path / "nowhere")}, "is not a folder"),
        ({**good, "retries": -1}, "retries must be an integer >= 0"),
    ]
    for data, expected in cases:
        with pytest.raises(HeadlensError) as err:
            parse_sweep(data, origin="s.yaml")
        assert expected in str(err.value) and "\n" not in str(err.value), (expected, str(err.value))
    assert parse_memory("16GB") == 16 * 10**9 and parse_memory("1.5GiB") == int(1.5 * 2**30)
    assert parse_memory(1024) == 1024 and parse_memory(None) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a\n")
    with pytest.raises(HeadlensError, match="not valid YAML"):
        load_sweep(bad)


def test_expansion_order_dependencies_and_resources(two_models, tmp_path):
    spec = parse_sweep({**grid(two_models, tmp_path, "e"), "seeds": [0, 3],
                        "models": [{"name": two_models["gpt2"], "num_gpus": 0.5, "memory": "2GiB"}],
                        "analyses": {"importance": {"variants": ["bansal", "michel"]},
                                     "pruning": {"what": ["heads", "ffn"]}}})
    jobs = expand(spec)
    assert len(jobs) == 2 * 2 * 2 * (2 + 3)  # tasks x shots x seeds x (2 variants + heads, FFN oracle, FFN gradient)
    assert len({j.key for j in jobs}) == len(jobs)
    imp = {j.key: j for j in jobs if j.analysis == "importance"}
    for j in (j for j in jobs if j.analysis == "pruning"):
        (dep,) = j.depends
        d = imp[dep]
        assert (d.task, d.shots, d.seed, d.variant) == (j.task, j.shots, j.seed, "bansal")
        assert jobs.index(d) < jobs.index(j)
    assert jobs[0].model.resources() == {"num_cpus": 1.0, "num_gpus": 0.5, "memory": 2 * 2**30}
    assert expand(spec) == jobs  # stable: same file, same keys


def test_job_key_is_task_importance_cache_key(two_models, local_sweep):
    from headlens.results.cache import ResultCache
    from headlens.analyses.importance import task_importance
    from headlens.model.loading import load_model

    bridge = load_model(two_models["llama"], device="cpu")
    assert model_identity(local_sweep["spec"].models[1]) == bridge.headlens_info
    job = next(j for j in expand(local_sweep["spec"]) if j.model.label == "llama" and j.task == "piqa"
               and j.shots == 1)
    cache = ResultCache(local_sweep["cache"])
    imp = task_importance(bridge, "piqa", 1, limit=2, data_dir=FIXTURES, cache=cache, progress=False)
    assert (cache.hits, cache.misses) == (1, 0)  # the sweep's entry is exactly the library's entry
    saved = json.loads((Path(local_sweep["spec"].output) / "llama" / "importance"
                        / "heads-piqa-1shot-bansal-seed0.json").read_text())
    np.testing.assert_array_equal(np.array(saved["values"]), imp.heads.values)
    assert job.key in cached_values(local_sweep["cache"])


# ----------------------------------------------------------------------------- resume, backends


def test_killed_sweep_resumes_without_recomputing(local_sweep):
    first, resumed, report = local_sweep["first"], local_sweep["resumed"], local_sweep["report"]
    assert len(first) == 3 and set(local_sweep["after_kill"]) == set(first)  # only finished jobs stored
    assert len(resumed) == 5 and not set(resumed) & set(first)  # finished jobs are not run again
    assert (report.count("cached"), report.count("done"), report.count("failed")) == (3, 5, 0)
    assert all(r.computed for r in report.records if r.status == "done")
    assert sum(local_sweep["loads"]) <= 2  # one process, jobs grouped by model: each model loaded once
    after = {p.stem: p.stat().st_mtime_ns for p in (local_sweep["cache"] / "importance").glob("*.json")}
    assert all(after[k] == t for k, t in local_sweep["after_kill"].items())  # never rewritten
    assert len(after) == 8 and local_sweep["rerun"].count("cached") == 8 and len(resumed) == 5
    summary = json.loads((Path(local_sweep["spec"].output) / "sweep-summary.json").read_text())
    assert summary["cached"] == 8 and summary["failed"] == 0
    assert len(list((Path(local_sweep["spec"].output)).rglob("heads-*.json"))) == 8
    assert all(cached for _, cached in plan(local_sweep["spec"]))


def test_ray_sweep_matches_local(two_models, local_sweep, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray not installed: pip install 'headlens[ray]' to test the ray backend")
    spec = parse_sweep(grid(two_models, tmp_path, "ray"))
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": REPO}})
    try:
        report = run_sweep(spec, ray_address="auto")
    finally:
        ray.shutdown()
    assert report.backend == "ray" and report.count("done") == 8, report.summary()
    assert all(r.pid != os.getpid() for r in report.records)  # ran in Ray workers
    local, remote = cached_values(local_sweep["cache"]), cached_values(Path(spec.cache))
    assert set(local) == set(remote) and len(local) == 8  # same keys whichever backend ran them
    for key, value in local.items():  # same numbers: exact equality (same CPU kernels, same order)
        for part in ("heads", "ffn"):
            np.testing.assert_array_equal(np.array(remote[key][part]["values"]), np.array(value[part]["values"]))


def test_process_pool_matches_local(two_models, local_sweep, tmp_path):
    data = grid(two_models, tmp_path, "pool")
    data.update(models=[two_models["gpt2"]], tasks=["copa"])  # 2 jobs: one per worker at most
    report = run_sweep(parse_sweep(data), workers=2)
    assert report.count("done") == 2 and all(r.pid != os.getpid() for r in report.records), report.summary()
    pids = [r.pid for r in report.records]
    assert sum(r.loaded_model for r in report.records) == len(set(pids))  # one load per worker
    local = cached_values(local_sweep["cache"])
    for key, value in cached_values(Path(data["cache"])).items():
        np.testing.assert_array_equal(np.array(value["heads"]["values"]), np.array(local[key]["heads"]["values"]))


# ----------------------------------------------------------------------------- failures


def test_failed_job_retried_recorded_and_reproducible(two_models, tmp_path, monkeypatch, capsys):
    data = {**grid(two_models, tmp_path, "fail"), "models": [two_models["gpt2"]], "tasks": ["copa"],
            "shots": [9, 0], "analyses": {"importance": None, "pruning": {"random_seeds": 1}}}
    data["analyses"]["pruning"]["what"] = "heads"
    spec = parse_sweep(data)
    attempts: dict[str, int] = {}
    real = sweep.run_job

    def counting(job, cache_root):
        attempts[job.label] = attempts.get(job.label, 0) + 1
        if job.analysis == "pruning" and job.shots == 0:
            return {"key": job.key, "analysis": "pruning", "value": {"curve": []}, "computed": True,
                    "seconds": 0.0, "files": [], "pid": os.getpid()}  # not under test here: skip the cost
        return real(job, cache_root)

    monkeypatch.setattr(sweep, "run_job", counting)
    report = run_sweep(spec)
    bad = next(r for r in report.records if r.job.analysis == "importance" and r.job.shots == 9)
    assert attempts[bad.job.label] == 2 and bad.attempts == 2  # tried, retried once, recorded
    assert bad.status == "failed" and "9 shots" in bad.error
    blocked = next(r for r in report.records if r.job.analysis == "pruning" and r.job.shots == 9)
    assert blocked.status == "failed" and "not run" in blocked.error and blocked.job.label not in attempts
    assert next(r for r in report.records if r.job.shots == 0 and r.job.analysis == "importance").status == "done"
    text = report.summary()
    assert f"reproduce: {bad.job.command}" in text and "--shots 9" in bad.job.command
    # the reproduce command fails the same way on its own
    words = shlex.split(bad.job.command)
    env, argv = words[0], words[1:]
    assert env.startswith("HEADLENS_CACHE=") and argv[0] == "headlens"
    monkeypatch.setenv("HEADLENS_CACHE", env.split("=", 1)[1])
    monkeypatch.setattr(sys, "argv", argv)
    from headlens.cli.app import main

    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 2 and "9 shots" in capsys.readouterr().err
    summary = json.loads((Path(spec.output) / "sweep-summary.json").read_text())
    assert summary["failures"][0]["command"] == bad.job.command


def test_live_table_shows_each_status(two_models, tmp_path):
    from rich.console import Console

    jobs = expand(parse_sweep(grid(two_models, tmp_path, "live")))
    records = [JobRecord(j, status=s) for j, s in zip(jobs, ["done", "done", "running", "failed", "cached",
                                                             "pending", "pending", "pending"])]
    records[3].error = "HeadlensError: boom"
    console = Console(record=True, width=160)
    console.print(_Live("live", records, enabled=False).render())
    text = console.export_text()
    for word in ("done", "running", "failed", "skipped (cached)", "pending", "boom", jobs[2].label):
        assert word in text


# ----------------------------------------------------------------------------- analyses


def test_pruning_and_layer_distance_jobs_equal_direct_calls(two_models, tmp_path):
    import pandas as pd

    from headlens.analyses.importance import task_importance
    from headlens.analyses.layers import layer_distances
    from headlens.model.loading import load_model
    from headlens.analyses.pruning import TaskEvaluator, pruning_curve

    texts = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine",
             "question answer true false"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    data = {**grid(two_models, tmp_path, "an"), "models": [two_models["gpt2"]], "tasks": ["copa"], "shots": [0],
            "analyses": {"pruning": {"random_seeds": 1, "limit": 2},
                         "layer_distances": {"n_texts": 3, "text_file": str(tmp_path / "texts.txt")}}}
    report = run_sweep(parse_sweep(data))
    assert report.count("done") == 2, report.summary()
    out = Path(data["output"]) / "gpt2"
    bridge = load_model(two_models["gpt2"], device="cpu")
    ranking = task_importance(bridge, "copa", 0, limit=2, data_dir=FIXTURES, cache=False, progress=False).heads
    direct = pruning_curve(ranking, TaskEvaluator(bridge, "copa", 0, limit=2, data_dir=FIXTURES),
                           random_seeds=(0,), progress=False)
    saved = pd.read_csv(out / "pruning" / "heads-copa-0shot-bansal-seed0.csv")
    np.testing.assert_allclose(saved[["percent", "acc"]].to_numpy(), direct[["percent", "acc"]].to_numpy())
    dist = layer_distances(bridge, texts)
    saved_dist = json.loads((out / "layer_distances" / "distances-3texts-seed0.json").read_text())
    for a, b in zip(saved_dist["distance"], dist.to_dict()["distance"]):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # float32 forward passes, same inputs
    # each job's reproduce command gives the same numbers on its own
    from headlens.cli.app import app

    by_analysis = {r.job.analysis: r.job for r in report.records}
    for analysis, check in (("pruning", lambda o: np.testing.assert_allclose(
                                [p["acc"] for p in o["curve"]], saved["acc"].to_numpy())),
                            ("layer_distances", lambda o: [np.testing.assert_allclose(a, b, rtol=1e-6)
                                                           for a, b in zip(o["distance"], saved_dist["distance"])])):
        words = shlex.split(by_analysis[analysis].command)
        assert words[1] == "headlens"
        res = CliRunner().invoke(app, words[2:] + ["--format", "json"], env={"HEADLENS_CACHE": words[0].split("=", 1)[1]})
        assert res.exit_code == 0, res.output
        check(json.loads(res.stdout.strip().splitlines()[-1]))


def test_pruning_random_draws_alias_and_ffn_rankings(two_models, tmp_path):
    """random_draws (old name random_seeds, same meaning), ffn_ranking (oracle first by default):
    one curve job per FFN ranking, each with its own entry, file and reproduce command."""
    base = {**grid(two_models, tmp_path, "rk"), "models": [two_models["gpt2"]], "tasks": ["copa"], "shots": [1]}

    def spec(**pruning):
        return parse_sweep({**base, "analyses": {"importance": None, "pruning": {"what": ["heads", "ffn"], **pruning}}})

    default = spec().pruning
    assert default.random_draws == 50 and default.ffn_ranking == ("oracle", "gradient")
    old, new = spec(random_seeds=7), spec(random_draws=7)
    assert old.pruning.random_draws == new.pruning.random_draws == 7
    assert [j.key for j in expand(old)] == [j.key for j in expand(new)]  # the alias names the same entries
    jobs = expand(new)
    curves = [j for j in jobs if j.analysis == "pruning"]
    assert [(j.option("what"), j.option("ranking")) for j in curves] == [("heads", "gradient"), ("ffn", "oracle"),
                                                                         ("ffn", "gradient")]
    assert len({j.key for j in curves}) == len({j.label for j in curves}) == 3
    assert len({p for j in curves for p in sweep.output_paths(j)}) == 3
    imp = next(j for j in jobs if j.analysis == "importance")
    assert all(j.depends == (imp.key,) for j in curves)  # the oracle's ties are broken by that importance
    for j in curves:
        assert "--random-draws 7" in j.command and "--random-seeds" not in j.command
        assert ("--ranking oracle" in j.command) == (j.option("ranking") == "oracle")
    only = [j.option("ranking") for j in expand(spec(ffn_ranking="gradient")) if j.option("what") == "ffn"]
    assert only == ["gradient"]
    for bad, fragment in (({"ffn_ranking": ["gradint"]}, "did you mean gradient"),
                          ({"random_draws": 0}, "random_draws: must be an integer >= 1"),
                          ({"random_seeds": 0}, "random_draws: must be an integer >= 1"),
                          ({"random_seeds": 3, "random_draws": 3}, "not both")):
        with pytest.raises(HeadlensError, match=fragment):
            spec(**bad)


def test_ffn_oracle_curve_is_a_sweep_output_and_dry_run_tells_what_is_cached(two_models, tmp_path):
    """The default FFN curve ranks by removal on the importance queries (ties by the gradient
    ranking), measured on the evaluation queries: equal to a hand-made ranking's curve."""
    import pandas as pd

    from headlens.analyses.importance import ffn_oracle, task_importance
    from headlens.analyses.pruning import TaskEvaluator, pruning_curve
    from headlens.model.loading import load_model
    from headlens.results.scores import Scores

    data = {**grid(two_models, tmp_path, "oracle"), "models": [two_models["gpt2"]], "tasks": ["copa"], "shots": [1],
            "analyses": {"pruning": {"what": "ffn", "random_draws": 1, "limit": 2}}}
    spec = parse_sweep(data)
    assert [c for _, c in plan(spec)] == [False, False]
    report = run_sweep(spec)
    assert report.count("done") == 2, report.summary()
    assert [c for _, c in plan(spec)] == [True, True]
    folder = Path(data["output"]) / "gpt2" / "pruning"
    saved = {r: pd.read_csv(folder / f"ffn-{r}-copa-1shot-bansal-seed0.csv") for r in ("oracle", "gradient")}
    bridge = load_model(two_models["gpt2"], device="cpu")
    gradient = task_importance(bridge, "copa", 1, limit=2, data_dir=FIXTURES, cache=False, progress=False).ffn
    drops = ffn_oracle(bridge, TaskEvaluator(bridge, "copa", 1, split="train", limit=2, data_dir=FIXTURES)).values
    order = sorted(range(len(drops)), key=lambda layer: (drops[layer], gradient.values[layer]))  # by hand
    ranks = np.empty(len(drops))
    ranks[order] = np.arange(len(drops))
    evaluate = TaskEvaluator(bridge, "copa", 1, limit=2, data_dir=FIXTURES)
    for name, ranking in (("oracle", Scores(ranks, metric="ffn_importance")), ("gradient", gradient)):
        direct = pruning_curve(ranking, evaluate, what="ffn", random_draws=1, progress=False)
        np.testing.assert_allclose(saved[name][["percent", "acc", "acc_random_mean"]].to_numpy(),
                                   direct[["percent", "acc", "acc_random_mean"]].to_numpy())
    # `prune --ranking oracle` resolves the same ranking (from the sweep's cache) and names the same entry
    from headlens.analyses.pruning import CurveOptions, resolve_ranking
    from headlens.results.cache import ResultCache
    from headlens.tasks import get_task

    cache = ResultCache(spec.cache)
    cli_ranking = resolve_ranking(bridge, "oracle", get_task("copa"), 1, "ffn", limit=2, data_dir=FIXTURES,
                                  cache=cache)
    assert cache.misses == 0 and cache.hits == 2  # the oracle and the importance that breaks its ties
    np.testing.assert_array_equal(cli_ranking.values, ranks)
    assert (ranks != np.arange(len(drops))).any()  # here equal drops: the gradient order is not layer order
    oracle_job = next(r.job for r in report.records if r.job.option("ranking") == "oracle")
    assert evaluate.curve_key(cli_ranking, CurveOptions(what="ffn", random_draws=1)) == oracle_job.entry
    # only the oracle curve's entry gone: dry-run says so, though the oracle ranking itself is cached
    (Path(spec.cache) / "pruning" / f"{oracle_job.key}.json").unlink()
    assert [(j.option("ranking"), c) for j, c in plan(spec)] == [("oracle", False), ("gradient", True)]


def test_induction_jobs_equal_direct_calls(two_models, tmp_path):
    from headlens.analyses import induction
    from headlens.model.loading import load_model

    data = {**grid(two_models, tmp_path, "ind"), "models": [two_models["gpt2"]], "tasks": None,
            "analyses": {"induction": {"seeds": 2, "copying": ["corrected"]}}}
    report = run_sweep(parse_sweep(data))
    assert report.count("done") == 2, report.summary()
    bridge = load_model(two_models["gpt2"], device="cpu")
    folder = Path(data["output"]) / "gpt2" / "induction"
    for name, scores in (("prefix_matching-seeds2.json", induction.prefix_matching(bridge, seeds=[0, 1])),
                         ("copying-corrected-seeds2.json", induction.copying(bridge, variant="corrected",
                                                                             seeds=[0, 1]))):
        saved = json.loads((folder / name).read_text())
        np.testing.assert_allclose(np.array(saved["values"]), scores.values, rtol=1e-6)


# ----------------------------------------------------------------------------- CLI


def test_cli_dry_run_and_run(two_models, local_sweep, tmp_path):
    import yaml

    from headlens.cli.app import app

    data = grid(two_models, tmp_path, "cli")
    data["cache"] = str(local_sweep["cache"])  # everything cached: the run only writes files
    data["shots"] = [0, 1, 5]
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["sweep", str(file), "--dry-run", "--format", "json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["n_jobs"] == 12 and obj["n_cached"] == 8
    assert {j["shots"] for j in obj["jobs"] if not j["cached"]} == {5}
    assert all(j["command"].startswith("HEADLENS_CACHE=") for j in obj["jobs"])
    data["shots"] = [0, 1]
    file.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["sweep", str(file), "--format", "json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["cached"] == 8 and obj["done"] == 0 and obj["failures"] == []
    assert len(list(Path(data["output"]).rglob("heads-*.json"))) == 8  # files rebuilt from the cache
    res = CliRunner().invoke(app, ["sweep", str(file), "--workers", "0"])
    assert isinstance(res.exception, HeadlensError) and "--workers must be" in str(res.exception)


def test_example_sweep_files_parse():
    spec = load_sweep("data/sweeps/study.yaml")
    assert len(spec.tasks) == 14 and spec.shots == (0, 1, 5) and spec.importance and spec.pruning
    jobs = expand(spec)
    assert spec.pruning.what == ("heads", "ffn") and spec.pruning.ffn_ranking == ("oracle", "gradient")
    assert spec.pruning.random_draws == 50
    per_model = 14 * 3 * (len(spec.importance.variants) + 3)  # heads, FFN oracle, FFN gradient
    assert len(jobs) == per_model * len(spec.models)
    text = Path("data/sweeps/offline.yaml").read_text()
    assert "tiny-icl" in text and "offline" in text
