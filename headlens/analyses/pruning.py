"""Pruning by ranking: zero the lowest-ranked p% of heads (or FFNs) through gates, re-evaluate.

As in Bansal et al. (2023): heads are sorted globally (all layers together) by one
ranking, the lowest p% get gate 0, and the pruned model is evaluated; rankings are never
re-estimated after pruning. Every curve is drawn against the accuracy of removing the same
number of units at random, which the study lacked.

Random baseline: at a point that removes k of n units (k = round(p/100 * n), as
:func:`headlens.model.gates.mask_lowest` counts), the baseline is the distribution of the
accuracy over uniformly random k-subsets. When C(n, k) <= ``exact_limit`` (2,000) every
subset is evaluated, so the mean is exact; otherwise ``random_draws`` (50) subsets are drawn
with a generator seeded from the curve's key and (what, n, k), so different curves (tasks,
shots, models) get different draws and a rerun gets the same ones. Each subset costs one
evaluation; the evaluator memoises gate patterns, so points with the same k and different
rankings on the same evaluator share them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from headlens.errors import HeadlensError
from headlens.model.gates import Gates, mask_lowest
from headlens.results.scores import Scores

What = Literal["heads", "ffn"]
EvaluateFn = Callable[[Gates | None], float]
PERCENTS: tuple[int, ...] = tuple(range(0, 100, 10))
RANDOM_DRAWS = 50
EXACT_LIMIT = 2_000
BAND = (2.5, 97.5)  # percentiles of the random accuracies drawn as the band
# Version of the pruning-curve definition; it enters the curve's cache key.
# 2: random baseline by exact enumeration (C(n, k) <= 2,000) or 50 keyed draws per point;
#    band = 2.5-97.5 percentiles of the draws (was: seeds 0, 1, 2 for every curve, +/- 1 sd).
VERSION = 2


def _check_percents(percents: Sequence[float]) -> list[float]:
    out = [float(p) for p in percents]
    if any(not 0 <= p <= 100 for p in out):
        raise HeadlensError(f"pruning: percents must lie in 0..100, got {out}")
    return out


def _check_draws(random_draws: int, caller: str) -> int:
    if isinstance(random_draws, bool) or int(random_draws) != random_draws or random_draws < 1:
        raise HeadlensError(f"{caller}: random_draws must be an integer >= 1 (random subsets per "
                            f"point; {RANDOM_DRAWS} by default), got {random_draws!r}")
    return int(random_draws)


def _legacy_draws(random_seeds: Sequence[int] | None, random_draws: int, caller: str) -> int:
    """``random_seeds`` (the old argument: a list of seeds) counts as that many draws."""
    if random_seeds is None:
        return _check_draws(random_draws, caller)
    warnings.warn(f"{caller}: random_seeds is deprecated; pass random_draws={len(random_seeds)} "
                  "(draws are now seeded from the curve's key and the point)", DeprecationWarning,
                  stacklevel=3)
    return _check_draws(len(random_seeds), caller)


def random_ranking(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A uniformly random ranking (scores) of the given shape, reproducible by seed."""
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape).astype(float)


def gates_for(ranking: np.ndarray, percent: float, what: What) -> Gates:
    """Gates that remove the lowest ``percent`` of ``ranking`` (heads or FFN layers)."""
    mask = mask_lowest(ranking, percent / 100.0)
    return Gates(heads=mask) if what == "heads" else Gates(ffn=mask)


def n_removed(n: int, percent: float) -> int:
    """Units removed at ``percent`` of ``n``: round(p/100 * n), exactly as ``mask_lowest`` counts."""
    return int(round(percent / 100.0 * n))


def _seed(key: Any, *point: Any) -> np.random.SeedSequence:
    payload = json.dumps([key, *point], sort_keys=True, default=str).encode()
    return np.random.SeedSequence(int(hashlib.sha256(payload).hexdigest(), 16))


def random_subsets(n: int, k: int, *, key: Any, draws: int = RANDOM_DRAWS,
                   exact_limit: int = EXACT_LIMIT) -> tuple[np.ndarray, bool]:
    """The k-subsets of ``range(n)`` the random baseline evaluates: [m, k] indices and ``exact``.

    Every subset (m = C(n, k), in lexicographic order) when C(n, k) <= ``exact_limit``;
    otherwise ``draws`` uniformly random k-subsets (each the first k of a random permutation,
    drawn independently, so one may repeat) from ``numpy.random.default_rng`` seeded by a
    SHA-256 hash of ``(key, n, k)``: the same key gives the same subsets, another key others.
    """
    if not 0 <= k <= n:
        raise HeadlensError(f"random_subsets: k must lie in [0, n={n}], got {k}")
    draws = _check_draws(draws, "random_subsets")
    total = math.comb(n, k)
    if total <= exact_limit:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(total, k)
        return subsets, True
    rng = np.random.default_rng(_seed(key, n, k))
    return rng.permuted(np.tile(np.arange(n), (draws, 1)), axis=1)[:, :k], False


def random_band(evaluate: EvaluateFn, shape: tuple[int, ...], k: int, *, what: What = "heads",
                key: Any = None, draws: int = RANDOM_DRAWS, exact_limit: int = EXACT_LIMIT,
                base: float | None = None) -> dict[str, Any]:
    """Accuracy after removing k random units of ``shape`` (see :func:`random_subsets`).

    Returns:
        ``acc_random_mean`` (exact over all subsets, or over the draws),
        ``acc_random_std`` (population sd when exact, sample sd with ddof=1 over draws; 0 for
        a single subset), ``acc_random_low`` / ``acc_random_high`` (2.5th / 97.5th
        percentiles, linear interpolation), ``n_random`` (subsets evaluated) and
        ``random_exact``.
    """
    import torch

    n = int(np.prod(shape))
    subsets, exact = random_subsets(n, k, key=[key, what], draws=draws, exact_limit=exact_limit)
    if k == 0:  # gates at 1 leave the model unchanged: the unpruned accuracy
        accs = np.full(len(subsets), float(evaluate(None)) if base is None else base)
    else:
        masks = np.ones((len(subsets), n), dtype=np.float32)
        masks[np.arange(len(subsets))[:, None], subsets] = 0.0
        accs = np.empty(len(subsets))
        for i, m in enumerate(masks):
            t = torch.from_numpy(m.reshape(shape))
            accs[i] = float(evaluate(Gates(heads=t) if what == "heads" else Gates(ffn=t)))
    low, high = np.percentile(accs, BAND)
    std = float(np.std(accs, ddof=0 if exact or len(accs) == 1 else 1))
    return {"acc_random_mean": float(accs.mean()), "acc_random_std": std,
            "acc_random_low": float(low), "acc_random_high": float(high),
            "n_random": int(len(accs)), "random_exact": bool(exact)}


def _ranking_digest(ranking: Scores) -> str:
    return hashlib.sha256(np.ascontiguousarray(ranking.values, dtype=np.float64).tobytes()).hexdigest()[:16]


def pruning_curve(ranking: Scores, evaluate: EvaluateFn, *, what: What = "heads",
                  percents: Sequence[float] = PERCENTS, random_draws: int = RANDOM_DRAWS,
                  exact_limit: int = EXACT_LIMIT, key: Any = None, progress: bool = True,
                  random_seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Accuracy after removing the lowest p% by ``ranking``, against removing p% at random.

    Args:
        ranking: head scores [n_layers, n_heads] (``what="heads"``) or FFN scores [n_layers].
        evaluate: ``evaluate(gates) -> accuracy`` (``None`` = unpruned model).
        random_draws: random subsets per point when C(n, k) > ``exact_limit`` (>= 1).
        exact_limit: evaluate every k-subset when there are at most this many.
        key: what seeds the random draws (any JSON-able value). Default: ``evaluate.key``
            when the evaluator has one (a :class:`TaskEvaluator`: model, task, shots, data),
            so every ranking on one evaluator is compared with the same random subsets; else
            a hash of the ranking's values.
        random_seeds: deprecated; ``len(random_seeds)`` draws.

    Returns:
        DataFrame, one row per percent: ``percent``, ``acc``, ``acc_random_mean``,
        ``acc_random_std``, ``acc_random_low``, ``acc_random_high`` (2.5-97.5 percentiles of
        the random accuracies), ``n_random`` (subsets evaluated), ``random_exact`` (all
        subsets) and ``n_removed``.
    """
    if what not in ("heads", "ffn"):
        raise HeadlensError(f"pruning_curve: what must be heads or ffn, got {what!r}")
    if (what == "heads") != ranking.per_head:
        raise HeadlensError(f"pruning_curve: a {'per-head' if ranking.per_head else 'per-layer'} "
                            f"ranking cannot prune {what}; pass the matching scores")
    draws = _legacy_draws(random_seeds, random_draws, "pruning_curve")
    from tqdm.auto import tqdm

    percents = _check_percents(percents)
    shape = ranking.values.shape
    n = int(ranking.values.size)
    if key is None:
        key = getattr(evaluate, "key", None)
    if key is None:
        key = {"ranking": _ranking_digest(ranking)}
    base = float(evaluate(None))
    bands: dict[int, dict[str, Any]] = {}
    rows = []
    for p in tqdm(percents, desc=f"prune {what}", disable=not progress, leave=False):
        k = n_removed(n, p)
        acc = base if k == 0 else float(evaluate(gates_for(ranking.values, p, what)))
        if k not in bands:
            bands[k] = random_band(evaluate, shape, k, what=what, key=key, draws=draws,
                                   exact_limit=exact_limit, base=base)
        rows.append({"percent": p, "acc": acc, **bands[k], "n_removed": k})
    df = pd.DataFrame(rows)
    df.attrs = {"what": what, "ranking": ranking.name, "random_draws": draws,
                "exact_limit": exact_limit}
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
                 percents: Sequence[float] = PERCENTS, random_draws: int = RANDOM_DRAWS,
                 exact_limit: int = EXACT_LIMIT, cache=None, progress: bool = True,
                 random_seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`pruning_curve` for a task evaluator, stored in the result cache."""
    from headlens.results.cache import ResultCache, cache_key

    draws = _legacy_draws(random_seeds, random_draws, "cached_curve")
    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())
    key = cache_key(kind="pruning_curve", version=VERSION, **evaluator.key,
                    ranking=_ranking_digest(ranking), what=what, percents=list(percents),
                    random_draws=draws, exact_limit=exact_limit)
    rows = cache.get_or_compute("pruning", key, lambda: pruning_curve(
        ranking, evaluator, what=what, percents=percents, random_draws=draws,
        exact_limit=exact_limit, progress=progress).to_dict("records"))
    df = pd.DataFrame(rows)
    df.attrs = {"what": what, "ranking": ranking.name, "task": evaluator.task.name,
                "shots": evaluator.shots, "random_draws": draws, "exact_limit": exact_limit}
    return df


def cached_ffn_oracle(model, evaluator: TaskEvaluator, *, cache=None) -> Scores:
    """:func:`headlens.analyses.importance.ffn_oracle` on ``evaluator``, stored in the result cache.

    One evaluation without gates and one per FFN block. Run it on the data the ranking is
    meant to be learnt from (the task's importance split), not on the evaluation queries.
    """
    from headlens.analyses.importance import ffn_oracle
    from headlens.results.cache import ResultCache, cache_key

    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())
    key = cache_key(kind="ffn_oracle", **evaluator.key)
    return Scores.from_dict(cache.get_or_compute(
        "ffn_oracle", key, lambda: ffn_oracle(model, evaluator).to_dict()))


@dataclass(frozen=True)
class FfnPruning:
    """FFN pruning curves by two rankings, drawn against the same random baseline.

    Attributes:
        oracle_ranking: accuracy drop when each FFN alone is removed (the reference's
            ranking, Bansal et al. 2023): [n_layers].
        oracle: pruning curve by ``oracle_ranking`` (the default FFN curve); equal drops
            are ordered by the gradient ranking when there is one, else by layer index.
        gradient: pruning curve by the gradient-gate FFN importance, or None.
    """

    oracle_ranking: Scores
    oracle: pd.DataFrame
    gradient: pd.DataFrame | None = None

    def curves(self) -> dict[str, pd.DataFrame]:
        """Named curves for :func:`headlens.report.importance.pruning_curves`, oracle first."""
        out = {"FFNs, removal oracle": self.oracle}
        if self.gradient is not None:
            out["FFNs, gradient ranking"] = self.gradient
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"oracle_ranking": self.oracle_ranking.to_dict(),
                "oracle": self.oracle.to_dict("records"),
                "gradient": None if self.gradient is None else self.gradient.to_dict("records")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FfnPruning:
        return cls(oracle_ranking=Scores.from_dict(d["oracle_ranking"]),
                   oracle=pd.DataFrame(d["oracle"]),
                   gradient=None if d.get("gradient") is None else pd.DataFrame(d["gradient"]))


def ffn_pruning(model, evaluate: EvaluateFn, oracle_evaluate: EvaluateFn, *,
                gradient: Scores | None = None, percents: Sequence[float] | None = None,
                random_draws: int = RANDOM_DRAWS, exact_limit: int = EXACT_LIMIT,
                key: Any = None, cache=None, progress: bool = True) -> FfnPruning:
    """FFN pruning ranked by removal (the oracle, default) and, as a second line, by gradient.

    The oracle ranks FFN l by ``oracle_evaluate(all) - oracle_evaluate(without FFN l)``
    (n_layers + 1 evaluations; :func:`headlens.analyses.importance.ffn_oracle`), lowest
    drop removed first, equal drops in the order of ``gradient`` (else by layer); both
    curves are then measured with ``evaluate`` at the same points and against the same
    random subsets (:func:`pruning_curve`).

    Args:
        model: the model (for n_layers and its name).
        evaluate: accuracy through gates on the evaluation queries (a :class:`TaskEvaluator`
            or a function such as a mean over several).
        oracle_evaluate: the same on the queries the ranking is learnt from (the importance
            split), so the ranking is not fitted to the evaluation queries.
        gradient: gradient-gate FFN importance [n_layers] (``task_importance(...).ffn`` or an
            aggregate), or None for the oracle curve alone.
        percents: default: every whole number of FFNs, round(100 i / n_layers).
        cache: a ResultCache: the oracle and the curves are cached when the evaluators are
            :class:`TaskEvaluator` objects (other callables are computed every time).

    Returns:
        :class:`FfnPruning` (``.curves()`` feeds the pruning figure).
    """
    n_layers = int(model.cfg.n_layers)
    if gradient is not None and gradient.values.shape != (n_layers,):
        raise HeadlensError(f"ffn_pruning: gradient ranking has shape {gradient.values.shape}, the model "
                            f"has ({n_layers},) FFN blocks; pass FFN scores of this model")
    if percents is None:
        percents = sorted({round(100 * i / n_layers) for i in range(n_layers)})
    if cache is not None and isinstance(oracle_evaluate, TaskEvaluator):
        oracle = cached_ffn_oracle(model, oracle_evaluate, cache=cache)
    else:
        from headlens.analyses.importance import ffn_oracle

        oracle = ffn_oracle(model, oracle_evaluate)
    use_cache = cache is not None and key is None and isinstance(evaluate, TaskEvaluator)
    if key is None and getattr(evaluate, "key", None) is None:
        key = {"ffn_oracle": _ranking_digest(oracle)}  # one random baseline for both curves

    def curve(ranking: Scores) -> pd.DataFrame:
        if use_cache:
            return cached_curve(evaluate, ranking, what="ffn", percents=percents, random_draws=random_draws,
                                exact_limit=exact_limit, cache=cache, progress=progress)
        return pruning_curve(ranking, evaluate, what="ffn", percents=percents, random_draws=random_draws,
                             exact_limit=exact_limit, key=key, progress=progress)

    by_oracle = oracle
    if gradient is not None:  # equal drops (common with few queries): the gradient orders them
        order = np.lexsort((gradient.values, oracle.values))
        ranks = np.empty(n_layers)
        ranks[order] = np.arange(n_layers)
        by_oracle = oracle.with_values(ranks, tie_break="gradient")
    return FfnPruning(oracle_ranking=oracle, oracle=curve(by_oracle),
                      gradient=None if gradient is None else curve(gradient))


def resolve_ranking(bridge, source: str, task, shots: int, what: str, *, limit, seed, variant,
                    data_dir, cache):
    """A ranking named as on the command line -> Scores.

    ``source`` is ``self`` (this task's importance), ``TASK`` or ``TASK:SHOTS`` (cross-task
    transfer), ``aggregate`` (normalised mean over the task's group at ``shots``), ``oracle``
    (FFNs only: accuracy drop when one FFN is removed, on the importance split) or the path
    of a saved Scores ``.json``.
    """
    from headlens.analyses.importance import aggregate, task_importance
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
        return cached_ffn_oracle(bridge, ev, cache=cache)
    if source == "self":
        return imp(task, shots)
    if source == "aggregate":
        group = task.group if task.group in ("study", "offline") else None
        members = [get_task(n) for n in task_names(group)] if group else [task]  # a task file: itself
        return aggregate([imp(t, shots) for t in members])
    name, _, k = source.partition(":")
    try:
        k_shots = int(k) if k else shots
    except ValueError:
        raise HeadlensError(f"--ranking {source!r}: expected TASK or TASK:SHOTS with an integer shot count")
    return imp(get_task(name), k_shots)
