"""`headlens importance`: head and FFN importance by gradient gates."""

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
    shot_list,
    task_list,
)


def importance_cmd(
    model: str = ModelOpt,
    task: str = typer.Option(..., "--task", "-t", help="Task name, comma list, 'all', 'offline', or a task file."),
    shots: str = typer.Option("0", "--shots", "-k", help="Demonstrations per query; a comma list such as 0,1,5."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Queries per task (default: the task's importance_limit)."),
    variant: str = typer.Option("bansal", "--variant", help="bansal (|.| per token) or michel (|.| per example)."),
    normalize: str = typer.Option("mean", "--normalize",
                                  help="mean (default: summed gold-token loss; bansal / all tokens, michel / "
                                       "examples) or reference (the study code: per-example mean loss, layers "
                                       "before the last / (tokens - 1), the last / gold tokens; bansal only)."),
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
    check_out(out)
    from headlens.analyses.importance import TOKEN_NORMS, VARIANTS, ImportanceOptions, aggregate, task_importance
    from headlens.results.cache import ResultCache
    from headlens.tasks import get_task
    from headlens.tasks.prompts import check, check_limit

    check_limit(limit, "--limit")
    if variant not in VARIANTS:
        fail(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if normalize not in TOKEN_NORMS:
        fail(f"--normalize must be one of {', '.join(TOKEN_NORMS)}, got {normalize!r}")
    if normalize == "reference" and variant != "bansal":
        fail(f"--normalize reference replicates the reference's bansal scores; use it with "
             f"--variant bansal, not {variant!r}")
    options = ImportanceOptions(variant=variant, limit=limit, seed=seed, split=split,  # type: ignore[arg-type]
                                batch_size=batch_size, normalize=normalize)  # type: ignore[arg-type]
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
        imp = task_importance(bridge, t, k, options=options, data_dir=data_dir, cache=cache,
                              progress=fmt == "text")
        results.append(imp)
        if fmt == "text":
            top = ", ".join(f"L{l}H{h}={v:.3g}" for l, h, v in imp.heads.top(5))
            ffn = ", ".join(f"L{l}={v:.3g}" for l, v in imp.ffn.top(3))
            typer.echo(f"{t.name:<16} {k}-shot  n={imp.heads.meta['n_examples']:<5} top heads: {top}  top FFNs: {ffn}")
    if out is not None:
        from headlens.report.figures import save_figure
        from headlens.report.importance import importance_heatmaps

        folder = out / "importance"
        for imp in results:  # names carry seed and model: other runs into this folder do not overwrite
            imp.heads.save(folder / f"{imp.heads.run_stem()}.json")
            imp.ffn.save(folder / f"{imp.ffn.run_stem()}.json")
        heads = [r.heads for r in results]
        if len(heads) > 1:
            agg = aggregate(heads)
            agg = agg.with_values(agg.values, seed=seed)
            agg.save(folder / f"{agg.run_stem()}.json")
        save_figure(importance_heatmaps(heads), out, "importance-heads", section="Task importance",
                    caption=f"Head importance ({variant}: gradient of the gold-continuation loss with "
                            f"respect to per-token head gates; normalisation {normalize}) of {model}; one map "
                            f"per task and shot count (dropdown), each scaled to its maximum; seed {seed}.")
        if fmt == "text":
            typer.echo(f"wrote {out}")
    if fmt == "json":
        objs = [{"model": model, "task": r.heads.meta["task"], "shots": r.heads.meta["shots"],
                 "variant": variant, "normalize": normalize, "n_layers": r.heads.n_layers, "n_heads": r.heads.n_heads,
                 "heads": r.heads.values.tolist(), "ffn": r.ffn.values.tolist(),
                 "meta": r.heads.meta} for r in results]
        print_json(objs[0] if len(objs) == 1 else objs)
