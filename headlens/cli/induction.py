"""`headlens induction`: prefix-matching and copying scores of every head."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from headlens.cli.common import (
    DeviceOpt,
    DtypeOpt,
    FormatOpt,
    ModelOpt,
    check_format,
    check_out,
    load,
    print_json,
)

# (commands are grouped by feature; each section only calls library functions)


def induction_cmd(
    model: str = ModelOpt,
    seeds: int = typer.Option(10, "--seeds", help="Number of seeds 0..N-1 (sequence length 2*seed+25; the paper used 100)."),
    copying_variant: str = typer.Option("corrected", "--copying", help="Copying score: paper, corrected or eigen."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for score JSONs and heatmap HTMLs."),
    fmt: str = FormatOpt,
    device: Optional[str] = DeviceOpt,
    dtype: str = DtypeOpt,
) -> None:
    """Prefix-matching and copying scores of every head (induction heads score high on both),
    and attention concentration (how much attention goes to one token) beside them."""
    check_format(fmt)
    check_out(out)
    from headlens.analyses.induction import COPYING_VARIANTS, InductionOptions, induction_scores
    from headlens.errors import HeadlensError
    from headlens.results.cache import ResultCache

    if copying_variant not in COPYING_VARIANTS:
        raise HeadlensError(f"--copying must be one of {', '.join(COPYING_VARIANTS)}, got {copying_variant!r}")
    if seeds < 1:
        raise HeadlensError(f"--seeds must be >= 1, got {seeds}")
    options = InductionOptions(seeds=seeds)
    bridge = load(model, device, dtype)
    cache = ResultCache()
    # copying first: its checks (context length and vocabulary size) cover prefix matching's
    copy = induction_scores(bridge, "copying", copying_variant, options, cache=cache, progress=True)  # type: ignore[arg-type]
    prefix = induction_scores(bridge, "prefix_matching", None, options, cache=cache, progress=True)
    concentration = induction_scores(bridge, "attention_concentration", None, options, cache=cache, progress=True)
    if out is not None:
        from headlens.report.figures import head_heatmap, write_html
        from headlens.report.induction import induction_panels

        for scores in (prefix, copy, concentration):
            scores.save(out)
            write_html(head_heatmap(scores), out / f"{scores.file_stem()}.html")
        write_html(induction_panels(prefix, copy, concentration), out / "induction.html")
    if fmt == "json":
        print_json({"model": prefix.model, "n_layers": prefix.n_layers, "n_heads": prefix.n_heads,
                    "copying_variant": copying_variant, "seeds": seeds,
                    "prefix_matching": prefix.values.tolist(), "copying": copy.values.tolist(),
                    "attention_concentration": concentration.values.tolist()})
        return
    typer.echo(f"{prefix.model}: {prefix.n_layers} layers x {prefix.n_heads} heads, seeds 0..{seeds - 1}")
    typer.echo("top prefix matching: " + ", ".join(f"L{l}H{h}={v:.3f}" for l, h, v in prefix.top(5)))
    typer.echo(f"top copying ({copying_variant}): " + ", ".join(f"L{l}H{h}={v:.3f}" for l, h, v in copy.top(5)))
    typer.echo("top attention concentration: "
               + ", ".join(f"L{l}H{h}={v:.3f}" for l, h, v in concentration.top(5)))
    if out is not None:
        typer.echo(f"wrote scores and heatmaps to {out}")
