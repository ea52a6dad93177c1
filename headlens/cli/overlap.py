"""`headlens overlap`: rank agreement and top-k overlap between saved score sets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from headlens.cli.common import (
    FormatOpt,
    check_format,
    check_out,
    fail,
    print_json,
)


def overlap_cmd(
    results: list[str] = typer.Argument(..., help="Saved Scores JSON files or folders of them."),
    top: Optional[int] = typer.Option(None, "--top", "-k",
                                      help="Heads in each top-k set (default: 10% of the heads)."),
    method: str = typer.Option("spearman", "--method", help="spearman or kendall."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random order that breaks ties in top-k sets."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the HTML figures."),
    allow_other_model: bool = typer.Option(False, "--allow-other-model", help="Compare score sets of "
                                           "different models (refused by default)."),
    fmt: str = FormatOpt,
) -> None:
    """Compare saved head scores: rank agreement, top-k Jaccard and hypergeometric p-values."""
    import warnings

    from headlens.errors import HeadlensError
    from headlens.results.scores import Scores, check_same_model, load_all

    check_format(fmt)
    check_out(out)
    if top is not None and top < 1:
        fail(f"--top must be a number of heads >= 1 (default: 10% of the heads), got {top}")
    scores, labels = [], []
    for item in results:
        path = Path(item)
        if path.is_dir():
            found = [s for s in load_all(path) if s.per_head]
            if not found:
                raise HeadlensError(f"overlap: no per-head score files in folder {path}")
            scores.extend(found)
            labels.extend(f"{path}/{s.name}" for s in found)
        elif path.is_file():
            scores.append(Scores.load(path))
            labels.append(str(path))
        else:
            raise HeadlensError(f"overlap: {path} is neither a score file nor a folder")
    check_same_model(scores, "overlap", labels=labels, allow_other_model=allow_other_model)
    if len(scores) < 2:
        raise HeadlensError(f"overlap: needs at least 2 score sets, got {len(scores)}; pass more files")
    n = scores[0].values.size
    k = max(1, round(0.1 * n)) if top is None else top
    if k > n:
        fail(f"--top {k} is more than the {n} heads of these scores; pass --top between 1 and {n}")
    from headlens.analyses.overlap import (
        TieWarning,
        overlap_matrix,
        random_baseline,
        rank_agreement,
    )

    agreement = rank_agreement(scores, method)  # type: ignore[arg-type]
    baseline = random_baseline(n, method, seed=0) if n >= 3 else None  # type: ignore[arg-type]
    with warnings.catch_warnings():  # ties at k are reported below in one line, from sets.tied
        warnings.simplefilter("ignore", TieWarning)
        sets = overlap_matrix(scores, k=k, seed=seed)
        if out is not None:
            from headlens.report.overlap import overlap_figures

            overlap_figures(scores, agreement, sets, baseline, out)
    tied = [f"[{i}] ({t} heads tied)" for i, t in enumerate(sets.tied) if t]
    if fmt == "json":
        print_json({"labels": list(agreement.labels), "n_heads": n, "method": method,
                    method: agreement.matrix, f"{method}_p_values": agreement.p_values,
                    "random_baseline": None if baseline is None else
                    {"mean": baseline.mean, "low": baseline.low, "high": baseline.high},
                    "k": k, "seed": seed, "tied": list(sets.tied), "jaccard": sets.jaccard, "intersection": sets.intersection,
                    "expected_intersection": k * k / n, "p_values": sets.p_values,
                    "out": None if out is None else str(out)})
        return
    names = [f"[{i}] {lab}" for i, lab in enumerate(agreement.labels)]
    typer.echo("\n".join(names))
    head = "      " + "".join(f"{f'[{i}]':>8}" for i in range(len(names)))
    typer.echo(f"\n{method} rank agreement over {n} heads"
               + ("" if baseline is None else
                  f" (random orders: 95% in [{baseline.low:.2f}, {baseline.high:.2f}])"))
    typer.echo(head)
    for i, row in enumerate(agreement.matrix):
        typer.echo(f"{f'[{i}]':>6}" + "".join(f"{v:8.2f}" for v in row))
    typer.echo(f"\ntop-{k} Jaccard (hypergeometric p; random intersection {k * k / n:.2f} heads)")
    typer.echo(head)
    for i, (jr, pr) in enumerate(zip(sets.jaccard, sets.p_values)):
        typer.echo(f"{f'[{i}]':>6}" + "".join(f"{j:5.2f}{'*' if p < 0.05 else ' ':<3}"
                                             for j, p in zip(jr, pr)))
    typer.echo("* p < 0.05")
    if tied:
        typer.echo(f"note: equal scores straddle the top-{k} boundary in {', '.join(tied)}; a random "
                   f"tie-break (--seed {seed}) chose among them, so their overlap is uncertain")
    if out is not None:
        typer.echo(f"figures: {out}")
