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


# ----------------------------------------------------------------------------- importance


# ----------------------------------------------------------------------------- prune


# ----------------------------------------------------------------------------- overlap


# ----------------------------------------------------------------------------- layers


# ----------------------------------------------------------------------------- demo


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
