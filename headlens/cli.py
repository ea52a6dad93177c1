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


# ----------------------------------------------------------------------------- prune


# ----------------------------------------------------------------------------- overlap


# ----------------------------------------------------------------------------- layers


# ----------------------------------------------------------------------------- demo


# ----------------------------------------------------------------------------- report


# ----------------------------------------------------------------------------- sweep


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
        app(standalone_mode=False)
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
