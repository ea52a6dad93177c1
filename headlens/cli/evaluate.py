"""`headlens eval` and `headlens tasks`: k-shot accuracy and the task registry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from headlens.cli.common import (
    DeviceOpt,
    DtypeOpt,
    FormatOpt,
    ModelOpt,
    check_format,
    load,
    print_json,
    task_list,
)


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
    from headlens.analyses.scoring import evaluate
    from headlens.tasks import get_task
    from headlens.tasks.prompts import check

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
