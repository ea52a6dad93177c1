"""Induction-head figures: prefix matching and copying side by side."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from headlens.results.scores import Scores


def induction_panels(prefix: Scores, copying: Scores, *, title: str | None = None) -> go.Figure:
    """Two heatmaps (heads on x, layers on y, layer 0 at the bottom): prefix matching | copying.

    Hover shows ``L{layer}H{head}``, the value and its std over seeds (when present).
    """
    variant = copying.meta.get("variant", "")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("prefix matching", f"copying ({variant})"))
    for col, scores in ((1, prefix), (2, copying)):
        vals = scores.values
        layers, heads = np.indices(vals.shape)
        std = scores.std if scores.std is not None else np.full(vals.shape, np.nan)
        fig.add_trace(go.Heatmap(
            z=vals, x=list(range(vals.shape[1])), y=list(range(vals.shape[0])),
            customdata=np.stack([layers, heads, std], -1), colorscale="Viridis",
            hovertemplate="L%{customdata[0]}H%{customdata[1]}<br>value=%{z:.4g}"
                          "<br>std=%{customdata[2]:.3g}<extra></extra>",
            colorbar={"x": 0.43 if col == 1 else 1.0, "len": 0.9}), row=1, col=col)
        fig.update_xaxes(title_text="head", row=1, col=col)
        fig.update_yaxes(title_text="layer", row=1, col=col)
    n_layers, n_heads = prefix.values.shape
    fig.update_layout(title=title or f"induction heads — {prefix.model}", template="plotly_white",
                      width=max(760, 80 * n_heads + 360), height=max(360, 34 * n_layers + 180))
    return fig
