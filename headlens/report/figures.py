"""Shared figure builders: the layers x heads heatmap and offline HTML output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

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


def write_html(fig: go.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a self-contained HTML page (plotly.js embedded; opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


def save_figure(fig: go.Figure, folder: str | os.PathLike, name: str, *, caption: str,
                section: str = "Results", order: int = 50) -> Path:
    """Write ``name.html`` (self-contained) and ``name.plotly.json`` into ``folder``.

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
