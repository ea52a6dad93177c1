"""The ``headlens`` command: a thin layer over functions notebooks call directly.

Heavy modules (torch, transformer-lens, plotly) are imported inside each command so that
``headlens --help`` is instant. Bad input raises HeadlensError, printed here on one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Interpretability of attention heads: importance, induction, overlap, layer pruning.")



@app.callback()
def _root() -> None:
    """Interpretability of attention heads: importance, induction, overlap, layer pruning."""


MODEL_HELP = "Shipped model name, local checkpoint folder, or hub id."
ModelOpt = typer.Option("tiny-icl", "--model", "-m", help=MODEL_HELP)
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16.")
FormatOpt = typer.Option("text", "--format", help="text or json (one JSON object on stdout).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"headlens: error: {message}", err=True)
    raise typer.Exit(code)


def print_json(obj) -> None:
    """One JSON object on stdout (NaN is written as null)."""
    from headlens.results import _jsonable

    def clean(x):
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    sys.stdout.write(json.dumps(clean(_jsonable(obj))) + "\n")


def check_format(fmt: str) -> None:
    if fmt not in ("text", "json"):
        _fail(f"--format must be text or json, got {fmt!r}")


def load(model: str, device: Optional[str], dtype: str):
    from headlens.loading import load_model

    return load_model(model, device=device, dtype=dtype)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- induction
# (commands are grouped by feature; each section only calls library functions)


@app.command("induction")
def induction_cmd(
    model: str = ModelOpt,
    seeds: int = typer.Option(10, "--seeds", help="Number of seeds 0..N-1 (sequence length 2*seed+25; the paper used 100)."),
    copying_variant: str = typer.Option("corrected", "--copying", help="Copying score: paper, corrected or eigen."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for score JSONs and heatmap HTMLs."),
    fmt: str = FormatOpt,
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Prefix-matching and copying scores of every head (induction heads score high on both)."""
    check_format(fmt)
    from headlens.errors import HeadlensError
    from headlens.induction import COPYING_VARIANTS, copying, prefix_matching

    if copying_variant not in COPYING_VARIANTS:
        raise HeadlensError(f"--copying must be one of {', '.join(COPYING_VARIANTS)}, got {copying_variant!r}")
    if seeds < 1:
        raise HeadlensError(f"--seeds must be >= 1, got {seeds}")
    bridge = load(model, device, dtype)
    # copying first: its checks (context length and vocabulary size) cover prefix matching's
    copy = copying(bridge, copying_variant, seeds, progress=True)  # type: ignore[arg-type]
    prefix = prefix_matching(bridge, seeds, progress=True)
    if out is not None:
        from headlens.plots.common import head_heatmap, write_html
        from headlens.plots.induction import induction_panels

        for scores in (prefix, copy):
            scores.save(out)
            write_html(head_heatmap(scores), out / f"{scores.file_stem()}.html")
        write_html(induction_panels(prefix, copy), out / "induction.html")
    if fmt == "json":
        print_json({"model": prefix.model, "n_layers": prefix.n_layers, "n_heads": prefix.n_heads,
                    "copying_variant": copying_variant, "seeds": seeds,
                    "prefix_matching": prefix.values.tolist(), "copying": copy.values.tolist()})
        return
    typer.echo(f"{prefix.model}: {prefix.n_layers} layers x {prefix.n_heads} heads, seeds 0..{seeds - 1}")
    typer.echo("top prefix matching: " + ", ".join(f"L{l}H{h}={v:.3f}" for l, h, v in prefix.top(5)))
    typer.echo(f"top copying ({copying_variant}): " + ", ".join(f"L{l}H{h}={v:.3f}" for l, h, v in copy.top(5)))
    if out is not None:
        typer.echo(f"wrote scores and heatmaps to {out}")


# ----------------------------------------------------------------------------- eval


def task_list(spec: str) -> list[str]:
    """``--task`` value -> task names/paths: a comma list; ``all``/``study``/``offline`` groups."""
    from headlens.tasks import task_names

    out: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in ("all", "study", "offline"):
            group = task_names(part)
            if not group:
                _fail(f"--task {part}: no tasks in group {part!r} (headlens/tasks/{part}.yaml is not installed)")
            out.extend(group)
        else:
            out.append(part)
    if not out:
        _fail(f"--task is empty ({spec!r}); give a task name, a comma list, 'all', or a task file")
    return out


@app.command("eval")
def eval_cmd(
    model: str = ModelOpt,
    task: str = typer.Option(..., "--task", "-t", help="Task name, comma list, 'all' (the 14 study "
                             "tasks), 'offline', or a .jsonl/.yaml/.toml task file."),
    shots: int = typer.Option(0, "--shots", "-k", help="Demonstrations per query."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N queries of the split."),
    split: Optional[str] = typer.Option(None, "--split", help="Default: the task's eval split."),
    seed: int = typer.Option(0, "--seed", help="Seed of the demonstration draw."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local data: <dir>/<task>/<split>"
                                            ".jsonl|parquet, or a datasets cache folder."),
    batch_size: int = typer.Option(16, "--batch-size", help="Rows (choices) per forward pass."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """k-shot accuracy on one or more tasks (JSON: an object for one task, a list for several)."""
    check_format(fmt)
    from headlens.prompts import check
    from headlens.scoring import evaluate
    from headlens.tasks import get_task

    names = task_list(task)
    tasks = [get_task(n) for n in names]
    for t in tasks:  # bad names, data and shot counts fail before the model loads
        check(t, shots, split=split, data_dir=data_dir)
    bridge = load(model, device, dtype)
    results = []
    for t in tasks:
        res = evaluate(bridge, t, shots, limit=limit, seed=seed, split=split, data_dir=data_dir,
                       batch_size=batch_size, progress=fmt == "text" and sys.stderr.isatty())
        out = {"model": model, **{k: v for k, v in res.to_dict().items() if k != "model"}}
        results.append(out)
        if fmt == "text":
            m = res.metrics
            typer.echo(f"{t.name:<16} {shots}-shot  n={m['n']:<5} acc={m['acc']:.4f}  "
                       f"acc_norm={m['acc_norm']:.4f}  truncated={m['truncated']}  skipped={m['skipped']}")
    if fmt == "json":
        print_json(results[0] if len(results) == 1 else results)


@app.command("tasks")
def tasks_cmd(group: Optional[str] = typer.Option(None, "--group", help="study (alias all) or offline."),
              fmt: str = FormatOpt) -> None:
    """List registered tasks: name, group, metric, train and eval splits, data source."""
    check_format(fmt)
    from headlens.tasks import get_task, task_names

    rows = []
    for name in task_names(group):
        t = get_task(name)
        src = t.source.get("path") or t.source.get("function") or ""
        rows.append({"task": name, "group": t.group, "version": t.version, "metric": t.metric,
                     "train_split": t.train_split, "eval_split": t.eval_split,
                     "source": f"{src}{'/' + t.source['name'] if t.source.get('name') else ''}"})
    if fmt == "json":
        print_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['task']:<16} {r['group']:<8} {r['metric']:<10} {r['train_split']:>6} -> "
                   f"{r['eval_split']:<11} {r['source']}")


# ----------------------------------------------------------------------------- importance


def shot_list(spec: str) -> list[int]:
    """``--shots 0,1,5`` -> [0, 1, 5]."""
    try:
        out = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        _fail(f"--shots must be integers separated by commas, got {spec!r}")
    if not out or any(k < 0 for k in out):
        _fail(f"--shots must be non-negative integers, got {spec!r}")
    return out


@app.command("importance")
def importance_cmd(
    model: str = ModelOpt,
    task: str = typer.Option(..., "--task", "-t", help="Task name, comma list, 'all', 'offline', or a task file."),
    shots: str = typer.Option("0", "--shots", "-k", help="Demonstrations per query; a comma list such as 0,1,5."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Queries per task (default: the task's importance_limit)."),
    variant: str = typer.Option("bansal", "--variant", help="bansal (|.| per token) or michel (|.| per example)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the demonstration draw."),
    split: Optional[str] = typer.Option(None, "--split", help="Default: the task's importance split (train)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local data folder (see headlens eval)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write score JSONs and heatmaps here."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even if cached."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """Head and FFN importance by gradient gates (JSON: heads, ffn and the run's metadata)."""
    check_format(fmt)
    from headlens.cache import ResultCache
    from headlens.importance import VARIANTS, aggregate, task_importance
    from headlens.prompts import check
    from headlens.tasks import get_task

    if variant not in VARIANTS:
        _fail(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    ks = shot_list(shots)
    tasks = [get_task(n) for n in task_list(task)]
    for t in tasks:
        for k in ks:
            check(t, k, split=split or t.importance_split, data_dir=data_dir)
    bridge = load(model, device, dtype)
    cache = ResultCache(enabled=not no_cache)
    from tqdm.auto import tqdm

    results = []
    jobs = [(t, k) for t in tasks for k in ks]
    for t, k in tqdm(jobs, desc="tasks x shots", disable=len(jobs) == 1 or fmt == "json"):
        imp = task_importance(bridge, t, k, limit=limit, seed=seed, variant=variant, split=split,
                              data_dir=data_dir, batch_size=batch_size, cache=cache,
                              progress=fmt == "text")
        results.append(imp)
        if fmt == "text":
            top = ", ".join(f"L{l}H{h}={v:.3g}" for l, h, v in imp.heads.top(5))
            ffn = ", ".join(f"L{l}={v:.3g}" for l, v in imp.ffn.top(3))
            typer.echo(f"{t.name:<16} {k}-shot  n={imp.heads.meta['n_examples']:<5} top heads: {top}  top FFNs: {ffn}")
    if out is not None:
        from headlens.plots.common import save_figure
        from headlens.plots.importance import importance_heatmaps

        for imp in results:
            imp.heads.save(out / "importance")
            imp.ffn.save(out / "importance")
        heads = [r.heads for r in results]
        if len(heads) > 1:
            aggregate(heads).save(out / "importance")
        save_figure(importance_heatmaps(heads), out, "importance-heads", section="Task importance",
                    caption=f"Head importance ({variant}: gradient of the gold-continuation loss with "
                            f"respect to per-token head gates) of {model}; one map per task and shot "
                            f"count (dropdown), each scaled to its maximum; seed {seed}.")
        if fmt == "text":
            typer.echo(f"wrote {out}")
    if fmt == "json":
        objs = [{"model": model, "task": r.heads.meta["task"], "shots": r.heads.meta["shots"],
                 "variant": variant, "n_layers": r.heads.n_layers, "n_heads": r.heads.n_heads,
                 "heads": r.heads.values.tolist(), "ffn": r.ffn.values.tolist(),
                 "meta": r.heads.meta} for r in results]
        print_json(objs[0] if len(objs) == 1 else objs)


# ----------------------------------------------------------------------------- prune


def resolve_ranking(bridge, source: str, task, shots: int, what: str, *, limit, seed, variant,
                    data_dir, cache):
    """--ranking SOURCE -> Scores: self | TASK[:SHOTS] | aggregate | path to a saved Scores JSON."""
    from headlens.importance import aggregate, task_importance
    from headlens.results import Scores
    from headlens.tasks import get_task, task_names

    def imp(t, k):
        r = task_importance(bridge, t, k, limit=limit, seed=seed, variant=variant,
                            data_dir=data_dir, cache=cache, progress=False)
        return r.heads if what == "heads" else r.ffn

    if source.endswith(".json"):
        return Scores.load(source)
    if source == "oracle":  # the reference's FFN oracle: accuracy drop when one FFN is removed
        if what != "ffn":
            _fail("--ranking oracle ranks FFN blocks; use it with --what ffn")
        from headlens.importance import ffn_oracle
        from headlens.pruning import TaskEvaluator

        ev = TaskEvaluator(bridge, task, shots, split=task.importance_split, limit=limit, seed=seed,
                           data_dir=data_dir)
        return ffn_oracle(bridge, ev)
    if source == "self":
        return imp(task, shots)
    if source == "aggregate":
        group = task.group if task.group in ("study", "offline") else None
        names = task_names(group) if group else [task.name]
        return aggregate([imp(get_task(n), shots) for n in names])
    name, _, k = source.partition(":")
    try:
        k_shots = int(k) if k else shots
    except ValueError:
        _fail(f"--ranking {source!r}: expected TASK or TASK:SHOTS with an integer shot count")
    return imp(get_task(name), k_shots)


@app.command("prune")
def prune_cmd(
    model: str = ModelOpt,
    task: str = typer.Option(..., "--task", "-t", help="Task to evaluate after pruning."),
    shots: int = typer.Option(0, "--shots", "-k"),
    ranking: str = typer.Option("self", "--ranking", help="self (this task's importance), TASK or "
                                "TASK:SHOTS (cross-task transfer), aggregate, oracle (FFNs: accuracy "
                                "drop when removed, on the train split), or a saved scores .json."),
    what: str = typer.Option("heads", "--what", help="heads, ffn, or grid (heads% x FFN%)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Queries evaluated per point."),
    importance_limit: Optional[int] = typer.Option(None, "--importance-limit", help="Queries for the ranking."),
    variant: str = typer.Option("bansal", "--variant"),
    random_seeds: int = typer.Option(3, "--random-seeds", help="Random rankings for the baseline band (>= 3)."),
    seed: int = typer.Option(0, "--seed"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the curve (CSV) and its figure here."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """Accuracy vs % of heads (or FFNs) removed by a ranking, with a random-ranking band."""
    check_format(fmt)
    if what not in ("heads", "ffn", "grid"):
        _fail(f"--what must be heads, ffn or grid, got {what!r}")
    from headlens.cache import ResultCache
    from headlens.prompts import check
    from headlens.pruning import TaskEvaluator, cached_curve, pruning_grid
    from headlens.tasks import get_task

    t = get_task(task)
    check(t, shots, data_dir=data_dir)
    bridge = load(model, device, dtype)
    cache = ResultCache()
    evaluator = TaskEvaluator(bridge, t, shots, limit=limit, seed=seed, data_dir=data_dir)
    kw = dict(limit=importance_limit, seed=seed, variant=variant, data_dir=data_dir, cache=cache)
    label = f"{t.name} {shots}-shot, ranking {ranking}"
    if what == "grid":
        heads = resolve_ranking(bridge, ranking, t, shots, "heads", **kw)
        ffn = resolve_ranking(bridge, ranking, t, shots, "ffn", **kw)
        grid = pruning_grid(heads, ffn, evaluator, progress=fmt == "text")
        if out is not None:
            from headlens.plots.common import save_figure
            from headlens.plots.importance import pruning_grid_heatmap

            out.mkdir(parents=True, exist_ok=True)
            grid.to_csv(out / f"grid-{t.name}-{shots}shot.csv")
            save_figure(pruning_grid_heatmap(grid, title=f"Accuracy, {label}"), out,
                        f"grid-{t.name}-{shots}shot", section="Pruning",
                        caption=f"{label}: accuracy with the lowest-ranked p% of heads and q% of FFNs removed together (gates at 0).")
        if fmt == "json":
            print_json({"model": model, "task": t.name, "shots": shots, "ranking": ranking,
                        "heads_percent": list(grid.index), "ffn_percent": list(grid.columns),
                        "grid": grid.values.tolist()})
        else:
            typer.echo(grid.round(3).to_string())
        return
    rank_scores = resolve_ranking(bridge, ranking, t, shots, what, **kw)
    curve = cached_curve(evaluator, rank_scores, what=what, random_seeds=tuple(range(random_seeds)),
                         cache=cache, progress=fmt == "text")
    if out is not None:
        from headlens.plots.common import save_figure
        from headlens.plots.importance import pruning_curves

        out.mkdir(parents=True, exist_ok=True)
        curve.to_csv(out / f"prune-{what}-{t.name}-{shots}shot.csv", index=False)
        save_figure(pruning_curves({label: curve}, title=f"Accuracy vs % {what} removed"), out,
                    f"prune-{what}-{t.name}-{shots}shot", section="Pruning",
                    caption=f"{label}: accuracy after removing the lowest-ranked p% of {what} (gates at 0); "
                            f"dotted: mean of {random_seeds} random rankings, band +/- 1 sd.")
    if fmt == "json":
        print_json({"model": model, "task": t.name, "shots": shots, "ranking": ranking, "what": what,
                    "curve": curve[["percent", "acc", "acc_random_mean", "acc_random_std"]].to_dict("records")})
    else:
        typer.echo(curve.round(4).to_string(index=False))


# ----------------------------------------------------------------------------- overlap


@app.command("overlap")
def overlap_cmd(
    results: list[str] = typer.Argument(..., help="Saved Scores JSON files or folders of them."),
    top: Optional[int] = typer.Option(None, "--top", "-k",
                                      help="Heads in each top-k set (default: 10% of the heads)."),
    method: str = typer.Option("spearman", "--method", help="spearman or kendall."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the HTML figures."),
    fmt: str = FormatOpt,
) -> None:
    """Compare saved head scores: rank agreement, top-k Jaccard and hypergeometric p-values."""
    from headlens.errors import HeadlensError
    from headlens.overlap import overlap_matrix, random_baseline, rank_agreement
    from headlens.results import Scores, load_all

    check_format(fmt)
    scores = []
    for item in results:
        path = Path(item)
        if path.is_dir():
            found = [s for s in load_all(path) if s.per_head]
            if not found:
                raise HeadlensError(f"overlap: no per-head score files in folder {path}")
            scores.extend(found)
        elif path.is_file():
            scores.append(Scores.load(path))
        else:
            raise HeadlensError(f"overlap: {path} is neither a score file nor a folder")
    if len(scores) < 2:
        raise HeadlensError(f"overlap: needs at least 2 score sets, got {len(scores)}; pass more files")
    n = scores[0].values.size
    k = max(1, round(0.1 * n)) if top is None else top
    agreement = rank_agreement(scores, method)  # type: ignore[arg-type]
    sets = overlap_matrix(scores, k=k)
    baseline = random_baseline(n, method, seed=0) if n >= 3 else None  # type: ignore[arg-type]
    if out is not None:
        _overlap_figures(scores, agreement, sets, baseline, out)
    if fmt == "json":
        print_json({"labels": list(agreement.labels), "n_heads": n, "method": method,
                    method: agreement.matrix, f"{method}_p_values": agreement.p_values,
                    "random_baseline": None if baseline is None else
                    {"mean": baseline.mean, "low": baseline.low, "high": baseline.high},
                    "k": k, "jaccard": sets.jaccard, "intersection": sets.intersection,
                    "expected_intersection": k * k / n, "p_values": sets.p_values,
                    "out": None if out is None else str(out)})
        return
    names = [f"[{i}] {lab}" for i, lab in enumerate(agreement.labels)]
    typer.echo("\n".join(names))
    head = "      " + "".join(f"{f'[{i}]':>8}" for i in range(len(names)))
    typer.echo(f"\n{method} rank agreement over {n} heads"
               + ("" if baseline is None else
                  f" (random orders: 95% in [{baseline.low:.2f}, {baseline.high:.2f}])"))
    typer.echo(head)
    for i, row in enumerate(agreement.matrix):
        typer.echo(f"{f'[{i}]':>6}" + "".join(f"{v:8.2f}" for v in row))
    typer.echo(f"\ntop-{k} Jaccard (hypergeometric p; random intersection {k * k / n:.2f} heads)")
    typer.echo(head)
    for i, (jr, pr) in enumerate(zip(sets.jaccard, sets.p_values)):
        typer.echo(f"{f'[{i}]':>6}" + "".join(f"{j:5.2f}{'*' if p < 0.05 else ' ':<3}"
                                             for j, p in zip(jr, pr)))
    typer.echo("* p < 0.05")
    if out is not None:
        typer.echo(f"figures: {out}")


def _overlap_figures(scores, agreement, sets, baseline, out: Path) -> None:
    from headlens.overlap import by_shot, by_task, overlap_sweep, score_label
    from headlens.plots.common import write_html
    from headlens.plots.overlap import (agreement_dropdown, agreement_heatmap,
                                        overlap_matrix_heatmap, overlap_vs_k)

    write_html(agreement_heatmap(agreement, baseline=baseline), out / "overlap-agreement.html")
    write_html(overlap_matrix_heatmap(sets), out / "overlap-jaccard.html")
    tasks = [s for s in scores if s.meta.get("task") is not None and s.meta.get("shots") is not None]
    if len(tasks) >= 2:
        write_html(agreement_dropdown(by_shot(tasks, agreement.method), key_name="shots",
                                      title=f"{agreement.method}: tasks x tasks"),
                   out / "overlap-by-shot.html")
        write_html(agreement_dropdown(by_task(tasks, agreement.method), key_name="task",
                                      title=f"{agreement.method}: shots x shots"),
                   out / "overlap-by-task.html")
    first = scores[0]
    sweeps = {f"{score_label(first)} vs {score_label(s)}": overlap_sweep(first, s) for s in scores[1:8]}
    write_html(overlap_vs_k(sweeps), out / "overlap-vs-k.html")
    targets = [s for s in scores if s.metric in ("prefix_matching", "copying") and (s.values > 0).any()]
    rankings = [s for s in scores if s.metric not in ("prefix_matching", "copying")][:8]
    if targets and rankings:
        from headlens.overlap import retained_curve
        from headlens.plots.overlap import retained_figure

        for t in targets:
            curves = {score_label(r): retained_curve(r, t) for r in rankings}
            write_html(retained_figure(curves, title=f"{score_label(t)} retained as heads are pruned"),
                       out / f"overlap-retained-{t.file_stem()}.html")



# ----------------------------------------------------------------------------- layers

layers_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Layer pruning by angular distance (Gromov et al. 2024) and LoRA healing.")
app.add_typer(layers_app, name="layers")
TextFileOpt = typer.Option(None, "--text-file", help="UTF-8 text file, one sample per non-empty line "
                           "(default: the embedded corpus).")
DatasetOpt = typer.Option(None, "--dataset", help="datasets split as name[:config]:split[:column], "
                          "e.g. allenai/c4:en:validation (needs network or a local cache).")


def _layer_texts(text_file: Optional[Path], dataset: Optional[str], n: Optional[int], seed: int) -> list:
    from headlens.texts import DatasetTexts, load_texts

    if text_file is not None and dataset is not None:
        _fail("give --text-file or --dataset, not both")
    source = text_file if text_file is not None else (DatasetTexts.parse(dataset) if dataset else None)
    return load_texts(source, n, seed=seed)


@layers_app.command("distances")
def layers_distances(
    model: str = ModelOpt,
    text_file: Optional[Path] = TextFileOpt,
    dataset: Optional[str] = DatasetOpt,
    n_texts: int = typer.Option(64, "--n-texts", help="Texts to average over (the first N)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_len: Optional[int] = typer.Option(None, "--max-len", help="Tokens per text (start kept); default the context."),
    seed: int = typer.Option(0, "--seed", help="Seed of the embedded corpus."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the row-normalised heatmap here."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """Angular distance d(l, n) between the residual streams entering layers l and l+n; best block per n."""
    check_format(fmt)
    from headlens.layers import layer_distances

    texts = _layer_texts(text_file, dataset, n_texts, seed)
    dist = layer_distances(load(model, device, dtype), texts, batch_size=batch_size, max_len=max_len)
    if html is not None:
        from headlens.plots.common import write_html
        from headlens.plots.layers import distance_heatmap

        write_html(distance_heatmap(dist), html)
    if fmt == "json":
        print_json(dist.to_dict())
        return
    typer.echo(f"{dist.model}: {dist.n_layers} layers, {dist.n_samples} texts, "
               f"{dist.n_truncated} truncated to {dist.max_len} tokens")
    typer.echo("n\tbest_start\tremoved_layers\tdistance")
    for n in range(1, dist.n_layers + 1):
        start, d = dist.best(n)
        typer.echo(f"{n}\t{start}\t{start}-{start + n - 1}\t{d:.4f}")


@layers_app.command("prune")
def layers_prune(
    model: str = ModelOpt,
    n: int = typer.Option(..., "--n", help="Number of consecutive layers to remove."),
    method: str = typer.Option("similarity", "--method", help="similarity (block l*(n)) or deepest "
                               "(layers L-1-n .. L-2)."),
    out: Path = typer.Option(..., "--out", help="Folder for the pruned Hugging Face checkpoint."),
    text_file: Optional[Path] = TextFileOpt,
    dataset: Optional[str] = DatasetOpt,
    n_texts: int = typer.Option(64, "--n-texts"),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_len: Optional[int] = typer.Option(None, "--max-len"),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """Remove a block of n layers (most similar block, or the deepest-but-last) and save the model."""
    check_format(fmt)
    from headlens.errors import HeadlensError, closest
    from headlens.layers import deepest_block, layer_distances, remove_layers, save_model

    if method not in ("similarity", "deepest"):
        raise HeadlensError(f"--method {method!r} is unknown; {closest(method, ['similarity', 'deepest'])}")
    bridge = load(model, device, dtype)
    L = bridge.cfg.n_layers
    distance = None
    if method == "deepest":
        start = deepest_block(L, n)
    else:
        deepest_block(L, n)  # same range check before the distance pass
        texts = _layer_texts(text_file, dataset, n_texts, seed)
        start, distance = layer_distances(bridge, texts, batch_size=batch_size, max_len=max_len).best(n)
    pruned = remove_layers(bridge, start, n)
    save_model(pruned, out)
    info = {"model": model, "method": method, "n_layers_before": L, "n_layers_after": L - n,
            "removed_layers": list(range(start, start + n)), "distance": distance, "out": str(out)}
    if fmt == "json":
        print_json(info)
        return
    typer.echo(f"removed layers {start}..{start + n - 1} of {L} ({method}"
               + (f", d={distance:.4f}" if distance is not None else "") + f"); saved to {out}")


@layers_app.command("heal")
def layers_heal(
    model: str = ModelOpt,
    out: Path = typer.Option(..., "--out", help="Folder for the healed checkpoint."),
    text_file: Optional[Path] = TextFileOpt,
    dataset: Optional[str] = DatasetOpt,
    n_texts: Optional[int] = typer.Option(None, "--n-texts", help="Texts to use (default: all of the "
                                          "file, 512 of the embedded corpus)."),
    steps: int = typer.Option(100, "--steps"),
    rank: int = typer.Option(8, "--rank", help="LoRA rank r (alpha = r)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (cosine schedule, 10% warm-up)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    max_len: int = typer.Option(128, "--max-len"),
    heldout: float = typer.Option(0.2, "--heldout", help="Fraction of texts held out for the loss."),
    seed: int = typer.Option(0, "--seed"),
    quantize: str = typer.Option("auto", "--quantize", help="auto (4-bit base with CUDA + bitsandbytes), never, always."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """LoRA-heal a (pruned) model on text; print held-out loss before and after; save it."""
    check_format(fmt)
    from headlens.errors import HeadlensError, closest
    from headlens.healing import heal
    from headlens.layers import save_model

    if quantize not in ("auto", "never", "always"):
        raise HeadlensError(f"--quantize {quantize!r} is unknown; {closest(quantize, ['auto', 'never', 'always'])}")
    count = n_texts if n_texts is not None else (None if text_file or dataset else 512)
    texts = _layer_texts(text_file, dataset, count, seed)
    result = heal(load(model, device, dtype), texts, heldout_fraction=heldout, steps=steps, rank=rank,
                  lr=lr, batch_size=batch_size, max_len=max_len, seed=seed, quantize=quantize)  # type: ignore[arg-type]
    save_model(result.model, out)
    if fmt == "json":
        print_json({**result.summary(), "out": str(out)})
        return
    typer.echo(f"held-out loss {result.heldout_loss_before:.4f} -> {result.heldout_loss_after:.4f} "
               f"({result.n_heldout} texts); train loss {result.train_loss_before:.4f} -> "
               f"{result.train_loss_after:.4f} ({result.n_train} texts, {steps} steps, rank {rank}"
               f"{', 4-bit base' if result.quantized else ''}, {result.seconds:.1f}s); saved to {out}")



# ----------------------------------------------------------------------------- demo


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("headlens-out"), "--out", "-o", help="Folder for figures, results and report.html."),
    model: str = ModelOpt,
    tasks: str = typer.Option("offline", "--tasks", help="Task group or comma list (default: the 14 offline tasks)."),
    importance_limit: int = typer.Option(48, "--importance-limit", help="Train queries per task for importance."),
    eval_limit: int = typer.Option(64, "--eval-limit", help="Test queries per task for accuracy."),
    prune_limit: int = typer.Option(32, "--prune-limit", help="Test queries per task for each pruning point."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """The whole study on the shipped model, offline: every figure and one HTML report."""
    from headlens.demo import DemoConfig, run_demo

    cfg = DemoConfig(model=model, tasks=tasks, importance_limit=importance_limit, eval_limit=eval_limit,
                     prune_limit=prune_limit, seed=seed, device=device)
    report = run_demo(out, cfg, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"report: {report.resolve()}")


# ----------------------------------------------------------------------------- report


@app.command("report")
def report_cmd(
    folder: Path = typer.Argument(..., help="A results folder written with --out (or by headlens demo)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default: FOLDER/report.html)."),
    title: str = typer.Option("headlens report", "--title"),
) -> None:
    """Assemble every figure saved in FOLDER into one self-contained HTML page."""
    from headlens.report import build_report

    path = build_report(folder, output, title=title)
    typer.echo(str(path))


# ----------------------------------------------------------------------------- sweep


@app.command("sweep")
def sweep_cmd(
    file: Path = typer.Argument(..., help="Sweep YAML file: models, tasks, shots, seeds, analyses (see data/sweeps/)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Local worker processes (each keeps one model loaded)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run one Ray task per job: auto, "
                                              "HOST:PORT, or local (needs pip install 'headlens[ray]')."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs and which are cached; run nothing."),
    fmt: str = FormatOpt,
) -> None:
    """Run a sweep file's jobs (models x tasks x shots x analyses), skipping cached ones; resumable."""
    check_format(fmt)
    from headlens.sweep import load_sweep
    from headlens.sweep_exec import plan, run_sweep

    spec = load_sweep(file)
    if dry_run:
        jobs = plan(spec)
        if fmt == "json":
            print_json({"sweep": spec.name, "n_jobs": len(jobs), "n_cached": sum(c for _, c in jobs),
                        "output": spec.output,
                        "jobs": [{"key": j.key, "analysis": j.analysis, "model": j.model.name, "task": j.task_name,
                                  "shots": j.shots, "variant": j.variant, "seed": j.seed, "limit": j.limit,
                                  "cached": c, "command": j.command} for j, c in jobs]})
            return
        for j, c in jobs:
            typer.echo(f"{'cached' if c else 'to run':<7} {j.key}  {j.label}")
        n = sum(c for _, c in jobs)
        typer.echo(f"{len(jobs)} jobs: {n} cached, {len(jobs) - n} to run; output {spec.output}")
        return
    live = fmt == "text" and sys.stderr.isatty()

    def log(record) -> None:
        if record.status in ("done", "failed") and fmt == "text" and not live:
            note = f" ({record.seconds:.1f}s)" if record.status == "done" else f": {record.error}"
            typer.echo(f"{record.status:<6} {record.job.label}{note}", err=True)

    report = run_sweep(spec, workers=workers, ray_address=ray_address, progress=live, on_event=log)
    if fmt == "json":
        print_json(report.to_dict())
    else:
        typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@app.command("models")
def models_cmd() -> None:
    """List the models shipped in data/models/."""
    from headlens.loading import shipped_models

    for name, path in shipped_models().items():
        typer.echo(f"{name}\t{path}")


def main() -> None:
    """Entry point: run the app, turning HeadlensError into one line and exit status 2."""
    from headlens.errors import HeadlensError

    try:
        code = app(standalone_mode=False)  # typer.Exit comes back as a return code here
        if isinstance(code, int) and code:
            sys.exit(code)
    except HeadlensError as err:
        typer.echo(f"headlens: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("headlens: interrupted; finished work is cached, run the same command to resume",
                   err=True)
        sys.exit(130)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except Exception as err:
        # usage errors from typer's bundled click: print the short usage message, no traceback
        if hasattr(err, "show") and hasattr(err, "exit_code"):
            err.show()
            sys.exit(err.exit_code)
        if type(err).__name__ == "Abort":
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
