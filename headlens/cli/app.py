"""The ``headlens`` command: parse, call the library, print. No domain logic lives here.

Each command group is one module of this package; heavy modules (torch, transformer-lens,
plotly) are imported inside the commands, so ``headlens --help`` is instant. Bad input
raises HeadlensError, printed here as one line with exit status 2.
"""

from __future__ import annotations

import sys

import typer

from headlens.cli import (
    evaluate,
    importance,
    induction,
    layers,
    models,
    overlap,
    prune,
    runs,
)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Interpretability of attention heads: importance, induction, overlap, layer pruning.")


@app.callback()
def _root() -> None:
    """Interpretability of attention heads: importance, induction, overlap, layer pruning."""


app.command("induction")(induction.induction_cmd)
app.command("eval")(evaluate.eval_cmd)
app.command("tasks")(evaluate.tasks_cmd)
app.command("importance")(importance.importance_cmd)
app.command("prune")(prune.prune_cmd)
app.command("overlap")(overlap.overlap_cmd)
layers_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Layer pruning by angular distance (Gromov et al. 2024) and LoRA healing.")
layers_app.command("distances")(layers.layers_distances)
layers_app.command("prune")(layers.layers_prune)
layers_app.command("heal")(layers.layers_heal)
app.add_typer(layers_app, name="layers")
app.command("demo")(runs.demo_cmd)
app.command("report")(runs.report_cmd)
app.command("sweep")(runs.sweep_cmd)
app.add_typer(models.app, name="models")


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
