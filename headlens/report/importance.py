"""Figures for task importance and pruning: heatmaps with a task x shots dropdown, curves, grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from headlens.results.scores import Scores


def _label(s: Scores) -> str:
    task, shots = s.meta.get("task"), s.meta.get("shots")
    if task is None:
        return s.name
    return f"{task} / {shots}-shot" if shots is not None else str(task)


def importance_heatmaps(scores: Sequence[Scores], *, title: str = "Head importance",
                        normalize_each: bool = True) -> go.Figure:
    """One heatmap per (task, shots), switched by a dropdown; heads on x, layer 0 at the bottom.

    With ``normalize_each`` each map is divided by its maximum so the colour scale is
    comparable across tasks (raw values are in the hover).
    """
    if not scores:
        raise ValueError("importance_heatmaps: no scores")
    fig = go.Figure()
    for i, s in enumerate(scores):
        vals = s.values if s.per_head else s.values[:, None]
        z = vals / vals.max() if normalize_each and vals.max() > 0 else vals
        layers, heads = np.indices(vals.shape)
        fig.add_trace(go.Heatmap(
            z=z, customdata=np.stack([layers, heads, vals], -1), visible=i == 0,
            colorscale="Viridis", name=_label(s), zmin=0 if normalize_each else None,
            zmax=1 if normalize_each else None,
            hovertemplate="L%{customdata[0]}H%{customdata[1]}<br>importance=%{customdata[2]:.4g}"
                          "<br>relative=%{z:.3f}<extra>" + _label(s) + "</extra>"))
    buttons = [{"label": _label(s), "method": "update",
                "args": [{"visible": [j == i for j in range(len(scores))]},
                         {"title": f"{title}: {_label(s)}"}]} for i, s in enumerate(scores)]
    n_layers = scores[0].n_layers
    n_heads = scores[0].n_heads or 1
    fig.update_layout(
        title=f"{title}: {_label(scores[0])}", template="plotly_white",
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right",
                      "y": 1.15, "yanchor": "top"}] if len(scores) > 1 else [],
        xaxis={"title": "head", "dtick": 1 if n_heads <= 32 else None},
        yaxis={"title": "layer", "dtick": 1 if n_layers <= 32 else None},
        width=max(480, 40 * n_heads + 240), height=max(360, 34 * n_layers + 200))
    return fig


def pruning_curves(curves: Mapping[str, pd.DataFrame], *, title: str = "Accuracy vs % pruned",
                   chance: float | None = None) -> go.Figure:
    """Accuracy vs percent removed for each named curve, with its random-removal baseline.

    The dotted line is the mean accuracy over random subsets of the same size; the shaded
    band spans ``acc_random_low`` to ``acc_random_high`` (the 2.5-97.5 percentiles of the
    random accuracies, over every subset where they were enumerated; see
    :func:`headlens.analyses.pruning.pruning_curve`). Curves from before those columns
    existed fall back to mean +/- 1 sd.
    """
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
               "#e377c2", "#7f7f7f", "#bcbd22"]
    for i, (name, df) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        if "acc_random_mean" in df and df.acc_random_mean.notna().any():
            if "acc_random_low" in df and "acc_random_high" in df:
                lo, hi, band = df.acc_random_low, df.acc_random_high, "random 2.5-97.5%"
            else:
                lo = df.acc_random_mean - df.acc_random_std
                hi = df.acc_random_mean + df.acc_random_std
                band = "random ±1 sd"
            fig.add_trace(go.Scatter(x=list(df.percent) + list(df.percent[::-1]),
                                     y=list(hi) + list(lo[::-1]), fill="toself", opacity=0.15,
                                     line={"width": 0, "color": color}, hoverinfo="skip",
                                     name=f"{name}: {band}", showlegend=True))
            n = df["n_random"] if "n_random" in df else [""] * len(df)
            exact = df["random_exact"] if "random_exact" in df else [None] * len(df)
            how = ["" if e is None else "subsets (all)" if e else "random subsets" for e in exact]
            custom = [[float(a), float(b), c if c == "" else int(c), d] for a, b, c, d in zip(lo, hi, n, how)]
            fig.add_trace(go.Scatter(x=df.percent, y=df.acc_random_mean, mode="lines",
                                     line={"dash": "dot", "color": color}, customdata=custom,
                                     hovertemplate="%{x:.0f}% removed at random<br>mean acc=%{y:.3f}"
                                                   "<br>band %{customdata[0]:.3f}-%{customdata[1]:.3f}"
                                                   "<br>%{customdata[2]} %{customdata[3]}<extra>"
                                                   + name + "</extra>",
                                     name=f"{name}: random removal"))
        fig.add_trace(go.Scatter(x=df.percent, y=df.acc, mode="lines+markers",
                                 line={"color": color}, name=name,
                                 hovertemplate="%{x:.0f}% removed<br>acc=%{y:.3f}<extra>" + name + "</extra>"))
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", line_color="gray", annotation_text="chance")
    fig.update_layout(title=title, xaxis_title="% removed (lowest importance first)",
                      yaxis_title="accuracy", template="plotly_white", yaxis_range=[0, 1.02])
    return fig


def pruning_grid_heatmap(grid: pd.DataFrame, *, title: str = "Accuracy: % heads x % FFNs removed") -> go.Figure:
    """Annotated heatmap of a :func:`headlens.analyses.pruning.pruning_grid` result."""
    z = grid.values
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{c:g}%" for c in grid.columns], y=[f"{r:g}%" for r in grid.index],
        text=np.round(z, 2), texttemplate="%{text}", colorscale="RdYlGn", zmin=0, zmax=1,
        hovertemplate="heads %{y}, FFNs %{x}<br>acc=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="% FFNs removed", yaxis_title="% heads removed",
                      template="plotly_white")
    return fig


def ffn_heatmap(scores: Sequence[Scores], *, title: str = "FFN importance") -> go.Figure:
    """Tasks/shots (rows) x layers (columns) of FFN importance, each row scaled to its max."""
    rows = np.stack([s.values / s.values.max() if s.values.max() > 0 else s.values for s in scores])
    labels = [_label(s) for s in scores]
    raw = np.stack([s.values for s in scores])
    fig = go.Figure(go.Heatmap(
        z=rows, x=[f"L{l}" for l in range(rows.shape[1])], y=labels, customdata=raw,
        colorscale="Viridis", zmin=0, zmax=1,
        hovertemplate="%{y}, FFN %{x}<br>importance=%{customdata:.4g}<br>relative=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="layer", template="plotly_white",
                      height=max(360, 22 * len(labels) + 160))
    return fig


def accuracy_bars(frame: pd.DataFrame, *, chance: Mapping[str, float] | None = None,
                  title: str = "Accuracy by task and number of shots") -> go.Figure:
    """Grouped bars of accuracy per task (x) for each shot count; ``frame`` has columns
    task, shots, acc (and optionally n). A dashed marker shows each task's chance level."""
    fig = go.Figure()
    for shots, df in frame.groupby("shots"):
        fig.add_trace(go.Bar(x=df.task, y=df.acc, name=f"{shots}-shot",
                             hovertemplate="%{x}<br>acc=%{y:.3f}<extra>" + f"{shots}-shot</extra>"))
    if chance:
        tasks = list(dict.fromkeys(frame.task))
        fig.add_trace(go.Scatter(x=tasks, y=[chance.get(t, np.nan) for t in tasks], mode="markers",
                                 marker={"symbol": "line-ew-open", "size": 28, "color": "black"},
                                 name="chance"))
    fig.update_layout(title=title, barmode="group", yaxis_title="accuracy", yaxis_range=[0, 1.02],
                      template="plotly_white")
    return fig
