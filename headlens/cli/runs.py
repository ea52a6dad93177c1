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
    tasks: str = typer.Option("offline", "--tasks", help="Task group or comma list (default: the 14 offline tasks)."),
    importance_limit: int = typer.Option(48, "--importance-limit", help="Train queries per task for importance."),
    eval_limit: int = typer.Option(64, "--eval-limit", help="Test queries per task for accuracy."),
    prune_limit: int = typer.Option(32, "--prune-limit", help="Test queries per task for each pruning point."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = DeviceOpt,
) -> None:
    """The whole study on the shipped model, offline: every figure and one HTML report."""
    check_out(out)
    from headlens.runs.demo import DemoConfig, run_demo

    cfg = DemoConfig(model=model, tasks=tasks, importance_limit=importance_limit, eval_limit=eval_limit,
                     prune_limit=prune_limit, seed=seed, device=device)
    report = run_demo(out, cfg, log=lambda m: typer.echo(m, err=True))
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
