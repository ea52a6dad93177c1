"""`headlens cache ls|clear`: what the result cache holds, and freeing it."""

from __future__ import annotations

from typing import Optional

import typer

from headlens.cli.common import FormatOpt, check_format, print_json


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def cache_ls(fmt: str = FormatOpt) -> None:
    """Entries per kind (importance, pruning, induction, ...) and their size on disk."""
    check_format(fmt)
    from headlens.results.cache import ResultCache

    cache = ResultCache(enabled=False)  # listing only: no probe, nothing created
    rows = cache.summary()
    total = {"entries": sum(r["entries"] for r in rows), "bytes": sum(r["bytes"] for r in rows)}
    if fmt == "json":
        print_json({"root": str(cache.root), "kinds": rows, **total})
        return
    typer.echo(f"result cache {cache.root}")
    if not rows:
        typer.echo("(empty)")
        return
    typer.echo(f"{'kind':<20} {'entries':>8} {'size':>10}")
    for r in rows:
        typer.echo(f"{r['kind']:<20} {r['entries']:>8} {_size(r['bytes']):>10}")
    typer.echo(f"{'total':<20} {total['entries']:>8} {_size(total['bytes']):>10}")


def cache_clear(
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind (see headlens cache ls)."),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Only entries older than this: "
                                             "90s, 30m, 12h, 7d, 2w."),
    fmt: str = FormatOpt,
) -> None:
    """Delete cached results (all, one kind, or those older than an age)."""
    check_format(fmt)
    from headlens.results.cache import ResultCache, parse_age

    age = parse_age(older_than) if older_than is not None else None
    cache = ResultCache(enabled=False)
    count, size = cache.clear(kind, age)
    if fmt == "json":
        print_json({"root": str(cache.root), "removed": count, "bytes": size, "kind": kind,
                    "older_than": older_than})
        return
    typer.echo(f"removed {count} entr{'y' if count == 1 else 'ies'} ({_size(size)}) from {cache.root}")
