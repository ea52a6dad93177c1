"""`headlens eval` and `headlens tasks`: k-shot accuracy and the task registry."""

from __future__ import annotations

import json
import os
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
    fail,
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
    log_samples: Optional[Path] = typer.Option(None, "--log-samples", help="Write every scored query to this "
                                               "JSONL file: task, doc_id, shots, the exact context, choices, "
                                               "gold, per-choice log-probabilities, pred. An existing file is "
                                               "kept unless --force."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --log-samples file."),
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
    fmt: str = FormatOpt,
) -> None:
    """k-shot accuracy on one or more tasks (JSON: an object for one task, a list for several)."""
    check_format(fmt)
    from headlens.analyses.scoring import evaluate
    from headlens.tasks import get_task
    from headlens.tasks.prompts import check, check_limit

    check_limit(limit, "--limit")
    if log_samples is not None:
        check_new_file(log_samples, "--log-samples", force)
    names = task_list(task)
    tasks = [get_task(n) for n in names]
    for t in tasks:  # bad names, data and shot counts fail before the model loads
        check(t, shots, split=split, data_dir=data_dir)
    bridge = load(model, device, dtype)
    results = []
    for n_done, t in enumerate(tasks):
        res = evaluate(bridge, t, shots, limit=limit, seed=seed, split=split, data_dir=data_dir,
                       batch_size=batch_size, progress=fmt == "text" and sys.stderr.isatty())
        if log_samples is not None:  # each task's samples as soon as it is done
            write_samples(log_samples, res.samples(), append=n_done > 0)
        out = {"model": model, **{k: v for k, v in res.to_dict().items() if k != "model"}}
        results.append(out)
        if fmt == "text":
            m = res.metrics
            typer.echo(f"{t.name:<16} {shots}-shot  n={m['n']:<5} acc={m['acc']:.4f}  "
                       f"acc_norm={m['acc_norm']:.4f}  truncated={m['truncated']}  skipped={m['skipped']}")
    if fmt == "json":
        print_json(results[0] if len(results) == 1 else results)
    elif log_samples is not None:
        typer.echo(f"wrote {sum(r['n'] for r in results)} samples to {log_samples}")


def check_new_file(path: Path, option: str, force: bool) -> None:
    """Fail now (before any model loads) unless ``path`` can be written: an existing file is
    kept unless ``force``; a folder is never replaced; the nearest existing parent must be a
    writable folder (missing folders are created when writing)."""
    if path.is_dir():
        fail(f"{option} {path} is a folder; give a file name, e.g. {path / 'samples.jsonl'}")
    if path.exists() and not force:
        fail(f"{option} {path} exists; pass --force to overwrite it, or give another file")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{option} {path}: cannot write in {parent}; give a file in a writable folder")


def write_samples(path: Path, samples: list[dict], *, append: bool) -> None:
    """JSON lines, one per sample (the first task truncates, the next ones append)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as fh:
        for sample in samples:
            fh.write(json.dumps(sample, ensure_ascii=False) + "\n")


def tasks_cmd(group: Optional[str] = typer.Option(None, "--group", help="study (alias all) or offline."),
              fmt: str = FormatOpt) -> None:
    """List registered tasks: name, group, metric, train and eval splits, data source (hub id/config,
    revision and data files, or generator)."""
    check_format(fmt)
    from headlens.tasks import get_task, task_names

    from headlens.tasks.sources import describe

    rows = []
    for name in task_names(group):
        t = get_task(name)
        rows.append({"task": name, "group": t.group, "version": t.version, "metric": t.metric,
                     "train_split": t.train_split, "eval_split": t.eval_split, "source": describe(t.source),
                     **{k: t.source[k] for k in ("revision", "data_files") if t.source.get(k) is not None}})
    if fmt == "json":
        print_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['task']:<16} {r['group']:<8} {r['metric']:<10} {r['train_split']:>6} -> "
                   f"{r['eval_split']:<11} {r['source']}")
