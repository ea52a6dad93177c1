"""The whole study on the shipped model, offline: ``headlens demo``.

Runs, on ``tiny-icl`` (or any model) and the 14 offline tasks: accuracy at 0/1/5 shots,
induction scores, head and FFN importance for every task x shots, pruning curves against
random rankings, the head x FFN grid, overlap (rank agreement, top-k overlap with induction
heads, retained induction score, a causal ablation check), and layer pruning (angular
distances, removal, LoRA healing); writes every figure and one HTML report into ``out``.
Every step is cached, so a second run is fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. Defaults keep it under 10 minutes on 2 CPU cores."""

    model: str = "tiny-icl"
    tasks: str = "offline"
    shots: tuple[int, ...] = (0, 1, 5)
    importance_limit: int = 48
    eval_limit: int = 64
    prune_limit: int = 32
    induction_seeds: int = 8
    prune_shots: int = 5
    causal_ks: tuple[int, ...] = (1, 2, 4)
    layer_texts: int = 64
    heal_steps: int = 60
    seed: int = 0
    variant: str = "bansal"
    device: str | None = None
    extra: dict = field(default_factory=dict)


def _step(name: str, log: Callable[[str], None]):
    class _Timer:
        def __enter__(self):
            self.t = time.perf_counter()
            log(f"[demo] {name} ...")
            return self

        def __exit__(self, *exc):
            if exc[0] is None:
                log(f"[demo] {name}: {time.perf_counter() - self.t:.1f}s")

    return _Timer()


def run_demo(out: str | Path = "headlens-out", config: DemoConfig | None = None, *,
             log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Run every analysis on ``config.model`` and write figures + ``report.html`` into ``out``.

    Returns:
        The path of the report.
    """
    import torch

    cfg = config or DemoConfig()
    threads = torch.get_num_threads()
    try:
        return _run(out, cfg, log, progress)
    finally:
        torch.set_num_threads(threads)


def _run(out, cfg: DemoConfig, log, progress: bool) -> Path:
    import torch

    from headlens.results.cache import CacheKey, ResultCache
    from headlens.analyses.importance import aggregate, task_importance
    from headlens.model.fingerprint import model_key
    from headlens.model.loading import load_model
    from headlens.tasks.sources import data_fingerprint
    from headlens.report.figures import head_heatmap, save_figure
    from headlens.report import importance as pimp
    from headlens.report import overlap as pov
    from headlens.analyses.pruning import TaskEvaluator, pruning_curve, pruning_grid
    from headlens.report.html import build_report
    from headlens.tasks import get_task, task_names

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = ResultCache()
    t0 = time.perf_counter()
    model = load_model(cfg.model, device=cfg.device)
    if sum(p.numel() for p in model.parameters()) < 20_000_000 and next(model.parameters()).device.type == "cpu":
        # a small model's matrices are too small for intra-op threads to pay off; with
        # two threads on a busy 2-core machine one evaluation took 1.1 s instead of 15 ms
        torch.set_num_threads(1)
    names = task_names(cfg.tasks) if cfg.tasks in ("offline", "study", "all") else cfg.tasks.split(",")
    tasks = [get_task(n) for n in names]
    base_key = dict(model=model_key(model).part(), seed=cfg.seed,
                    tasks=[data_fingerprint(t, {t.train_split, t.eval_split, t.importance_split}) for t in tasks])
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    desc = f"{cfg.model} ({L} layers x {H} heads)"

    def cached(kind, compute, **parts):  # the demo's own summaries (means over tasks, tables)
        return cache.get_or_compute(CacheKey.make(f"demo-{kind}", **base_key, **parts), compute)

    # 1. accuracy at every shot count --------------------------------------------------
    with _step("accuracy", log):
        def acc_rows():
            from headlens.analyses.scoring import evaluate

            rows = []
            for t in tasks:
                for k in cfg.shots:
                    r = evaluate(model, t, k, limit=cfg.eval_limit, seed=cfg.seed, progress=False)
                    rows.append({"task": t.name, "shots": k, "acc": r.metrics["acc"], "n": r.metrics["n"]})
            return rows

        acc = pd.DataFrame(cached("accuracy", acc_rows, limit=cfg.eval_limit, shots=list(cfg.shots)))
        acc.to_csv(out / "accuracy.csv", index=False)
        chance = _chance(tasks)
        save_figure(pimp.accuracy_bars(acc, chance=chance), out, "accuracy", section="Overview", order=10,
                    caption=f"{desc}: accuracy (argmax of summed choice log-probabilities) on the first "
                            f"{cfg.eval_limit} test queries of each task at {', '.join(map(str, cfg.shots))} "
                            f"shots; demonstrations drawn with seed {cfg.seed}; black marks: chance.")

    # 2. induction heads ------------------------------------------------------------------
    with _step("induction", log):
        from headlens.analyses.induction import InductionOptions, induction_scores

        seeds = list(range(cfg.induction_seeds))
        ind_options = InductionOptions(seeds=cfg.induction_seeds)
        ind = {}
        for order, (metric, score, variant) in enumerate([("prefix_matching", "prefix_matching", None),
                                                          ("copying_corrected", "copying", "corrected"),
                                                          ("copying_eigen", "copying", "eigen"),
                                                          ("copying_paper", "copying", "paper")]):
            ind[metric] = induction_scores(model, score, variant, ind_options, cache=cache)  # type: ignore[arg-type]
            ind[metric].save(out / "induction" / f"{metric}.json")
            save_figure(head_heatmap(ind[metric]), out, f"induction-{metric}", section="Induction heads",
                        order=20 + order, caption=_induction_caption(metric, desc, seeds))

    # 3. importance for every task x shots --------------------------------------------------
    with _step("importance", log):
        imps = {}
        for t in tasks:
            for k in cfg.shots:
                imps[(t.name, k)] = task_importance(model, t, k, limit=cfg.importance_limit, seed=cfg.seed,
                                                    variant=cfg.variant, cache=cache, progress=False)
                imps[(t.name, k)].heads.save(out / "importance")
        heads = [v.heads for v in imps.values()]
        agg = {k: aggregate([imps[(t.name, k)].heads for t in tasks]) for k in cfg.shots}
        agg_ffn = {k: aggregate([imps[(t.name, k)].ffn for t in tasks]) for k in cfg.shots}
        for k, a in agg.items():
            a.with_values(a.values, shots=k).save(out / "importance" / f"aggregate-{k}shot.json")
        save_figure(pimp.importance_heatmaps(heads), out, "importance-heads", section="Task importance",
                    order=30, caption=f"{desc}: head importance ({cfg.variant}: mean over tokens of |a.g|, the "
                    f"per-token gradient of the gold-continuation loss w.r.t. a gate on each head's output), "
                    f"{cfg.importance_limit} train queries per task; dropdown: task x shots; each map scaled to its max.")
        save_figure(pimp.importance_heatmaps([a.with_values(a.values, shots=k) for k, a in agg.items()],
                                             title="Aggregate head importance"), out, "importance-aggregate",
                    section="Task importance", order=31,
                    caption=f"{desc}: mean over the {len(tasks)} tasks of head importance after normalising "
                            f"each task's map to sum 1 (raw means let large-gradient tasks dominate); one map per shot count.")
        save_figure(pimp.ffn_heatmap([v.ffn for v in imps.values()]), out, "importance-ffn",
                    section="Task importance", order=32,
                    caption=f"{desc}: FFN importance (gradient gate on each block's MLP output), rows = task x shots, "
                            f"each row scaled to its max.")

    # 4. pruning curves ------------------------------------------------------------------------
    with _step("pruning", log):
        k = cfg.prune_shots
        evaluators = {t.name: TaskEvaluator(model, t, k, limit=cfg.prune_limit, seed=cfg.seed) for t in tasks}

        def mean_acc(gates):
            return float(np.mean([ev(gates) for ev in evaluators.values()]))

        def curves():
            head_curve = pruning_curve(agg[k], mean_acc, what="heads", progress=progress)
            ffn_pcts = sorted({round(100 * i / L) for i in range(L)})
            ffn_curve = pruning_curve(agg_ffn[k], mean_acc, what="ffn", percents=ffn_pcts, progress=progress)
            grid = pruning_grid(agg[k], agg_ffn[k], mean_acc, head_percents=range(0, 80, 10),
                                ffn_percents=[p for p in ffn_pcts if p <= 50], progress=progress)
            return {"heads": head_curve.to_dict("records"), "ffn": ffn_curve.to_dict("records"),
                    "grid": grid.to_dict("split")}

        res = cached("pruning", curves, shots=k, limit=cfg.prune_limit, variant=cfg.variant,
                     importance_limit=cfg.importance_limit)
        head_curve, ffn_curve = pd.DataFrame(res["heads"]), pd.DataFrame(res["ffn"])
        g = res["grid"]
        grid = pd.DataFrame(g["data"], index=pd.Index(g["index"], name="heads_percent"),
                            columns=pd.Index(g["columns"], name="ffn_percent"))
        head_curve.to_csv(out / "prune-heads.csv", index=False)
        ffn_curve.to_csv(out / "prune-ffn.csv", index=False)
        grid.to_csv(out / "prune-grid.csv")
        ch = float(np.mean(list(chance.values())))
        save_figure(pimp.pruning_curves({"heads, aggregate ranking": head_curve}, chance=ch,
                                        title=f"Mean accuracy over {len(tasks)} tasks ({k}-shot) vs % heads removed"),
                    out, "prune-heads", section="Pruning", order=40,
                    caption=f"{desc}: heads removed lowest-aggregate-importance first (gates at 0), mean accuracy over "
                            f"the tasks' first {cfg.prune_limit} test queries at {k} shots; dotted line and band: "
                            f"3 random rankings (mean +/- 1 sd). Rankings are not re-estimated after pruning.")
        save_figure(pimp.pruning_curves({"FFNs, aggregate ranking": ffn_curve}, chance=ch,
                                        title=f"Mean accuracy ({k}-shot) vs % FFNs removed"),
                    out, "prune-ffn", section="Pruning", order=41,
                    caption=f"{desc}: whole FFN blocks removed lowest-aggregate-importance first; random band as above.")
        save_figure(pimp.pruning_grid_heatmap(grid), out, "prune-grid", section="Pruning", order=42,
                    caption=f"{desc}: mean accuracy ({k}-shot) with p% of heads and q% of FFNs removed together "
                            f"by the aggregate rankings.")

    # 5. overlap --------------------------------------------------------------------------------
    with _step("overlap", log):
        from headlens.analyses import overlap as ov

        by_shot = ov.by_shot(heads)
        save_figure(pov.agreement_dropdown(by_shot, key_name="shots", title="Spearman rank agreement between tasks"),
                    out, "overlap-tasks", section="Overlap", order=50,
                    caption=f"{desc}: Spearman correlation of head-importance SCORES between every pair of tasks "
                            f"(dropdown: shots). The reference correlated argsort vectors, which hides agreement.")
        if len(cfg.shots) > 1:
            save_figure(pov.agreement_dropdown(ov.by_task(heads), key_name="task",
                                               title="Spearman rank agreement between shot counts"),
                        out, "overlap-shots", section="Overlap", order=51,
                        caption=f"{desc}: Spearman correlation of head importance across shot counts, per task (dropdown).")
        k = cfg.prune_shots
        sweeps = {f"important vs {m}": ov.overlap_sweep(agg[k], ind[m]) for m in ("prefix_matching", "copying_corrected")}
        save_figure(pov.overlap_vs_k(sweeps, title=f"Top-k overlap: important heads ({k}-shot aggregate) vs induction heads"),
                    out, "overlap-induction", section="Overlap", order=52,
                    caption=f"{desc}: Jaccard overlap of the top-k aggregate-important heads and the top-k heads by "
                            f"prefix matching / corrected copying; hover: hypergeometric p-value of the intersection "
                            f"under random choice; dashed: random expectation.")
        ret = {m: ov.retained_curve(agg[k], ind[m]) for m in ("prefix_matching", "copying_corrected")}
        save_figure(pov.retained_figure(ret, title="Induction score retained as heads are pruned"), out,
                    "overlap-retained", section="Overlap", order=53,
                    caption=f"{desc}: share of the total prefix-matching / copying score kept when heads are removed "
                            f"lowest aggregate importance first, against random removal (line: expectation; band: 95%).")

        def causal():
            frames = [ov.causal_check(model, t.name, k, ind["prefix_matching"], imps[(t.name, k)].heads,
                                      list(cfg.causal_ks), limit=cfg.prune_limit, seed=cfg.seed)
                      for t in tasks]
            return pd.concat(frames).to_dict("records")

        cc = pd.DataFrame(cached("causal", causal, shots=k, ks=list(cfg.causal_ks), limit=cfg.prune_limit,
                                 importance_limit=cfg.importance_limit))
        cc.to_csv(out / "causal-check.csv", index=False)
        mean_cc = cc.groupby(["k", "condition"], as_index=False).agg(acc=("acc", "mean"), acc_std=("acc", "std"))
        mean_cc["task"], mean_cc["shots"], mean_cc["heads"] = "mean", k, ""
        save_figure(pov.causal_bars(mean_cc, title=f"Ablating induction heads vs random vs least important ({k}-shot)"),
                    out, "overlap-causal", section="Overlap", order=54,
                    caption=f"{desc}: mean accuracy over the tasks after zeroing the top-k prefix-matching heads, k random "
                            f"heads (3 draws), or the k least important heads (each task's own ranking).")

    # 6. layer pruning ------------------------------------------------------------------------
    with _step("layers", log):
        from headlens.analyses import layers as lay
        from headlens.report import layers as play
        from headlens.tasks.texts import load_texts

        texts = load_texts(None, cfg.layer_texts, seed=cfg.seed)
        dist = lay.cached_layer_distances(model, None, lay.DistancesOptions(n_texts=cfg.layer_texts, seed=cfg.seed),
                                          cache=cache)
        (out / "layers").mkdir(exist_ok=True)
        import json

        (out / "layers" / "distances.json").write_text(json.dumps(dist.to_dict()))
        save_figure(play.distance_heatmap(dist), out, "layers-distance", section="Layer pruning", order=60,
                    caption=f"{desc}: angular distance arccos(cos)/pi between the residual stream entering layer l "
                            f"and layer l+n at each text's last real token, mean over {len(texts)} texts of the "
                            f"embedded corpus; each row scaled to its max; line: l*(n), the most similar block.")

        def layer_curve():
            heal_texts = load_texts(None, 4 * cfg.layer_texts, seed=cfg.seed + 1)
            df = lay.pruning_curve(model, texts, ns=list(range(0, L)), heal=cfg.heal_steps > 0,
                                   heal_texts=heal_texts, heal_kwargs={"steps": cfg.heal_steps},
                                   distances=dist)
            return df.to_dict("records")

        lc = pd.DataFrame(cached("layer-curve", layer_curve, texts=cfg.layer_texts, heal=cfg.heal_steps))
        lc.to_csv(out / "layers" / "curve.csv", index=False)
        save_figure(play.pruning_curves(lc, metric="loss"), out, "layers-loss", section="Layer pruning", order=61,
                    caption=f"{desc}: next-token loss on the texts vs fraction of layers removed, block chosen by "
                            f"angular distance vs the deepest block (keeping the last layer); dashed: after "
                            f"{cfg.heal_steps} steps of LoRA healing on the FFN projections.")

    report = build_report(out, title=f"headlens demo: {cfg.model}",
                          intro=f"Everything below was computed offline on {desc} by `headlens demo` "
                                f"in {time.perf_counter() - t0:.0f} s (cached steps are reused).")
    log(f"[demo] total {time.perf_counter() - t0:.1f}s")
    return report


def _chance(tasks) -> dict[str, float]:
    """Chance accuracy per task: 1 / number of choices of its first test example."""
    out = {}
    for t in tasks:
        try:
            ex = t.examples(t.eval_split)[0]
            out[t.name] = 1.0 / len(ex.choices)
        except Exception:  # noqa: BLE001 - chance is decoration only
            continue
    return out


def _induction_caption(metric: str, desc: str, seeds) -> str:
    n = len(seeds)
    text = {
        "prefix_matching": "prefix-matching score: attention from each position in repeats 2-4 of [BOS]+S+S+S+S to "
                           "the token after the earlier copies of the current token",
        "copying_corrected": "copying score (corrected): what the head actually writes (its attention-weighted OV "
                             "output in the real forward pass) projected to the vocabulary",
        "copying_eigen": "copying score (eigen, weights only): sum(lambda)/sum(|lambda|) of the full OV circuit",
        "copying_paper": "copying score (paper variant, faithful to the reference incl. its embedding-level inputs)",
    }[metric]
    return f"{desc}: {text}; random unique-token sequences S of length 2*seed+25, mean over {n} seeds."
