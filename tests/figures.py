"""Save one figure of every kind headlens draws, computed quickly on a tiny model.

Used by the browser and gallery tests: a results folder like the demo's (``*.html`` +
``*.plotly.json`` with captions and sections), built in a few seconds on a random-weight
checkpoint and the fixture tasks.
"""

from __future__ import annotations

from pathlib import Path

FIXTURE_TASKS = Path(__file__).parent / "fixtures" / "tasks"
SAMPLE_TEXTS = Path(__file__).parent.parent / "data" / "layers_sample.txt"

# name -> (section, kind) of every figure save_tiny_figures writes
FIGURES = {
    "induction-prefix": ("Induction heads", "head heatmap"),
    "induction-panels": ("Induction heads", "two-panel heatmap"),
    "importance-heads": ("Task importance", "heatmap with a task x shots dropdown"),
    "importance-ffn": ("Task importance", "FFN heatmap"),
    "accuracy": ("Overview", "grouped bars"),
    "prune-heads": ("Pruning", "curve with random band"),
    "prune-grid": ("Pruning", "annotated grid heatmap"),
    "overlap-tasks": ("Overlap", "agreement matrix with a dropdown"),
    "overlap-induction": ("Overlap", "overlap vs k"),
    "overlap-retained": ("Overlap", "retained-score curve"),
    "layers-distance": ("Layer pruning", "distance heatmap"),
    "layers-loss": ("Layer pruning", "loss curves"),
}


def save_tiny_figures(model, out: str | Path, *, tasks=("copa", "piqa"), shots=(0, 1)) -> Path:
    """Compute small versions of every analysis on ``model`` and save their figures into ``out``."""
    import pandas as pd

    from headlens.analyses import induction
    from headlens.analyses import overlap as ov
    from headlens.analyses.importance import aggregate, task_importance
    from headlens.analyses.layers import layer_distances, pruning_curve as layer_curve
    from headlens.report import importance as pimp
    from headlens.report import layers as play
    from headlens.report import overlap as pov
    from headlens.report.figures import head_heatmap, save_figure
    from headlens.report.induction import induction_panels
    from headlens.analyses.pruning import TaskEvaluator, pruning_curve, pruning_grid
    from headlens.tasks.texts import load_texts

    out = Path(out)
    data = str(FIXTURE_TASKS)
    prefix = induction.prefix_matching(model, seeds=[0, 1], progress=False)
    copy = induction.copying(model, variant="corrected", seeds=[0], progress=False)
    save_figure(head_heatmap(prefix), out, "induction-prefix", caption="prefix matching, 2 seeds",
                section="Induction heads", order=20)
    save_figure(induction_panels(prefix, copy), out, "induction-panels", caption="prefix matching | copying",
                section="Induction heads", order=21)

    imps = {(t, k): task_importance(model, t, k, limit=3, data_dir=data, cache=False, progress=False)
            for t in tasks for k in shots}
    heads = [v.heads for v in imps.values()]
    save_figure(pimp.importance_heatmaps(heads), out, "importance-heads", caption="dropdown: task x shots",
                section="Task importance", order=30)
    save_figure(pimp.ffn_heatmap([v.ffn for v in imps.values()]), out, "importance-ffn", caption="FFN",
                section="Task importance", order=32)
    acc = pd.DataFrame([{"task": t, "shots": k, "acc": 0.5 + 0.1 * i} for i, (t, k) in enumerate(imps)])
    save_figure(pimp.accuracy_bars(acc, chance={t: 0.5 for t in tasks}), out, "accuracy",
                caption="accuracy bars", section="Overview", order=10)

    agg = aggregate([imps[(t, shots[-1])].heads for t in tasks])
    agg_ffn = aggregate([imps[(t, shots[-1])].ffn for t in tasks])
    ev = TaskEvaluator(model, tasks[0], shots[-1], limit=4, data_dir=data)
    curve = pruning_curve(agg, ev, percents=[0, 25, 50, 75], progress=False)
    save_figure(pimp.pruning_curves({"heads": curve}, chance=0.5), out, "prune-heads",
                caption="pruning curve", section="Pruning", order=40)
    grid = pruning_grid(agg, agg_ffn, ev, head_percents=[0, 50], ffn_percents=[0, 50], progress=False)
    save_figure(pimp.pruning_grid_heatmap(grid), out, "prune-grid", caption="grid", section="Pruning", order=42)

    save_figure(pov.agreement_dropdown(ov.by_shot(heads), key_name="shots"), out, "overlap-tasks",
                caption="agreement", section="Overlap", order=50)
    save_figure(pov.overlap_vs_k({"importance vs prefix": ov.overlap_sweep(agg, prefix)}), out,
                "overlap-induction", caption="overlap vs k", section="Overlap", order=52)
    save_figure(pov.retained_figure({"prefix matching": ov.retained_curve(agg, prefix)}), out,
                "overlap-retained", caption="retained", section="Overlap", order=53)

    texts = load_texts(SAMPLE_TEXTS, 8)
    dist = layer_distances(model, texts)
    save_figure(play.distance_heatmap(dist), out, "layers-distance", caption="d(l, n)",
                section="Layer pruning", order=60)
    frame = layer_curve(model, texts, ns=list(range(model.cfg.n_layers)), distances=dist)
    save_figure(play.pruning_curves(frame, metric="loss"), out, "layers-loss", caption="loss",
                section="Layer pruning", order=61)
    return out
