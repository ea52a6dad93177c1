"""Measure the shipped model the way its model card reports it, with headlens itself.

``python -m tools.tiny_card [MODEL] [--n 100] [--out measured.json]`` evaluates, through
the project's own scorer and induction scores (no separate implementation):

* accuracy on the 14 offline tasks at 0, 1 and 5 shots (first ``n`` test queries, seeded
  demonstrations from the train split) and the issue-5 bars;
* prefix matching and ``corrected`` copying over 10 seeds; the best head by min(both);
* pruning: mean 5-shot accuracy after removing the 50% least and the 10% most important
  heads by the aggregate (sum-normalised) 5-shot importance of the 14 tasks.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

BARS = {"mean_5shot": 0.80, "gap_5_minus_0": 0.20, "tasks_5shot_above_chance_plus_0.3": 10,
        "best_prefix_matching": 0.5, "best_copying": 0.5}


def measure(model: str = "tiny-icl", *, n: int = 100, seed: int = 0, shots=(0, 1, 5),
            induction_seeds: int = 10, progress: bool = False) -> dict:
    """Everything the model card reports, as a JSON-able dict (see the module docstring)."""
    from headlens.tasks import synthetic
    from headlens.model.gates import Gates, mask_lowest
    from headlens.analyses.importance import aggregate, task_importance
    from headlens.analyses.induction import copying, prefix_matching
    from headlens.model.loading import load_model
    from headlens.analyses.pruning import TaskEvaluator
    from headlens.tasks import task_names

    t0 = time.time()
    bridge = load_model(model, device="cpu")
    tasks = task_names("offline")
    acc = {t: {} for t in tasks}
    evaluators = {}
    for t in tasks:
        for k in shots:
            evaluators[(t, k)] = TaskEvaluator(bridge, t, k, limit=n, seed=seed)
            acc[t][k] = evaluators[(t, k)](None)
    mean = {k: float(np.mean([acc[t][k] for t in tasks])) for k in shots}
    summary = {f"mean_{k}shot": mean[k] for k in shots}
    summary["gap_5_minus_0"] = mean[5] - mean[0]
    summary["tasks_5shot_above_chance_plus_0.3"] = int(sum(
        acc[t][5] >= synthetic.chance(t) + 0.30 for t in tasks))
    t_acc = time.time() - t0

    seeds = list(range(induction_seeds))
    pm = prefix_matching(bridge, seeds=seeds).values
    cp = copying(bridge, variant="corrected", seeds=seeds).values
    both = np.minimum(pm, cp)
    best = tuple(int(i) for i in np.unravel_index(int(both.argmax()), both.shape))
    summary["best_prefix_matching"] = float(pm.max())
    summary["best_copying"] = float(cp.max())

    agg = aggregate([task_importance(bridge, t, 5, limit=n, seed=seed, progress=progress).heads
                     for t in tasks])
    least = Gates(heads=mask_lowest(agg.values, 0.5))
    most = Gates(heads=mask_lowest(-agg.values, 0.1))
    random_10 = Gates(heads=mask_lowest(np.random.default_rng(seed).random(agg.values.shape), 0.1))
    pruned = {name: float(np.mean([evaluators[(t, 5)](g) for t in tasks]))
              for name, g in [("without_50pct_least_important", least),
                              ("without_10pct_most_important", most),
                              ("without_10pct_random", random_10)]}
    return {
        "model": model, "n_per_task_and_shot": n, "seed": seed, "accuracy": acc, "summary": summary,
        "bars": {k: {"value": summary[k], "bar": v, "met": bool(summary[k] >= v)} for k, v in BARS.items()},
        "prefix_matching": pm.round(3).tolist(), "copying_corrected": cp.round(3).tolist(),
        "best_head": {"layer": best[0], "head": best[1], "prefix_matching": float(pm[best]),
                      "copying_corrected": float(cp[best])},
        "pruning_5shot_mean_acc": {"unpruned": mean[5], **pruned},
        "seconds": round(time.time() - t0, 1), "accuracy_seconds": round(t_acc, 1),
    }


def render_markdown(res: dict) -> str:
    """The model card's "Measured results" tables from a :func:`measure` result."""
    from headlens.tasks import synthetic

    shots = list(next(iter(res["accuracy"].values())))
    lines = ["| task | chance | " + " | ".join(f"{k}-shot" for k in shots) + " |",
             "|---|---|" + "---|" * len(shots)]
    for task, acc in res["accuracy"].items():
        lines.append(f"| {task} | {synthetic.chance(task):.2f} | "
                     + " | ".join(f"{acc[k]:.3f}" for k in shots) + " |")
    s = res["summary"]
    chance = sum(synthetic.chance(t) for t in res["accuracy"]) / len(res["accuracy"])
    lines.append(f"| **mean** | {chance:.3f} | " + " | ".join(f"{s[f'mean_{k}shot']:.3f}" for k in shots) + " |")
    lines += ["", "| bar (issue 5) | measured | required | met |", "|---|---|---|---|"]
    for key, b in res["bars"].items():
        lines.append(f"| {key} | {b['value']:.3f} | >= {b['bar']} | {'yes' if b['met'] else 'NO'} |")
    bh = res["best_head"]
    lines += ["", f"Best induction head (highest min(prefix matching, corrected copying)): "
                  f"L{bh['layer']}H{bh['head']}, prefix matching {bh['prefix_matching']:.3f}, "
                  f"copying {bh['copying_corrected']:.3f}.", "",
              "| 5-shot mean accuracy | value |", "|---|---|"]
    for key, v in res["pruning_5shot_mean_acc"].items():
        lines.append(f"| {key.replace('_', ' ')} | {v:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="tiny-icl")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--markdown", action="store_true", help="print the card's tables instead of JSON")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)  # a 1M-parameter model: threads only add overhead
    res = measure(a.model, n=a.n, seed=a.seed)
    text = json.dumps(res, indent=1)
    if a.out:
        from headlens.results.scores import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    print(render_markdown(res) if a.markdown else text)


if __name__ == "__main__":
    main()
