"""Shared figure builders: the layers x heads heatmap and offline HTML output.

Figures written together share one ``plotly.min.js`` beside them (:func:`write_html`); the
report (:mod:`headlens.report.html`) embeds plotly.js once and is one self-contained file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import plotly.graph_objects as go

from headlens.errors import HeadlensError
from headlens.results.scores import Scores


def head_heatmap(scores: Scores, *, title: str | None = None, colorscale: str = "Viridis",
                 zmin: float | None = None, zmax: float | None = None) -> go.Figure:
    """Heatmap of a [n_layers, n_heads] score: heads on x, layers on y, layer 0 at the bottom.

    Hover shows ``L{layer}H{head}`` and the value (and the spread when ``scores.std`` is set).
    """
    vals = scores.values if scores.per_head else scores.values[:, None]
    n_layers, n_heads = vals.shape
    layers, heads = np.indices(vals.shape)
    custom = np.stack([layers, heads] + ([scores.std] if scores.std is not None and scores.per_head else []), -1)
    hover = "L%{customdata[0]}H%{customdata[1]}<br>value=%{z:.4g}"
    if custom.shape[-1] == 3:
        hover += "<br>std=%{customdata[2]:.3g}"
    fig = go.Figure(go.Heatmap(
        z=vals, x=list(range(n_heads)), y=list(range(n_layers)), customdata=custom,
        hovertemplate=hover + "<extra></extra>", colorscale=colorscale, zmin=zmin, zmax=zmax,
        colorbar={"title": scores.metric}))
    fig.update_layout(
        title=title or f"{scores.name} — {scores.model}",
        xaxis={"title": "head", "dtick": 1 if n_heads <= 32 else None},
        yaxis={"title": "layer", "dtick": 1 if n_layers <= 32 else None, "autorange": True},
        template="plotly_white", width=max(420, 40 * n_heads + 200), height=max(320, 34 * n_layers + 160))
    return fig


PlotlyJs = Literal["beside", "embed"]
"""Where a figure page gets plotly.js: ``plotly.min.js`` in the same folder, or embedded."""

PLOTLY_JS_FILE = "plotly.min.js"


def write_plotly_js(folder: str | os.PathLike) -> Path:
    """Write plotly.js (the bundle of the installed plotly) as ``folder/plotly.min.js``.

    Figure pages in ``folder`` load it with ``<script src="plotly.min.js">``, so the folder
    opens offline with one copy (4.7 MB) however many figures it holds. An existing file
    is kept when it is this plotly's bundle and replaced otherwise (an older plotly's
    bundle would draw these figures with an older plotly.js).
    """
    import tempfile

    path = Path(folder) / PLOTLY_JS_FILE
    js = plotly_js().encode("utf-8")
    if path.is_file() and path.stat().st_size == len(js) and path.read_bytes() == js:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # temporary file + rename: a page opened meanwhile never loads half a bundle
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(js)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a web server serving the folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_html(fig: go.Figure, path: str | os.PathLike, *, plotlyjs: PlotlyJs = "beside") -> Path:
    """Write ``fig`` as an HTML page that opens offline.

    Args:
        plotlyjs: ``"beside"`` (default): the page loads ``plotly.min.js`` from its own
            folder, written there once by :func:`write_plotly_js` and shared by every
            figure in the folder (keep the two together when moving the page);
            ``"embed"``: plotly.js inside the page, one self-contained file (+4.7 MB).
    """
    if plotlyjs not in get_args(PlotlyJs):
        raise HeadlensError(f"write_html: plotlyjs must be one of {', '.join(get_args(PlotlyJs))}, "
                            f"got {plotlyjs!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plotlyjs == "beside":
        write_plotly_js(path.parent)
    fig.write_html(str(path), include_plotlyjs="directory" if plotlyjs == "beside" else True, full_html=True)
    return path


def save_figure(fig: go.Figure, folder: str | os.PathLike, name: str, *, caption: str,
                section: str = "Results", order: int = 50) -> Path:
    """Write ``name.html`` and ``name.plotly.json`` into ``folder``.

    ``name.html`` loads the ``plotly.min.js`` shared by every figure in ``folder``
    (:func:`write_html`); ``headlens report`` embeds the figures from their JSON into one
    self-contained page.

    The caption (what the figure shows and how it was computed) and the report section
    travel in ``layout.meta`` so ``headlens report`` can assemble any folder of figures.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig = go.Figure(fig)
    fig.update_layout(meta={"caption": caption, "section": section, "order": order, "name": name})
    write_html(fig, folder / f"{name}.html")
    from headlens.results.scores import atomic_write_text

    atomic_write_text(folder / f"{name}.plotly.json", fig.to_json())
    return folder / f"{name}.html"


def load_figure(path: str | os.PathLike) -> go.Figure:
    """Read a figure written by :func:`save_figure`."""
    import plotly.io as pio

    return pio.from_json(Path(path).read_text())


def figure_div(fig: go.Figure, div_id: str) -> str:
    """HTML ``<div>`` for ``fig`` without plotly.js (the page includes it once)."""
    import plotly.io as pio

    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"responsive": True, "displaylogo": False})


def plotly_js() -> str:
    """The plotly.js bundle, to embed once in a self-contained page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()
