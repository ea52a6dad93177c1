"""The ``headlens`` command: parse, call the library, print. No domain logic lives here.

Each command group is one module of this package; heavy modules (torch, transformer-lens,
plotly) are imported inside the commands, so ``headlens --help`` is instant. Bad input
raises HeadlensError, printed here as one line with exit status 2.
"""

from __future__ import annotations

import sys

import typer

from headlens.cli import (
    cache,
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
cache_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="The result cache: list entries per kind, free space.")
cache_app.command("ls")(cache.cache_ls)
cache_app.command("clear")(cache.cache_clear)
app.add_typer(cache_app, name="cache")


INTERRUPTED = "headlens: interrupted; finished work is cached, run the same command to resume"


def main() -> None:
    """Entry point: run the app; HeadlensError -> one line, exit 2; Ctrl-C -> one line, exit 130.

    typer turns KeyboardInterrupt into ``Exit(130)`` (returned as 130 here) and click into
    ``Abort``; both print :data:`INTERRUPTED`. An OSError that escaped the commands' own
    checks (disk full, a file removed mid-run) is printed as one line with exit status 2 too.
    """
    from headlens.errors import HeadlensError

    try:
        code = app(standalone_mode=False)  # typer.Exit comes back as a return code here
        if code == 130:
            typer.echo(INTERRUPTED, err=True)
        if isinstance(code, int) and code:
            sys.exit(code)
    except HeadlensError as err:
        typer.echo(f"headlens: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except OSError as err:
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        typer.echo(f"headlens: error: {err.strerror or err}{where}", err=True)
        sys.exit(2)
    except Exception as err:
        # usage errors from typer's bundled click: print the short usage message, no traceback
        if hasattr(err, "show") and hasattr(err, "exit_code"):
            err.show()
            sys.exit(err.exit_code)
        if type(err).__name__ == "Abort":
            if isinstance(err.__context__ or err.__cause__, KeyboardInterrupt):
                typer.echo(INTERRUPTED, err=True)
            sys.exit(130)
        raise
