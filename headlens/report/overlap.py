"""Overlap figures: correlation matrices, overlap vs k, retained-score curves, causal-check bars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from headlens.analyses.overlap import Agreement, Baseline, OverlapMatrix

_LAYOUT = {"template": "plotly_white"}


def _matrix_trace(labels, matrix, p_values, *, name: str, zmin: float, zmax: float,
                  colorscale: str, value_name: str, visible: bool = True) -> go.Heatmap:
    labels = list(labels)
    text = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(np.asarray(matrix, dtype=float))
    return go.Heatmap(
        z=matrix, x=labels, y=labels, text=text, texttemplate="%{text}", customdata=p_values,
        hovertemplate=f"%{{y}} vs %{{x}}<br>{value_name}=%{{z:.3f}}<br>p=%{{customdata:.2g}}<extra></extra>",
        zmin=zmin, zmax=zmax, colorscale=colorscale, name=name, visible=visible,
        colorbar={"title": value_name})


def _size(n: int) -> dict[str, Any]:
    side = max(380, 60 * n + 220)
    return {"width": side + 80, "height": side}


def agreement_heatmap(agreement: Agreement, *, title: str | None = None,
                      baseline: Baseline | None = None) -> go.Figure:
    """Annotated [n_sets, n_sets] rank-correlation matrix; hover shows the p-value.

    With ``baseline``, the subtitle gives the 95% band of the correlation between random
    head orders, so cells inside it read as chance.
    """
    fig = go.Figure(_matrix_trace(agreement.labels, agreement.matrix, agreement.p_values,
                                  name=agreement.method, zmin=-1, zmax=1, colorscale="RdBu_r",
                                  value_name=agreement.method))
    title = title or f"{agreement.method} rank agreement over {agreement.n} heads"
    if baseline is not None:
        title += f"<br><sub>random orders: 95% in [{baseline.low:.2f}, {baseline.high:.2f}]</sub>"
    fig.update_layout(title=title, yaxis={"autorange": "reversed"}, **_size(len(agreement.labels)),
                      **_LAYOUT)
    return fig


def agreement_dropdown(agreements: Mapping[Any, Agreement], *, key_name: str,
                       title: str | None = None) -> go.Figure:
    """One annotated correlation matrix per key (e.g. per shot), chosen from a dropdown.

    ``agreements`` is the output of :func:`headlens.analyses.overlap.by_shot` (tasks x tasks, keyed by
    shots) or :func:`headlens.analyses.overlap.by_task` (shots x shots, keyed by task).
    """
    if not agreements:
        return go.Figure().update_layout(title=title or "no score sets to compare", **_LAYOUT)
    keys = list(agreements)
    fig = go.Figure()
    for i, key in enumerate(keys):
        ag = agreements[key]
        fig.add_trace(_matrix_trace(ag.labels, ag.matrix, ag.p_values, name=f"{key_name}={key}",
                                    zmin=-1, zmax=1, colorscale="RdBu_r", value_name=ag.method,
                                    visible=i == 0))
    method = next(iter(agreements.values())).method
    base = title or f"{method} rank agreement"
    buttons = [{"label": f"{key_name} {key}", "method": "update",
                "args": [{"visible": [j == i for j in range(len(keys))]},
                         {"title": f"{base} — {key_name} {key}"}]} for i, key in enumerate(keys)]
    n = max(len(a.labels) for a in agreements.values())
    fig.update_layout(title=f"{base} — {key_name} {keys[0]}", yaxis={"autorange": "reversed"},
                      updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.15, "xanchor": "right",
                                    "direction": "down", "showactive": True}],
                      **_size(n), **_LAYOUT)
    return fig


def overlap_matrix_heatmap(overlap: OverlapMatrix, *, title: str | None = None) -> go.Figure:
    """Annotated top-k Jaccard matrix; hover shows the hypergeometric p-value."""
    fig = go.Figure(_matrix_trace(overlap.labels, overlap.jaccard, overlap.p_values, name="jaccard",
                                  zmin=0, zmax=1, colorscale="Viridis", value_name="jaccard"))
    chance = overlap.expected_intersection[0, 0] / (2 * overlap.k - overlap.expected_intersection[0, 0])
    fig.update_layout(
        title=title or (f"top-{overlap.k} of {overlap.n_total} heads: Jaccard overlap"
                        f"<br><sub>chance about {chance:.2f}</sub>"),
        yaxis={"autorange": "reversed"}, **_size(len(overlap.labels)), **_LAYOUT)
    return fig


def overlap_vs_k(sweeps: Mapping[str, Any], *, measure: str = "jaccard",
                 title: str | None = None) -> go.Figure:
    """Overlap of top-k sets against k for one or more pairs (outputs of ``overlap_sweep``).

    Hover shows the intersection, its random expectation and the hypergeometric p-value;
    a dashed line per pair marks the random expectation (``expected_jaccard``, or
    ``expected_intersection`` when ``measure='intersection'``).
    """
    expected = {"jaccard": "expected_jaccard", "intersection": "expected_intersection"}.get(measure)
    fig = go.Figure()
    for i, (name, df) in enumerate(sweeps.items()):
        color = _color(i)
        custom = np.stack([df["intersection"], df["expected_intersection"], df["p_value"]], -1)
        fig.add_trace(go.Scatter(
            x=df["k"], y=df[measure], mode="lines+markers", name=name, line={"color": color},
            customdata=custom,
            hovertemplate=(f"{name}<br>k=%{{x}}<br>{measure}=%{{y:.3f}}<br>intersection="
                           "%{customdata[0]} (random %{customdata[1]:.2f})<br>p=%{customdata[2]:.2g}"
                           "<extra></extra>")))
        if expected is not None:
            fig.add_trace(go.Scatter(x=df["k"], y=df[expected], mode="lines", showlegend=i == 0,
                                     name="random expectation", legendgroup="random",
                                     line={"color": color, "dash": "dash", "width": 1},
                                     hovertemplate="random: %{y:.3f}<extra></extra>"))
    fig.update_layout(title=title or f"top-k overlap ({measure}) vs k",
                      xaxis={"title": "k (heads in each set)"}, yaxis={"title": measure},
                      **_LAYOUT)
    return fig


def retained_figure(curves: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """Retained share of a target score vs fraction of heads pruned (outputs of ``retained_curve``).

    The random expectation 1 - fraction is a dashed line; the shaded band is the 95% band
    of random removal orders of the first curve's target.
    """
    fig = go.Figure()
    first = next(iter(curves.values()), None)
    if first is not None:
        fig.add_trace(go.Scatter(x=first["fraction"], y=first["random_high"], mode="lines",
                                 line={"width": 0}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=first["fraction"], y=first["random_low"], mode="lines",
                                 line={"width": 0}, fill="tonexty", fillcolor="rgba(128,128,128,0.25)",
                                 name="random order (95%)", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=first["fraction"], y=first["random_expected"], mode="lines",
                                 line={"color": "gray", "dash": "dash"}, name="random: 1 - fraction"))
    for i, (name, df) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(
            x=df["fraction"], y=df["retained"], mode="lines+markers", name=name,
            line={"color": _color(i)}, customdata=df["n_removed"],
            hovertemplate=f"{name}<br>pruned %{{x:.0%}} (%{{customdata}} heads)<br>retained %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title or "score retained as heads are pruned (lowest first)",
                      xaxis={"title": "fraction of heads pruned", "tickformat": ".0%"},
                      yaxis={"title": "share of total score retained", "range": [0, 1.05]},
                      **_LAYOUT)
    return fig


def causal_bars(df, *, title: str | None = None) -> go.Figure:
    """Accuracy after ablating k heads, per condition (output of ``causal_check``), with std bars."""
    fig = go.Figure()
    base = df[df["condition"] == "none"]
    for i, cond in enumerate(c for c in df["condition"].unique() if c != "none"):
        sub = df[df["condition"] == cond]
        fig.add_trace(go.Bar(x=[str(k) for k in sub["k"]], y=sub["acc"], name=cond,
                             marker_color=_color(i), customdata=sub["heads"],
                             error_y={"type": "data", "array": sub["acc_std"], "visible": True},
                             hovertemplate=f"{cond}<br>k=%{{x}}<br>acc=%{{y:.3f}}<br>%{{customdata}}<extra></extra>"))
    if len(base):
        fig.add_hline(y=float(base["acc"].iloc[0]), line_dash="dash", line_color="gray",
                      annotation_text="no ablation")
    task = df["task"].iloc[0] if len(df) else ""
    shots = df["shots"].iloc[0] if len(df) else ""
    fig.update_layout(barmode="group", title=title or f"{task} ({shots}-shot): accuracy after ablating k heads",
                      xaxis={"title": "k heads ablated"}, yaxis={"title": df.attrs.get("metric", "acc")},
                      **_LAYOUT)
    return fig


def _color(i: int) -> str:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
               "#17becf", "#bcbd22", "#7f7f7f"]
    return palette[i % len(palette)]


def overlap_figures(scores, agreement, sets, baseline, out) -> None:
    """Write the overlap figures of ``headlens overlap --out`` into ``out`` (HTML files)."""
    from pathlib import Path

    out = Path(out)
    from headlens.analyses.overlap import by_shot, by_task, overlap_sweep, score_label
    from headlens.report.figures import write_html
    
    write_html(agreement_heatmap(agreement, baseline=baseline), out / "overlap-agreement.html")
    write_html(overlap_matrix_heatmap(sets), out / "overlap-jaccard.html")
    tasks = [s for s in scores if s.meta.get("task") is not None and s.meta.get("shots") is not None]
    if len(tasks) >= 2:
        write_html(agreement_dropdown(by_shot(tasks, agreement.method), key_name="shots",
                                      title=f"{agreement.method}: tasks x tasks"),
                   out / "overlap-by-shot.html")
        write_html(agreement_dropdown(by_task(tasks, agreement.method), key_name="task",
                                      title=f"{agreement.method}: shots x shots"),
                   out / "overlap-by-task.html")
    first = scores[0]
    sweeps = {f"{score_label(first)} vs {score_label(s)}": overlap_sweep(first, s) for s in scores[1:8]}
    write_html(overlap_vs_k(sweeps), out / "overlap-vs-k.html")
    targets = [s for s in scores if s.metric in ("prefix_matching", "copying") and (s.values > 0).any()]
    rankings = [s for s in scores if s.metric not in ("prefix_matching", "copying")][:8]
    if targets and rankings:
        from headlens.analyses.overlap import retained_curve

        for t in targets:
            curves = {score_label(r): retained_curve(r, t) for r in rankings}
            write_html(retained_figure(curves, title=f"{score_label(t)} retained as heads are pruned"),
                       out / f"overlap-retained-{t.file_stem()}.html")
