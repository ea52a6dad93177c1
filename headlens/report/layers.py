"""Figures for layer pruning: the d(l, n) heatmap with the l*(n) line, and pruning curves."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from headlens.analyses.layers import LayerDistances


def distance_heatmap(dist: LayerDistances, *, title: str | None = None) -> go.Figure:
    """Heatmap of d(l, n), block start l on x and size n on y, each row divided by its max.

    Row normalisation (d(l, n) / max_l d(l, n)) makes every block size use the full colour
    range, so the shallow-to-deep trend is visible for large n too; hover shows the raw
    distance. The line marks l*(n) = argmin_l d(l, n). Invalid cells (l + n > L) are blank.
    """
    L = dist.n_layers
    d = dist.distance[1:].double().numpy()  # rows n = 1..L
    row_max = np.nanmax(d, axis=1, keepdims=True)
    norm = d / np.where(row_max > 0, row_max, 1.0)
    ns = list(range(1, L + 1))
    best = [int(dist.best_start[n]) for n in ns]
    fig = go.Figure(go.Heatmap(
        z=norm, x=list(range(L)), y=ns, customdata=d, colorscale="Viridis",
        hovertemplate="start l=%{x}, n=%{y}<br>d=%{customdata:.4f}<br>d/row max=%{z:.3f}<extra></extra>",
        colorbar={"title": "d / row max"}))
    fig.add_trace(go.Scatter(x=best, y=ns, mode="lines+markers", name="l*(n)",
                             line={"color": "white", "width": 2}, marker={"color": "red", "size": 7}))
    fig.update_layout(
        title=title or f"Angular distance d(l, n), row-normalised — {dist.model} ({dist.n_samples} texts)",
        xaxis={"title": "block start l", "dtick": 1 if L <= 32 else None},
        yaxis={"title": "block size n", "dtick": 1 if L <= 32 else None},
        template="plotly_white", width=max(460, 28 * L + 260), height=max(380, 24 * L + 200),
        legend={"x": 1.15, "y": 1})
    return fig


def pruning_curves(frame, *, metric: str = "loss", title: str | None = None) -> go.Figure:
    """``metric`` vs fraction of layers removed, one line per (method, healed).

    ``frame`` is :func:`headlens.analyses.layers.pruning_curve`'s DataFrame; ``metric`` is ``loss``
    or an ``acc_<task>`` column. Solid lines are unhealed, dashed healed.
    """
    if metric not in frame.columns:
        raise KeyError(f"no column {metric!r}; available: {', '.join(map(str, frame.columns))}")
    fig = go.Figure()
    colours = {"similarity": "#1f77b4", "deepest": "#d62728"}
    for (method, healed), part in frame.groupby(["method", "healed"], sort=True):
        part = part.sort_values("fraction_removed")
        fig.add_trace(go.Scatter(
            x=part["fraction_removed"], y=part[metric], mode="lines+markers",
            name=f"{method}{' + healed' if healed else ''}",
            line={"color": colours.get(method), "dash": "dash" if healed else "solid"},
            customdata=np.stack([part["n"], part["start"].fillna(-1)], -1),
            hovertemplate="n=%{customdata[0]}, start=%{customdata[1]}<br>%{y:.4f}<extra></extra>"))
    fig.update_layout(title=title or f"{metric} vs fraction of layers removed",
                      xaxis={"title": "fraction of layers removed", "tickformat": ".0%"},
                      yaxis={"title": "next-token loss (nats)" if metric == "loss" else metric},
                      template="plotly_white", width=640, height=420)
    return fig
