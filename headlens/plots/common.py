"""Shared figure builders: the layers x heads heatmap and offline HTML output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from headlens.results import Scores


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
