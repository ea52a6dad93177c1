"""`headlens demo`, `headlens report`, `headlens sweep`: whole runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from headlens.cli.common import (
    DeviceOpt,
    FormatOpt,
    ModelOpt,
    check_format,
    check_out,
    print_json,
)


def demo_cmd(
    out: Path = typer.Option(Path("headlens-out"), "--out", "-o", help="Folder for figures, results and report.html."),
    model: str = ModelOpt,
    preset: str = typer.Option("auto", "--preset", help="auto (real for models >= 20M parameters, else tiny), "
                               "tiny (the shipped model's sizes) or real (sized for a 135M model on 2 CPU cores)."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Task group or comma list (default: the 14 offline tasks)."),
    importance_limit: Optional[int] = typer.Option(None, "--importance-limit", help="Train queries per task for importance."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="Test queries per task for accuracy."),
    prune_limit: Optional[int] = typer.Option(None, "--prune-limit", help="Test queries per task for each pruning point."),
    prune_tasks: Optional[str] = typer.Option(None, "--prune-tasks", help="Tasks evaluated at each pruning point "
                                              "(default: the preset's; tiny: all)."),
    random_draws: Optional[int] = typer.Option(None, "--random-draws", help="Random subsets per pruning point when "
                                               "there are more than 2,000 (default 50)."),
    induction_seeds: Optional[int] = typer.Option(None, "--induction-seeds"),
    heal_steps: Optional[int] = typer.Option(None, "--heal-steps", help="LoRA steps per healed block (0: no healing)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """The whole study on one model, offline by default: every figure and one HTML report (resumable)."""
    check_out(out)
    from headlens.runs.demo import resolve_config, run_demo

    overrides = dict(model=model, tasks=tasks, importance_limit=importance_limit, eval_limit=eval_limit,
                     prune_limit=prune_limit, prune_tasks=prune_tasks, random_draws=random_draws,
                     induction_seeds=induction_seeds, heal_steps=heal_steps, seed=seed, device=device)
    resolve_config(preset if preset != "auto" else "tiny", **overrides)  # bad values fail before loading
    report = run_demo(out, None, preset=preset, overrides=overrides, log=lambda m: typer.echo(m, err=True),
                      progress=sys.stderr.isatty())
    typer.echo(f"report: {report.resolve()}")


def report_cmd(
    folder: Path = typer.Argument(..., help="A results folder written with --out (or by headlens demo)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default: FOLDER/report.html)."),
    title: str = typer.Option("headlens report", "--title"),
) -> None:
    """Assemble every figure saved in FOLDER into one self-contained HTML page."""
    import warnings

    from headlens.report.html import build_report
    from headlens.results.outputs import check_out_file

    if output is not None or folder.is_dir():  # a missing FOLDER is reported by build_report
        check_out_file(output if output is not None else folder / "report.html", option="-o")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = build_report(folder, output, title=title)
    for w in caught:  # e.g. a figure file that could not be read
        typer.echo(f"headlens: warning: {w.message}", err=True)
    typer.echo(str(path))




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
    from headlens.runs.execute import plan, run_sweep
    from headlens.runs.sweep import load_sweep

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
