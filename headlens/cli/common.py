"""Shared pieces of the commands: common options, one-line errors, JSON output, list parsing."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

MODEL_HELP = "Shipped model name, local checkpoint folder, or hub id."
ModelOpt = typer.Option("tiny-icl", "--model", "-m", help=MODEL_HELP)
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16.")
FormatOpt = typer.Option("text", "--format", help="text or json (one JSON object on stdout).")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"headlens: error: {message}", err=True)
    raise typer.Exit(code)


def print_json(obj) -> None:
    """One JSON object on stdout (NaN is written as null)."""
    from headlens.results.scores import _jsonable

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
        fail(f"--format must be text or json, got {fmt!r}")


def check_out(path, option: str = "--out"):
    """Stop now, before any work, when an output folder cannot be written (see results.outputs)."""
    from headlens.results.outputs import check_out_dir

    return None if path is None else check_out_dir(path, option=option)


def load(model: str, device: Optional[str], dtype: str):
    from headlens.model.loading import load_model

    return load_model(model, device=device, dtype=dtype)  # type: ignore[arg-type]



def task_list(spec: str) -> list[str]:
    """``--task`` value -> task names/paths (comma list; groups expand; see ``expand_tasks``)."""
    from headlens.tasks.registry import expand_tasks

    return expand_tasks(spec, option="--task")


def shot_list(spec: str) -> list[int]:
    """``--shots 0,1,5`` -> [0, 1, 5]."""
    try:
        out = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        fail(f"--shots must be integers separated by commas, got {spec!r}")
    if not out or any(k < 0 for k in out):
        fail(f"--shots must be non-negative integers, got {spec!r}")
    return out
