"""Induction-head figures: prefix matching, copying and attention concentration side by side."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from headlens.results.scores import Scores


def induction_panels(prefix: Scores, copying: Scores, concentration: Scores | None = None, *,
                     title: str | None = None) -> go.Figure:
    """Heatmaps side by side (heads on x, layers on y, layer 0 at the bottom): prefix matching |
    copying (its variant in the title) | attention concentration (when given).

    Hover shows ``L{layer}H{head}``, the value and its std over seeds (when present).
    """
    variant = copying.meta.get("variant", "")
    panels = [("prefix matching", prefix), (f"copying ({variant})", copying)]
    if concentration is not None:
        panels.append(("attention concentration", concentration))
    n_cols = len(panels)
    fig = make_subplots(rows=1, cols=n_cols, horizontal_spacing=0.14 if n_cols == 2 else 0.1,
                        subplot_titles=[name for name, _ in panels])
    for col, (_, scores) in enumerate(panels, start=1):
        vals = scores.values
        layers, heads = np.indices(vals.shape)
        std = scores.std if scores.std is not None else np.full(vals.shape, np.nan)
        right = fig.layout[f"xaxis{col if col > 1 else ''}"].domain[1]
        fig.add_trace(go.Heatmap(
            z=vals, x=list(range(vals.shape[1])), y=list(range(vals.shape[0])),
            customdata=np.stack([layers, heads, std], -1), colorscale="Viridis",
            hovertemplate="L%{customdata[0]}H%{customdata[1]}<br>value=%{z:.4g}"
                          "<br>std=%{customdata[2]:.3g}<extra></extra>",
            colorbar={"x": right + 0.01, "len": 0.9, "thickness": 12}), row=1, col=col)
        fig.update_xaxes(title_text="head", row=1, col=col)
        fig.update_yaxes(title_text="layer", row=1, col=col)
    n_layers, n_heads = prefix.values.shape
    fig.update_layout(title=title or f"induction heads — {prefix.model}", template="plotly_white",
                      width=max(380 * n_cols, n_cols * (40 * n_heads + 180)), height=max(360, 34 * n_layers + 180))
    return fig
