"""`headlens prune`: accuracy vs % of heads or FFNs removed by a ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from headlens.cli.common import (
    DeviceOpt,
    DtypeOpt,
    FormatOpt,
    ModelOpt,
    check_format,
    check_out,
    fail,
    load,
    print_json,
)


def prune_cmd(
    model: str = ModelOpt,
    task: str = typer.Option(..., "--task", "-t", help="Task to evaluate after pruning."),
    shots: int = typer.Option(0, "--shots", "-k"),
    ranking: str = typer.Option("self", "--ranking", help="self (this task's importance), TASK or "
                                "TASK:SHOTS (cross-task transfer), aggregate, oracle (FFNs: accuracy "
                                "drop when each is removed alone, on the importance queries; equal "
                                "drops by this task's gradient ranking), or a saved scores .json."),
    what: str = typer.Option("heads", "--what", help="heads, ffn, or grid (heads% x FFN%)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Queries evaluated per point."),
    importance_limit: Optional[int] = typer.Option(None, "--importance-limit", help="Queries for the ranking."),
    variant: str = typer.Option("bansal", "--variant"),
    random_draws: int = typer.Option(50, "--random-draws", "--random-seeds",
                                     help="Random subsets per point for the baseline band (>= 1); every "
                                          "subset is evaluated instead when there are at most 2,000."),
    seed: int = typer.Option(0, "--seed"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the curve (CSV) and its figure here."),
    allow_other_model: bool = typer.Option(False, "--allow-other-model", help="Accept a --ranking file "
                                           "computed on another model (refused by default)."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """Accuracy vs % of heads (or FFNs) removed by a ranking, against removing as many at random."""
    check_format(fmt)
    check_out(out)
    if what not in ("heads", "ffn", "grid"):
        fail(f"--what must be heads, ffn or grid, got {what!r}")
    if random_draws < 1:
        fail(f"--random-draws (alias --random-seeds) must be >= 1 (random subsets per point), "
             f"got {random_draws}; the default is 50")
    from headlens.analyses.importance import ImportanceOptions
    from headlens.analyses.pruning import (
        EXACT_LIMIT,
        CurveOptions,
        TaskEvaluator,
        cached_curve,
        pruning_grid,
        resolve_ranking,
    )
    from headlens.results.cache import ResultCache
    from headlens.tasks import get_task
    from headlens.tasks.prompts import check, check_limit

    check_limit(limit, "--limit")
    check_limit(importance_limit, "--importance-limit")
    ranking_options = ImportanceOptions(variant=variant, limit=importance_limit, seed=seed)  # type: ignore[arg-type]
    curve_options = None if what == "grid" else CurveOptions(what=what, random_draws=random_draws)  # type: ignore[arg-type]
    t = get_task(task)
    check(t, shots, data_dir=data_dir)
    bridge = load(model, device, dtype)
    cache = ResultCache()
    evaluator = TaskEvaluator(bridge, t, shots, limit=limit, seed=seed, data_dir=data_dir)
    kw = dict(options=ranking_options, data_dir=data_dir, cache=cache, allow_other_model=allow_other_model)
    label = f"{t.name} {shots}-shot, ranking {ranking}"
    if what == "grid":
        heads = resolve_ranking(bridge, ranking, t, shots, "heads", **kw)
        ffn = resolve_ranking(bridge, ranking, t, shots, "ffn", **kw)
        grid = pruning_grid(heads, ffn, evaluator, progress=fmt == "text")
        if out is not None:
            from headlens.report.figures import save_figure
            from headlens.report.importance import pruning_grid_heatmap

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
    curve = cached_curve(evaluator, rank_scores, options=curve_options, cache=cache, progress=fmt == "text")
    if out is not None:
        from headlens.report.figures import save_figure
        from headlens.report.importance import pruning_curves

        out.mkdir(parents=True, exist_ok=True)
        curve.to_csv(out / f"prune-{what}-{t.name}-{shots}shot.csv", index=False)
        save_figure(pruning_curves({label: curve}, title=f"Accuracy vs % {what} removed"), out,
                    f"prune-{what}-{t.name}-{shots}shot", section="Pruning",
                    caption=f"{label}: accuracy after removing the lowest-ranked p% of {what} (gates at 0); "
                            f"dotted: mean accuracy with the same number removed at random (every "
                            f"subset where there are at most {EXACT_LIMIT:,}, else {random_draws} seeded "
                            f"draws per point); band: 2.5-97.5 percentiles of those accuracies.")
    if fmt == "json":
        print_json({"model": model, "task": t.name, "shots": shots, "ranking": ranking, "what": what,
                    "curve": curve[["percent", "acc", "acc_random_mean", "acc_random_std", "acc_random_low",
                                    "acc_random_high", "n_random", "random_exact", "n_removed"]].to_dict("records")})
    else:
        typer.echo(curve.round(4).to_string(index=False))
