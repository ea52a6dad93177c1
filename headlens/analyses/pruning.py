"""Pruning by ranking: zero the lowest-ranked p% of heads (or FFNs) through gates, re-evaluate.

As in Bansal et al. (2023): heads are sorted globally (all layers together) by one
ranking, the lowest p% get gate 0, and the pruned model is evaluated; rankings are never
re-estimated after pruning. A random ranking (several seeds) gives the baseline band
every curve is drawn against, which the study lacked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from headlens.errors import HeadlensError
from headlens.model.gates import Gates, mask_lowest
from headlens.results.scores import Scores

What = Literal["heads", "ffn"]
EvaluateFn = Callable[[Gates | None], float]
PERCENTS: tuple[int, ...] = tuple(range(0, 100, 10))


def _check_percents(percents: Sequence[float]) -> list[float]:
    out = [float(p) for p in percents]
    if any(not 0 <= p <= 100 for p in out):
        raise HeadlensError(f"pruning: percents must lie in 0..100, got {out}")
    return out


def random_ranking(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A uniformly random ranking (scores) of the given shape, reproducible by seed."""
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape).astype(float)


def gates_for(ranking: np.ndarray, percent: float, what: What) -> Gates:
    """Gates that remove the lowest ``percent`` of ``ranking`` (heads or FFN layers)."""
    mask = mask_lowest(ranking, percent / 100.0)
    return Gates(heads=mask) if what == "heads" else Gates(ffn=mask)


def pruning_curve(ranking: Scores, evaluate: EvaluateFn, *, what: What = "heads",
                  percents: Sequence[float] = PERCENTS, random_seeds: Sequence[int] = (0, 1, 2),
                  progress: bool = True) -> pd.DataFrame:
    """Accuracy after removing the lowest p% by ``ranking``, and by random rankings.

    Args:
        ranking: head scores [n_layers, n_heads] (``what="heads"``) or FFN scores [n_layers].
        evaluate: ``evaluate(gates) -> accuracy`` (``None`` = unpruned model).
        random_seeds: seeds of the random-ranking baseline (>= 3 for a spread).

    Returns:
        DataFrame with columns ``percent, acc, acc_random_mean, acc_random_std, n_removed``.
    """
    if what not in ("heads", "ffn"):
        raise HeadlensError(f"pruning_curve: what must be heads or ffn, got {what!r}")
    if (what == "heads") != ranking.per_head:
        raise HeadlensError(f"pruning_curve: a {'per-head' if ranking.per_head else 'per-layer'} "
                            f"ranking cannot prune {what}; pass the matching scores")
    from tqdm.auto import tqdm

    percents = _check_percents(percents)
    shape = ranking.values.shape
    randoms = [random_ranking(shape, s) for s in random_seeds]
    rows = []
    base = None
    for p in tqdm(percents, desc=f"prune {what}", disable=not progress, leave=False):
        if p == 0:
            base = base if base is not None else float(evaluate(None))
            acc, rand = base, [base] * len(randoms)
        else:
            acc = float(evaluate(gates_for(ranking.values, p, what)))
            rand = [float(evaluate(gates_for(r, p, what))) for r in randoms]
        n_removed = int(round(p / 100.0 * ranking.values.size))
        rows.append({"percent": p, "acc": acc,
                     "acc_random_mean": float(np.mean(rand)) if rand else float("nan"),
                     "acc_random_std": float(np.std(rand)) if rand else float("nan"),
                     "n_removed": n_removed})
    df = pd.DataFrame(rows)
    df.attrs = {"what": what, "ranking": ranking.name, "random_seeds": list(random_seeds)}
    return df


def pruning_grid(head_ranking: Scores, ffn_ranking: Scores, evaluate: EvaluateFn, *,
                 head_percents: Sequence[float] = tuple(range(0, 80, 10)),
                 ffn_percents: Sequence[float] = tuple(range(0, 60, 10)),
                 progress: bool = True) -> pd.DataFrame:
    """Accuracy with p% of heads and q% of FFNs removed together (study grid: 0-70 x 0-50).

    Returns:
        DataFrame indexed by head percent (rows) with one column per FFN percent.
    """
    from tqdm.auto import tqdm

    hp, fp = _check_percents(head_percents), _check_percents(ffn_percents)
    grid = np.empty((len(hp), len(fp)))
    cells = [(i, j) for i in range(len(hp)) for j in range(len(fp))]
    for i, j in tqdm(cells, desc="prune grid", disable=not progress, leave=False):
        heads = mask_lowest(head_ranking.values, hp[i] / 100.0)
        ffn = mask_lowest(ffn_ranking.values, fp[j] / 100.0)
        grid[i, j] = float(evaluate(Gates(heads=heads, ffn=ffn)))
    df = pd.DataFrame(grid, index=pd.Index(hp, name="heads_percent"),
                      columns=pd.Index(fp, name="ffn_percent"))
    return df


class TaskEvaluator:
    """Accuracy of one task and shot count through any gates: prompts prepared once.

    Calling it with ``Gates`` (or None) returns the task metric (``acc``); results are
    memoised per gate pattern, so the unpruned baseline is computed once per curve set.
    """

    def __init__(self, model, task, shots: int, *, limit: int | None = None, seed: int = 0,
                 split: str | None = None, data_dir=None, batch_size: int = 16, metric: str = "acc"):
        from headlens.tasks.prompts import prepare
        from headlens.tasks import get_task

        self.model, self.task, self.shots, self.metric = model, get_task(task), shots, metric
        self.batch_size = batch_size
        self.prepared = prepare(model, self.task, shots, split=split, limit=limit, seed=seed,
                                data_dir=data_dir)
        if not self.prepared.items:
            raise HeadlensError(f"TaskEvaluator: no examples of {self.task.name} to evaluate "
                                f"(split {self.prepared.split}, {self.prepared.skipped} skipped)")
        self.calls = 0
        self._memo: dict[bytes, float] = {}

    @property
    def key(self) -> dict:
        from headlens.model.loading import model_info

        p = self.prepared
        return {"model": model_info(self.model).to_dict(), **self.task.key, "shots": self.shots,
                "seed": p.seed, "split": p.split, "n": len(p.items), "metric": self.metric}

    def __call__(self, gates: Gates | None) -> float:
        from headlens.analyses.scoring import evaluate_prepared

        memo_key = b"none" if gates is None else b"".join(
            t.detach().cpu().numpy().tobytes() if t is not None else b"-" for t in (gates.heads, gates.ffn))
        if memo_key not in self._memo:
            self.calls += 1
            res = evaluate_prepared(self.model, self.prepared, gates=gates, batch_size=self.batch_size)
            self._memo[memo_key] = float(res.metrics[self.metric])
        return self._memo[memo_key]


def cached_curve(evaluator: TaskEvaluator, ranking: Scores, *, what: What = "heads",
                 percents: Sequence[float] = PERCENTS, random_seeds: Sequence[int] = (0, 1, 2),
                 cache=None, progress: bool = True) -> pd.DataFrame:
    """:func:`pruning_curve` for a task evaluator, stored in the result cache."""
    import hashlib

    from headlens.results.cache import ResultCache, cache_key

    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())
    digest = hashlib.sha256(np.ascontiguousarray(ranking.values).tobytes()).hexdigest()[:16]
    key = cache_key(kind="pruning_curve", **evaluator.key, ranking=digest, what=what,
                    percents=list(percents), random_seeds=list(random_seeds))
    rows = cache.get_or_compute("pruning", key, lambda: pruning_curve(
        ranking, evaluator, what=what, percents=percents, random_seeds=random_seeds,
        progress=progress).to_dict("records"))
    df = pd.DataFrame(rows)
    df.attrs = {"what": what, "ranking": ranking.name, "task": evaluator.task.name,
                "shots": evaluator.shots, "random_seeds": list(random_seeds)}
    return df


def resolve_ranking(bridge, source: str, task, shots: int, what: str, *, limit, seed, variant,
                    data_dir, cache):
    """A ranking named as on the command line -> Scores.

    ``source`` is ``self`` (this task's importance), ``TASK`` or ``TASK:SHOTS`` (cross-task
    transfer), ``aggregate`` (normalised mean over the task's group at ``shots``), ``oracle``
    (FFNs only: accuracy drop when one FFN is removed, on the importance split) or the path
    of a saved Scores ``.json``.
    """
    from headlens.analyses.importance import aggregate, ffn_oracle, task_importance
    from headlens.results.scores import Scores
    from headlens.tasks import get_task, task_names

    def imp(t, k):
        r = task_importance(bridge, t, k, limit=limit, seed=seed, variant=variant,
                            data_dir=data_dir, cache=cache, progress=False)
        return r.heads if what == "heads" else r.ffn

    if source.endswith(".json"):
        return Scores.load(source)
    if source == "oracle":  # the reference's FFN oracle: accuracy drop when one FFN is removed
        if what != "ffn":
            raise HeadlensError("--ranking oracle ranks FFN blocks; use it with --what ffn")
        ev = TaskEvaluator(bridge, task, shots, split=task.importance_split, limit=limit, seed=seed,
                           data_dir=data_dir)
        return ffn_oracle(bridge, ev)
    if source == "self":
        return imp(task, shots)
    if source == "aggregate":
        group = task.group if task.group in ("study", "offline") else None
        names = task_names(group) if group else [task.name]
        return aggregate([imp(get_task(n), shots) for n in names])
    name, _, k = source.partition(":")
    try:
        k_shots = int(k) if k else shots
    except ValueError:
        raise HeadlensError(f"--ranking {source!r}: expected TASK or TASK:SHOTS with an integer shot count")
    return imp(get_task(name), k_shots)
