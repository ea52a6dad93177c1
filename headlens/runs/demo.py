"""The whole study in one command: ``headlens demo``.

Runs, on one model and a task group (default: the shipped ``tiny-icl`` and the 14 offline
tasks): accuracy at 0/1/5 shots, induction scores, head and FFN importance for every task x
shots, pruning curves against a random baseline (exact or >= 50 draws per point) and the
FFN removal oracle, the head x FFN grid, overlap (rank agreement across tasks and shots,
top-k overlap with induction heads, retained induction score, a causal ablation check), and
layer pruning (angular distances, removal, LoRA healing on disjoint texts); writes every
figure and one HTML report into ``out``.

Every unit of work (one task x shots, one induction score, one pruning point, one layer
block) is its own cache entry, so a killed run resumes where it stopped and a finished run
reruns from the cache in seconds. A preset sizes the run to the model: ``tiny`` for the
shipped model, ``real`` for a pretrained model such as ``smollm2-135m`` (about 40 minutes
on 2 CPU cores from a cold cache); ``auto`` picks by parameter count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from headlens.errors import HeadlensError, closest

Preset = Literal["auto", "tiny", "real"]
PRESETS: tuple[str, ...] = get_args(Preset)
REAL_MODEL_PARAMS = 20_000_000  # auto: models at least this large get the real preset


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs (one frozen record; it is printed into the report).

    Attributes:
        model: any ``--model`` value; tasks: a task group or comma list.
        shots: shot counts for accuracy and importance.
        eval_limit / importance_limit: test / train queries per task and shot count.
        induction_seeds: seeds of the repeated random-token sequences.
        prune_shots: shot count of every pruning and causal evaluation.
        prune_tasks: tasks evaluated at each pruning point (None: all demo tasks).
        prune_limit: test queries per pruning task and point.
        head_percents / ffn_percents: pruning points (ffn None: every whole FFN count).
        grid_head_percents / grid_ffn_percents: the heads x FFNs grid.
        random_draws / exact_limit: random baseline per point (all C(n, k) subsets when
            <= exact_limit, else random_draws seeded draws).
        causal_ks: numbers of heads ablated in the causal check.
        layer_texts / layer_max_len: texts per part (calibration, evaluation; healing gets
            4x) and tokens per text for the layer analyses.
        layer_ns: block sizes on the loss curve (None: 0 .. L-1).
        heal_ns / heal_steps: block sizes healed (None: all) and LoRA steps per healing.
        seed: demonstrations, texts, random draws; variant: importance variant.
        preset: the preset these values came from (documentation only).
    """

    model: str = "tiny-icl"
    tasks: str = "offline"
    shots: tuple[int, ...] = (0, 1, 5)
    eval_limit: int = 64
    importance_limit: int = 48
    induction_seeds: int = 8
    prune_shots: int = 5
    prune_tasks: str | None = None
    prune_limit: int = 16
    head_percents: tuple[int, ...] = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90)
    ffn_percents: tuple[int, ...] | None = None
    grid_head_percents: tuple[int, ...] = (0, 10, 20, 30, 40, 50, 60, 70)
    grid_ffn_percents: tuple[int, ...] = (0, 50)
    random_draws: int = 50
    exact_limit: int = 2000
    causal_ks: tuple[int, ...] = (1, 2, 4)
    layer_texts: int = 64
    layer_max_len: int | None = None
    layer_ns: tuple[int, ...] | None = None
    heal_ns: tuple[int, ...] | None = None
    heal_steps: int = 60
    seed: int = 0
    variant: str = "bansal"
    device: str | None = None
    preset: str = "tiny"

    def __post_init__(self) -> None:
        for name in ("eval_limit", "importance_limit", "induction_seeds", "prune_limit", "random_draws",
                     "layer_texts"):
            if getattr(self, name) < 1:
                raise HeadlensError(f"demo: {name} must be >= 1, got {getattr(self, name)}")
        if self.heal_steps < 0 or self.exact_limit < 0:
            raise HeadlensError("demo: heal_steps and exact_limit must be >= 0")
        if not self.shots or any(k < 0 for k in self.shots):
            raise HeadlensError(f"demo: shots must be non-negative integers, got {self.shots}")
        for name in ("head_percents", "grid_head_percents", "grid_ffn_percents", "ffn_percents"):
            values = getattr(self, name)
            if values is not None and any(not 0 <= p < 100 for p in values):
                raise HeadlensError(f"demo: {name} must lie in 0..99, got {values}")
        if self.preset not in PRESETS:
            raise HeadlensError(f"demo: preset {self.preset!r} unknown; {closest(self.preset, PRESETS)}")


# The real-model preset: sized from measurements of smollm2-135m on 2 CPU cores (README,
# "Real model"): a pruning evaluation of 4 tasks x 12 five-shot queries takes ~2.5 s, so
# 50 draws at 4 points per curve fit; texts are cut to 128 tokens for the layer analyses.
REAL = dict(eval_limit=16, importance_limit=16, induction_seeds=4,
            prune_tasks="letter_first,number_larger,label_size,recall_value", prune_limit=12,
            head_percents=(0, 20, 40, 60, 80), ffn_percents=(0, 10, 20),
            grid_head_percents=(0, 40, 70), grid_ffn_percents=(0, 10, 20),
            causal_ks=(1, 4, 9), layer_texts=32, layer_max_len=128,
            layer_ns=(0, 3, 6, 9, 12, 15), heal_ns=(10,), heal_steps=30, preset="real")


def resolve_config(preset: str = "auto", *, n_params: int | None = None, **overrides: Any) -> DemoConfig:
    """A preset's :class:`DemoConfig` with ``overrides`` (None values are ignored).

    ``auto`` is ``real`` for models of >= 20 M parameters (``n_params``), else ``tiny``.
    """
    if preset not in PRESETS:
        raise HeadlensError(f"demo: --preset {preset!r} unknown; {closest(preset, PRESETS)}")
    if preset == "auto":
        preset = "real" if (n_params or 0) >= REAL_MODEL_PARAMS else "tiny"
    base = dict(REAL) if preset == "real" else {"preset": "tiny"}
    known = {f.name for f in fields(DemoConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise HeadlensError(f"demo: unknown option(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return DemoConfig(**base)


# ----------------------------------------------------------------------------- the run


class MeanEvaluator:
    """Mean accuracy over several tasks' evaluators through the same gates (``.key`` seeds draws)."""

    def __init__(self, evaluators: Sequence[Any]):
        self.evaluators = list(evaluators)
        self.key = {"mean_of": [ev.key for ev in self.evaluators]}

    def __call__(self, gates) -> float:
        return float(np.mean([ev(gates) for ev in self.evaluators]))


@dataclass
class Run:
    """What every section shares: the model, config, output folder, cache and results so far."""

    model: Any
    cfg: DemoConfig
    out: Path
    cache: Any
    tasks: list
    base_key: dict
    desc: str
    progress: Any
    log: Callable[[str], None]
    results: dict

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.cfg.n_heads)

    def cached(self, kind: str, compute: Callable[[], Any], weight: float = 0, **parts: Any) -> Any:
        """One cached unit of work; ``weight`` advances the progress bar when it is done."""
        from headlens.results.cache import CacheKey

        value = self.cache.get_or_compute(CacheKey.make(f"demo-{kind}", **self.base_key, **parts), compute)
        self.progress.update(weight)
        return value

    def figure(self, fig, name: str, *, section: str, order: int, caption: str) -> None:
        from headlens.report.figures import save_figure

        save_figure(fig, self.out, name, section=section, order=order, caption=caption)


def _weights(cfg: DemoConfig, n_tasks: int, n_prune_tasks: int, n_layers: int) -> dict[str, float]:
    """Planned cost of each section in query-forward units (for the progress bar's ETA)."""
    shots_cost = sum(1 + k for k in cfg.shots)
    prune_eval = n_prune_tasks * cfg.prune_limit * (1 + cfg.prune_shots)
    heads_points = len([p for p in cfg.head_percents if p > 0])
    ffn_points = len([p for p in (cfg.ffn_percents or range(1, 10)) if p > 0])
    layer_ns = cfg.layer_ns if cfg.layer_ns is not None else range(n_layers)
    heal_ns = cfg.heal_ns if cfg.heal_ns is not None else layer_ns
    return {
        "accuracy": n_tasks * cfg.eval_limit * shots_cost,
        "induction": 60 * cfg.induction_seeds * 4,
        "importance": 3 * n_tasks * cfg.importance_limit * shots_cost,
        "pruning": prune_eval * ((heads_points + ffn_points) * min(cfg.random_draws, 60) + n_layers + 20),
        "overlap": prune_eval * (1 + 5 * len(cfg.causal_ks)) + 1,
        "layers": cfg.layer_texts * 4 * (1 + 2 * len(layer_ns))
                  + 8 * cfg.heal_steps * 12 * 2 * len([n for n in heal_ns if n > 0]),
    }


def run_demo(out: str | Path = "headlens-out", config: DemoConfig | None = None, *,
             log: Callable[[str], None] = print, progress: bool = True,
             preset: str | None = None, overrides: dict | None = None) -> Path:
    """Run every analysis and write figures + ``report.html`` into ``out``.

    Args:
        config: the full configuration; or leave it None and give ``preset`` (``auto``,
            ``tiny``, ``real``) plus ``overrides`` (any :class:`DemoConfig` field), resolved
            once the model is loaded (``auto`` needs its size).

    Returns:
        The path of the report.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(Path(out), config, preset or "auto", overrides or {}, log, progress)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, cfg: DemoConfig | None, preset: str, overrides: dict, log, progress: bool) -> Path:
    import torch
    from tqdm.auto import tqdm

    from headlens.model.fingerprint import model_key
    from headlens.model.loading import load_model
    from headlens.report.html import build_report
    from headlens.results.cache import ResultCache
    from headlens.tasks import expand_tasks, get_task
    from headlens.tasks.sources import data_fingerprint

    t0 = time.perf_counter()
    model_name = cfg.model if cfg is not None else overrides.get("model") or "tiny-icl"
    device = cfg.device if cfg is not None else overrides.get("device")
    model = load_model(model_name, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    if cfg is None:
        cfg = resolve_config(preset, n_params=n_params, **{**overrides, "model": model_name})
    if n_params < REAL_MODEL_PARAMS and next(model.parameters()).device.type == "cpu":
        # a small model's matrices are too small for intra-op threads to pay off; with
        # two threads on a busy 2-core machine one evaluation took 1.1 s instead of 15 ms
        torch.set_num_threads(1)
    tasks = [get_task(n) for n in expand_tasks(cfg.tasks, option="demo tasks")]
    prune_names = expand_tasks(cfg.prune_tasks, option="demo prune_tasks") if cfg.prune_tasks else [t.name for t in tasks]
    out.mkdir(parents=True, exist_ok=True)
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    base_key = dict(model=model_key(model).part(), seed=cfg.seed,
                    tasks=[data_fingerprint(t, {t.train_split, t.eval_split, t.importance_split}) for t in tasks])
    weights = _weights(cfg, len(tasks), len(prune_names), L)
    bar = tqdm(total=float(sum(weights.values())), desc="demo", unit="u", disable=not progress,
               bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}]")
    run = Run(model=model, cfg=cfg, out=out, cache=ResultCache(), tasks=tasks, base_key=base_key,
              desc=f"{cfg.model} ({L} layers x {H} heads)", progress=bar, log=log,
              results={"prune_tasks": prune_names})
    log(f"[demo] {run.desc}, preset {cfg.preset}: {len(tasks)} tasks, shots {list(cfg.shots)}")
    try:
        for name, section in SECTIONS:
            start, done = time.perf_counter(), bar.n
            section(run)
            bar.n = done + weights[name]  # sections whose units were cached skip ahead
            bar.refresh()
            log(f"[demo] {name}: {time.perf_counter() - start:.1f}s")
    finally:
        bar.close()
    settings = ", ".join(f"{k}={v}" for k, v in asdict(cfg).items() if k not in ("device",))
    report = build_report(out, title=f"headlens demo: {cfg.model}",
                          intro=f"Everything below was computed offline on {run.desc} by `headlens demo` "
                                f"(preset {cfg.preset}) in {time.perf_counter() - t0:.0f} s (cached steps are "
                                f"reused). Settings: {settings}.")
    (out / "demo-config.json").write_text(json.dumps({**asdict(cfg), "seconds": time.perf_counter() - t0},
                                                     indent=1, default=str) + "\n")
    log(f"[demo] total {time.perf_counter() - t0:.1f}s")
    return report


# ----------------------------------------------------------------------------- sections


def accuracy_section(run: Run) -> None:
    from headlens.analyses.scoring import evaluate
    from headlens.report import importance as pimp

    cfg = run.cfg
    rows = []
    for t in run.tasks:
        for k in cfg.shots:
            def one(t=t, k=k):
                r = evaluate(run.model, t, k, limit=cfg.eval_limit, seed=cfg.seed, progress=False)
                return {"task": t.name, "shots": k, "acc": r.metrics["acc"], "n": r.metrics["n"]}

            rows.append(run.cached("accuracy", one, weight=cfg.eval_limit * (1 + k), task=t.name, shots=k,
                                   limit=cfg.eval_limit))
    acc = pd.DataFrame(rows)
    acc.to_csv(run.out / "accuracy.csv", index=False)
    run.results["accuracy"] = acc
    run.results["chance"] = _chance(run.tasks)
    run.figure(pimp.accuracy_bars(acc, chance=run.results["chance"]), "accuracy", section="Overview", order=10,
               caption=f"{run.desc}: accuracy (argmax of summed choice log-probabilities) on the first "
                       f"{cfg.eval_limit} test queries of each task at {', '.join(map(str, cfg.shots))} shots; "
                       f"demonstrations drawn with seed {cfg.seed}, never sharing the query's input; black marks: chance.")


INDUCTION_SCORES = (("prefix_matching", "prefix_matching", None), ("copying_corrected", "copying", "corrected"),
                    ("copying_eigen", "copying", "eigen"), ("copying_paper", "copying", "paper"),
                    ("attention_concentration", "attention_concentration", None))


def induction_section(run: Run) -> None:
    from headlens.analyses.induction import InductionOptions, induction_scores
    from headlens.report.figures import head_heatmap

    options = InductionOptions(seeds=run.cfg.induction_seeds)
    ind = {}
    for order, (metric, score, variant) in enumerate(INDUCTION_SCORES):
        ind[metric] = induction_scores(run.model, score, variant, options, cache=run.cache)  # type: ignore[arg-type]
        run.progress.update(60 * run.cfg.induction_seeds * 4 / len(INDUCTION_SCORES))
        ind[metric].save(run.out / "induction" / f"{metric}.json")
        run.figure(head_heatmap(ind[metric]), f"induction-{metric}", section="Induction heads", order=20 + order,
                   caption=_induction_caption(metric, run.desc, run.cfg.induction_seeds))
    run.results["induction"] = ind


def importance_section(run: Run) -> None:
    from headlens.analyses.importance import aggregate, task_importance
    from headlens.report import importance as pimp

    cfg = run.cfg
    imps = {}
    for t in run.tasks:
        for k in cfg.shots:
            imps[(t.name, k)] = task_importance(run.model, t, k, limit=cfg.importance_limit, seed=cfg.seed,
                                                variant=cfg.variant, cache=run.cache, progress=False)
            run.progress.update(3 * cfg.importance_limit * (1 + k))
            imps[(t.name, k)].heads.save(run.out / "importance")
    heads = [v.heads for v in imps.values()]
    agg = {k: aggregate([imps[(t.name, k)].heads for t in run.tasks]) for k in cfg.shots}
    agg_ffn = {k: aggregate([imps[(t.name, k)].ffn for t in run.tasks]) for k in cfg.shots}
    for k, a in agg.items():
        a.with_values(a.values, shots=k).save(run.out / "importance" / f"aggregate-{k}shot.json")
    run.results.update(importance=imps, heads=heads, aggregate=agg, aggregate_ffn=agg_ffn)
    run.figure(pimp.importance_heatmaps(heads), "importance-heads", section="Task importance", order=30,
               caption=f"{run.desc}: head importance ({cfg.variant}: mean over tokens of |a.g|, the per-token "
                       f"gradient of the gold-continuation loss w.r.t. a gate on each head's output), "
                       f"{cfg.importance_limit} train queries per task; dropdown: task x shots; each map scaled to its max.")
    run.figure(pimp.importance_heatmaps([a.with_values(a.values, shots=k) for k, a in agg.items()],
                                        title="Aggregate head importance"), "importance-aggregate",
               section="Task importance", order=31,
               caption=f"{run.desc}: mean over the {len(run.tasks)} tasks of head importance after normalising each "
                       f"task's map to sum 1 (raw means let large-gradient tasks dominate); one map per shot count.")
    run.figure(pimp.ffn_heatmap([v.ffn for v in imps.values()]), "importance-ffn", section="Task importance",
               order=32, caption=f"{run.desc}: FFN importance (gradient gate on each block's MLP output), rows = "
                                 f"task x shots, each row scaled to its max.")


def pruning_section(run: Run) -> None:
    from headlens.analyses.importance import ffn_oracle
    from headlens.analyses.pruning import TaskEvaluator, oracle_order, pruning_curve, pruning_grid
    from headlens.report import importance as pimp
    from headlens.results.cache import array_digest
    from headlens.results.scores import Scores
    from headlens.tasks import get_task

    cfg, k, L = run.cfg, run.cfg.prune_shots, run.n_layers
    names = run.results["prune_tasks"]
    evaluate = MeanEvaluator([TaskEvaluator(run.model, n, k, limit=cfg.prune_limit, seed=cfg.seed) for n in names])
    run.results["evaluate"] = evaluate
    unit = len(names) * cfg.prune_limit * (1 + k)
    agg, agg_ffn = run.results["aggregate"][k], run.results["aggregate_ffn"][k]

    def curve(ranking: Scores, what: str, percents: Sequence[int], label: str) -> pd.DataFrame:
        rows = []
        for p in percents:  # one cache entry per point: a killed run keeps its finished points
            def point(p=p):
                df = pruning_curve(ranking, evaluate, what=what, percents=[p], random_draws=cfg.random_draws,
                                   exact_limit=cfg.exact_limit, progress=False)
                return df.to_dict("records")[0]

            rows.append(run.cached("prune-point", point, weight=unit * min(cfg.random_draws, 60) if p else unit,
                                   what=what, ranking=array_digest(ranking.values), percent=p,
                                   queries=evaluate.key, draws=cfg.random_draws, exact_limit=cfg.exact_limit))
        df = pd.DataFrame(rows)
        df.to_csv(run.out / f"prune-{label}.csv", index=False)
        return df

    head_curve = curve(agg, "heads", cfg.head_percents, "heads")
    # FFNs: ranked by removal (the study's oracle, on the train split), gradient ranking second
    oracle_eval = MeanEvaluator([TaskEvaluator(run.model, n, k, split=get_task(n).importance_split,
                                               limit=cfg.prune_limit, seed=cfg.seed) for n in names])
    oracle = Scores.from_dict(run.cached("ffn-oracle", lambda: ffn_oracle(run.model, oracle_eval).to_dict(),
                                         weight=unit * (L + 1), queries=oracle_eval.key))
    by_oracle = oracle_order(oracle, agg_ffn)
    ffn_pcts = cfg.ffn_percents if cfg.ffn_percents is not None else sorted({round(100 * i / L) for i in range(L)})
    ffn_oracle_curve = curve(by_oracle, "ffn", ffn_pcts, "ffn-oracle")
    ffn_grad_curve = curve(agg_ffn, "ffn", ffn_pcts, "ffn-gradient")
    oracle.save(run.out / "importance" / f"ffn-oracle-{k}shot.json")

    def grid_values():
        g = pruning_grid(agg, by_oracle, evaluate, head_percents=cfg.grid_head_percents,
                         ffn_percents=cfg.grid_ffn_percents, progress=False)
        return g.to_dict("split")

    g = run.cached("prune-grid", grid_values, weight=unit * len(cfg.grid_head_percents) * len(cfg.grid_ffn_percents),
                   heads=array_digest(agg.values), ffn=array_digest(by_oracle.values), queries=evaluate.key,
                   head_percents=cfg.grid_head_percents, ffn_percents=cfg.grid_ffn_percents)
    grid = pd.DataFrame(g["data"], index=pd.Index(g["index"], name="heads_percent"),
                        columns=pd.Index(g["columns"], name="ffn_percent"))
    grid.to_csv(run.out / "prune-grid.csv")
    run.results.update(head_curve=head_curve, ffn_oracle_curve=ffn_oracle_curve, ffn_gradient_curve=ffn_grad_curve)
    chance = float(np.mean([run.results["chance"][n] for n in names if n in run.results["chance"]] or [0]))
    where = (f"mean accuracy over {len(names)} task(s) ({', '.join(names)}), first {cfg.prune_limit} test queries "
             f"each, {k}-shot")
    band = (f"band: random removal of as many units, every subset when there are at most {cfg.exact_limit}, "
            f"else {cfg.random_draws} seeded draws (dotted: mean; band: 2.5-97.5% of the draws)")
    run.figure(pimp.pruning_curves({"heads, aggregate importance": head_curve}, chance=chance,
                                   title=f"Accuracy ({k}-shot) vs % heads removed"),
               "prune-heads", section="Pruning", order=40,
               caption=f"{run.desc}: heads removed lowest aggregate importance first (gates at 0); {where}; {band}. "
                       f"Rankings are not re-estimated after pruning.")
    run.figure(pimp.pruning_curves({"FFNs, removal oracle": ffn_oracle_curve, "FFNs, gradient ranking": ffn_grad_curve},
                                   chance=chance, title=f"Accuracy ({k}-shot) vs % FFNs removed"),
               "prune-ffn", section="Pruning", order=41,
               caption=f"{run.desc}: whole FFN blocks removed in the order of the study's oracle (accuracy drop when "
                       f"one block alone is removed, measured on the train split; ties by gradient importance) and "
                       f"of aggregate gradient importance; {where}; {band}.")
    run.figure(pimp.pruning_grid_heatmap(grid), "prune-grid", section="Pruning", order=42,
               caption=f"{run.desc}: {where}, with p% of heads (aggregate importance) and q% of FFNs (oracle) "
                       f"removed together.")


def overlap_section(run: Run) -> None:
    from headlens.analyses import overlap as ov
    from headlens.report import overlap as pov
    from headlens.results.cache import array_digest

    cfg, k = run.cfg, run.cfg.prune_shots
    heads, agg, ind = run.results["heads"], run.results["aggregate"], run.results["induction"]
    run.figure(pov.agreement_dropdown(ov.by_shot(heads), key_name="shots", title="Spearman rank agreement between tasks"),
               "overlap-tasks", section="Overlap", order=50,
               caption=f"{run.desc}: Spearman correlation of head-importance SCORES between every pair of tasks "
                       f"(dropdown: shots). The reference correlated argsort vectors, which hides agreement.")
    if len(cfg.shots) > 1:
        run.figure(pov.agreement_dropdown(ov.by_task(heads), key_name="task",
                                          title="Spearman rank agreement between shot counts"),
                   "overlap-shots", section="Overlap", order=51,
                   caption=f"{run.desc}: Spearman correlation of head importance across shot counts, per task (dropdown).")
    targets = ("prefix_matching", "copying_corrected")
    sweeps = {f"important vs {m}": ov.overlap_sweep(agg[k], ind[m]) for m in targets}
    run.results["overlap_sweeps"] = sweeps
    run.figure(pov.overlap_vs_k(sweeps, title=f"Top-k overlap: important heads ({k}-shot aggregate) vs induction heads"),
               "overlap-induction", section="Overlap", order=52,
               caption=f"{run.desc}: Jaccard overlap of the top-k aggregate-important heads and the top-k heads by "
                       f"prefix matching / corrected copying; hover: hypergeometric p-value of the intersection "
                       f"under random choice; dashed: random expectation. Ties are broken in a seeded random order.")
    run.figure(pov.retained_figure({m: ov.retained_curve(agg[k], ind[m]) for m in targets},
                                   title="Induction score retained as heads are pruned"),
               "overlap-retained", section="Overlap", order=53,
               caption=f"{run.desc}: share of the total prefix-matching / copying score kept when heads are removed "
                       f"lowest aggregate importance first, against random removal (line: expectation; band: 95%).")
    imps = run.results["importance"]
    frames = []
    for i, name in enumerate(run.results["prune_tasks"]):
        def one(name=name):
            df = ov.causal_check(run.model, name, k, ind["prefix_matching"], imps[(name, k)].heads
                                 if (name, k) in imps else agg[k], list(cfg.causal_ks), limit=cfg.prune_limit,
                                 seed=cfg.seed)
            return df.to_dict("records")

        frames.append(pd.DataFrame(run.cached("causal", one, weight=cfg.prune_limit * (1 + k) * 5 * len(cfg.causal_ks),
                                              queries=run.results["evaluate"].evaluators[i].key,
                                              induction=array_digest(ind["prefix_matching"].values),
                                              importance=array_digest(imps[(name, k)].heads.values
                                                                      if (name, k) in imps else agg[k].values),
                                              ks=list(cfg.causal_ks))))
    cc = pd.concat(frames)
    cc.to_csv(run.out / "causal-check.csv", index=False)
    mean_cc = cc.groupby(["k", "condition"], as_index=False).agg(acc=("acc", "mean"), acc_std=("acc", "std"))
    mean_cc["task"], mean_cc["shots"], mean_cc["heads"] = "mean", k, ""
    run.results["causal"] = mean_cc
    run.figure(pov.causal_bars(mean_cc, title=f"Ablating induction heads vs random vs least important ({k}-shot)"),
               "overlap-causal", section="Overlap", order=54,
               caption=f"{run.desc}: mean accuracy over {', '.join(run.results['prune_tasks'])} after zeroing the top-k "
                       f"prefix-matching heads, k random heads (3 draws), or the k least important heads (each "
                       f"task's own ranking).")


def layers_section(run: Run) -> None:
    from headlens.analyses import layers as lay
    from headlens.report import layers as play
    from headlens.tasks.texts import split_texts

    cfg, L = run.cfg, run.n_layers
    splits = split_texts(None, n_calibration=cfg.layer_texts, n_heal=4 * cfg.layer_texts, n_eval=cfg.layer_texts,
                         seed=cfg.seed)
    dist = lay.cached_layer_distances(run.model, list(splits.calibration),
                                      lay.DistancesOptions(n_texts=None, seed=cfg.seed, max_len=cfg.layer_max_len),
                                      cache=run.cache)
    run.progress.update(cfg.layer_texts * 4)
    (run.out / "layers").mkdir(exist_ok=True)
    (run.out / "layers" / "distances.json").write_text(json.dumps(dist.to_dict()))
    run.results["distances"] = dist
    run.figure(play.distance_heatmap(dist), "layers-distance", section="Layer pruning", order=60,
               caption=f"{run.desc}: angular distance arccos(cos)/pi between the residual stream entering layer l "
                       f"and layer l+n at each text's last real token, mean over {len(splits.calibration)} "
                       f"calibration texts of the embedded corpus"
                       f"{f' (first {cfg.layer_max_len} tokens)' if cfg.layer_max_len else ''}; each row scaled to "
                       f"its max; line: l*(n), the most similar block.")
    ns = [n for n in (cfg.layer_ns if cfg.layer_ns is not None else range(L)) if 0 <= n < L]
    heal_ns = {n for n in (cfg.heal_ns if cfg.heal_ns is not None else ns) if 0 < n < L} if cfg.heal_steps > 0 else set()
    ns = sorted(set(ns) | heal_ns)  # a healed block is also measured unhealed
    heal_kwargs = {"steps": cfg.heal_steps, "max_len": cfg.layer_max_len or 128, "seed": cfg.seed}
    rows = []
    for method in ("similarity", "deepest"):
        for n in ns:
            if n == 0 and method == "deepest":
                continue
            heal = n > 0 and n in heal_ns

            def one(n=n, method=method, heal=heal):
                df = lay.pruning_curve(run.model, splits, ns=[n], methods=[method], heal=heal,
                                       heal_kwargs=heal_kwargs, distances=dist, max_len=cfg.layer_max_len)
                return df.to_dict("records")

            got = run.cached("layer-block", one, weight=cfg.layer_texts * 8 + (8 * cfg.heal_steps * 12 if heal else 0),
                             n=n, method=method, heal=heal, heal_kwargs=heal_kwargs, texts=cfg.layer_texts,
                             max_len=cfg.layer_max_len, distances=dist.to_dict()["best_start"])
            rows.extend(got if n else [dict(r, method=m) for r in got[:1] for m in ("similarity", "deepest")])
    lc = pd.DataFrame(rows)
    lc.to_csv(run.out / "layers" / "curve.csv", index=False)
    run.results["layer_curve"] = lc
    run.figure(play.pruning_curves(lc, metric="loss"), "layers-loss", section="Layer pruning", order=61,
               caption=f"{run.desc}: next-token loss on {len(splits.eval)} evaluation texts vs fraction of layers "
                       f"removed; the block is chosen by angular distance on separate calibration texts, against the "
                       f"deepest block (keeping the last layer); healed points: {cfg.heal_steps} steps of LoRA on the "
                       f"FFN projections, trained on a third, disjoint set of {len(splits.heal)} texts.")


SECTIONS: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("accuracy", accuracy_section), ("induction", induction_section), ("importance", importance_section),
    ("pruning", pruning_section), ("overlap", overlap_section), ("layers", layers_section))


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


def _induction_caption(metric: str, desc: str, n_seeds: int) -> str:
    text = {
        "prefix_matching": "prefix-matching score: attention from each position in repeats 2-4 of [BOS]+S+S+S+S to "
                           "the token after the earlier copies of the current token",
        "copying_corrected": "copying score (corrected): on [BOS]+S*4, the probability among the tokens of S of the "
                             "token at the head's most-attended position, in what the head writes from that "
                             "position's value (W_O, final norm at its real scale, unembedding); chance 1/|S|",
        "copying_eigen": "copying score (eigen, weights only): sum(lambda)/sum(|lambda|) of the full OV circuit",
        "copying_paper": "copying score (paper variant, faithful to the reference incl. its embedding-level inputs "
                         "and the query position's value)",
        "attention_concentration": "attention concentration: the largest share of attention one token receives, "
                                   "per query in repeats 2-4 (1 for a clean induction head and for a head fixed on BOS)",
    }[metric]
    return f"{desc}: {text}; random unique-token sequences S of length 2*seed+25, mean over {n_seeds} seeds."
