"""One self-contained HTML page from every figure saved in a results folder.

Figures are found as ``*.plotly.json`` files (written by
:func:`headlens.report.figures.save_figure`, which stores each figure's caption and section
in ``layout.meta``). plotly.js is embedded once, so the page opens offline.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
import warnings
from pathlib import Path

from headlens.errors import HeadlensError

SECTION_ORDER = ["Overview", "Induction heads", "Task importance", "Pruning", "Overlap",
                 "Layer pruning", "Results"]


def _skip(path: Path, err: BaseException) -> None:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    warnings.warn(f"report: left out {path}: not a readable figure ({type(err).__name__}: {reason[:120]})",
                  UserWarning, stacklevel=3)


def collect_figures(folder: str | os.PathLike) -> list[tuple[Path, dict]]:
    """(path, meta) of every saved figure below ``folder``, in report order.

    A figure file that cannot be read (truncated, not JSON, not a figure) is left out with a
    ``UserWarning`` naming it; ``headlens report`` prints each as a warning line.
    """
    return _collect(folder)[0]


def _collect(folder: str | os.PathLike) -> tuple[list[tuple[Path, dict]], list[Path]]:
    import json

    folder = Path(folder)
    if not folder.is_dir():
        raise HeadlensError(f"report: {folder} is not a folder; pass the --out folder of a headlens run")
    found, skipped = [], []
    for p in sorted(folder.rglob("*.plotly.json")):
        try:
            fig = json.loads(p.read_text())
            meta = (fig.get("layout") or {}).get("meta") or {}
            if not isinstance(meta, dict):
                raise ValueError("layout.meta is not an object")
        except (OSError, ValueError, AttributeError) as err:
            _skip(p, err)
            skipped.append(p)
            continue
        found.append((p, meta))

    def key(item):
        p, meta = item
        sec = meta.get("section", "Results")
        rank = SECTION_ORDER.index(sec) if sec in SECTION_ORDER else len(SECTION_ORDER)
        return (rank, sec, meta.get("order", 50), str(p))

    return sorted(found, key=key), skipped


def build_report(folder: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 title: str = "headlens report", intro: str = "") -> Path:
    """Assemble every figure under ``folder`` into one HTML page; returns its path.

    Args:
        folder: a results folder (``--out`` of any headlens command or the demo).
        out: output file (default ``folder/report.html``).
        intro: an HTML-escaped paragraph shown under the title.
    """
    from headlens.report.figures import figure_div, load_figure, plotly_js
    from headlens.results.scores import atomic_write_text, version

    figures, skipped = _collect(folder)
    if not figures:
        bad = f" ({len(skipped)} unreadable figure files were left out)" if skipped else ""
        raise HeadlensError(f"report: no saved figures (*.plotly.json) that can be read under {folder}{bad}; run a "
                            f"headlens command with --out {folder} first")
    out = Path(out) if out is not None else Path(folder) / "report.html"
    sections: dict[str, list[str]] = {}
    for i, (path, meta) in enumerate(figures):
        try:
            fig = load_figure(path)
        except (OSError, ValueError) as err:  # valid JSON that plotly cannot read as a figure
            _skip(path, err)
            skipped.append(path)
            continue
        caption = html.escape(meta.get("caption", ""))
        block = (f'<figure class="hl-figure" id="fig-{i}">{figure_div(fig, f"plot-{i}")}'
                 f"<figcaption>{caption}</figcaption></figure>")
        sections.setdefault(meta.get("section", "Results"), []).append(block)
    toc = "".join(f'<li><a href="#sec-{j}">{html.escape(s)}</a> ({len(v)})</li>'
                  for j, (s, v) in enumerate(sections.items()))
    body = "".join(f'<section id="sec-{j}"><h2>{html.escape(s)}</h2>{"".join(v)}</section>'
                   for j, (s, v) in enumerate(sections.items()))
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    skipped_note = ("" if not skipped else '<p class="hl-skipped">Left out (not readable as a figure): '
                    + ", ".join(html.escape(str(p)) for p in skipped) + "</p>\n")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
figure {{ margin: 1.5em 0; border-bottom: 1px solid #eee; padding-bottom: 1em; }}
figcaption {{ font-size: 0.92em; color: #444; max-width: 900px; }}
</style>
<script type="text/javascript">{plotly_js()}</script></head>
<body><h1>{html.escape(title)}</h1>
<p>{html.escape(intro)}</p>
{skipped_note}<p class="hl-stamp">headlens {version()}, built {stamp}, {sum(map(len, sections.values()))} figures. All figures are interactive (hover, zoom, dropdowns).</p>
<ul>{toc}</ul>
{body}
</body></html>
"""
    atomic_write_text(out, page)
    return out
