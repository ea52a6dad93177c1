"""The command line (typer): one module per command group; see :mod:`headlens.cli.app`."""

from headlens.cli.app import app, main

__all__ = ["app", "main"]
