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


@app.command("induction")
def induction_cmd(
    model: str = ModelOpt,
    seeds: int = typer.Option(10, "--seeds", help="Number of seeds 0..N-1 (sequence length 2*seed+25; the paper used 100)."),
    copying_variant: str = typer.Option("corrected", "--copying", help="Copying score: paper, corrected or eigen."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for score JSONs and heatmap HTMLs."),
    fmt: str = FormatOpt,
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Prefix-matching and copying scores of every head (induction heads score high on both)."""
    check_format(fmt)
    from headlens.errors import HeadlensError
    from headlens.induction import COPYING_VARIANTS, copying, prefix_matching

    if copying_variant not in COPYING_VARIANTS:
        raise HeadlensError(f"--copying must be one of {', '.join(COPYING_VARIANTS)}, got {copying_variant!r}")
    if seeds < 1:
        raise HeadlensError(f"--seeds must be >= 1, got {seeds}")
    bridge = load(model, device, dtype)
    # copying first: its checks (context length and vocabulary size) cover prefix matching's
    copy = copying(bridge, copying_variant, seeds, progress=True)  # type: ignore[arg-type]
    prefix = prefix_matching(bridge, seeds, progress=True)
    if out is not None:
        from headlens.plots.common import head_heatmap, write_html
        from headlens.plots.induction import induction_panels

        for scores in (prefix, copy):
            scores.save(out)
            write_html(head_heatmap(scores), out / f"{scores.file_stem()}.html")
        write_html(induction_panels(prefix, copy), out / "induction.html")
    if fmt == "json":
        print_json({"model": prefix.model, "n_layers": prefix.n_layers, "n_heads": prefix.n_heads,
                    "copying_variant": copying_variant, "seeds": seeds,
                    "prefix_matching": prefix.values.tolist(), "copying": copy.values.tolist()})
        return
    typer.echo(f"{prefix.model}: {prefix.n_layers} layers x {prefix.n_heads} heads, seeds 0..{seeds - 1}")
    typer.echo("top prefix matching: " + ", ".join(f"L{l}H{h}={v:.3f}" for l, h, v in prefix.top(5)))
    typer.echo(f"top copying ({copying_variant}): " + ", ".join(f"L{l}H{h}={v:.3f}" for l, h, v in copy.top(5)))
    if out is not None:
        typer.echo(f"wrote scores and heatmaps to {out}")


# ----------------------------------------------------------------------------- eval


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
