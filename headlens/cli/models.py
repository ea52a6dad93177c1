"""`headlens models`: the model registry."""

from __future__ import annotations

import typer


def models_cmd() -> None:
    """List the models shipped in data/models/."""
    from headlens.model.loading import shipped_models

    for name, path in shipped_models().items():
        typer.echo(f"{name}\t{path}")
