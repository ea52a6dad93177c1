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
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from headlens.errors import HeadlensError, closest
from headlens.model.gates import Gates, mask_lowest
from headlens.results.scores import Scores

What = Literal["heads", "ffn"]
WHAT: tuple[str, ...] = get_args(What)
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
        self.batch_size, self.limit, self.seed, self.data_dir = batch_size, limit, seed, data_dir
        self.prepared = prepare(model, self.task, shots, split=split, limit=limit, seed=seed,
                                data_dir=data_dir)
        if not self.prepared.items:
            raise HeadlensError(f"TaskEvaluator: no examples of {self.task.name} to evaluate "
                                f"(split {self.prepared.split}, {self.prepared.skipped} skipped)")
        self.calls = 0
        self._memo: dict[bytes, float] = {}

    @property
    def key(self) -> dict:
        """What these queries are, by content (model weights and dtype, data files, shots, seed,
        split, count, metric): seeds the random baseline of every curve on this evaluator."""
        from headlens.model.fingerprint import model_key
        from headlens.tasks.sources import data_fingerprint

        p = self.prepared
        splits = {p.split} | ({self.task.train_split} if self.shots else set())
        return {"model": model_key(self.model).part(), "data": data_fingerprint(self.task, splits, self.data_dir),
                "shots": self.shots, "seed": p.seed, "split": p.split, "n": len(p.items), "metric": self.metric}

    def curve_key(self, ranking: Scores, options: CurveOptions):
        """:func:`curve_key` of a curve of this evaluator's task, shots, split, queries and seed."""
        return curve_key(self.model, self.task, self.shots, ranking, options, limit=self.limit, seed=self.seed,
                         split=self.prepared.split, metric=self.metric, data_dir=self.data_dir)

    def __call__(self, gates: Gates | None) -> float:
        from headlens.analyses.scoring import evaluate_prepared

        memo_key = b"none" if gates is None else b"".join(
            t.detach().cpu().numpy().tobytes() if t is not None else b"-" for t in (gates.heads, gates.ffn))
        if memo_key not in self._memo:
            self.calls += 1
            res = evaluate_prepared(self.model, self.prepared, gates=gates, batch_size=self.batch_size)
            self._memo[memo_key] = float(res.metrics[self.metric])
        return self._memo[memo_key]


@dataclass(frozen=True)
class CurveOptions:
    """What one pruning curve contains; validated once, here.

    Attributes:
        what: ``heads`` or ``ffn``.
        percents: the points (0..100) where the lowest-ranked p% are removed.
        random_draws: random subsets per point when C(n, k) > ``exact_limit``.
        exact_limit: evaluate every k-subset when there are at most this many.
    """

    what: What = "heads"
    percents: tuple[float, ...] = PERCENTS
    random_draws: int = RANDOM_DRAWS
    exact_limit: int = EXACT_LIMIT

    def __post_init__(self) -> None:
        if self.what not in WHAT:
            raise HeadlensError(f"pruning: what must be one of {', '.join(WHAT)}, got {self.what!r}; "
                                f"{closest(str(self.what), WHAT)}")
        object.__setattr__(self, "percents", tuple(_check_percents(self.percents)))
        if not self.percents:
            raise HeadlensError("pruning: percents is empty; give at least one point in 0..100")
        object.__setattr__(self, "random_draws", _check_draws(self.random_draws, "pruning"))
        if isinstance(self.exact_limit, bool) or not isinstance(self.exact_limit, (int, np.integer)) \
                or self.exact_limit < 0:
            raise HeadlensError(f"pruning: exact_limit must be an integer >= 0, got {self.exact_limit!r}")


def ranking_ref(ranking: Scores) -> dict[str, Any]:
    """How a ranking enters a curve's key: the importance entry it came from, or its values.

    A ranking straight from :func:`headlens.analyses.importance.task_importance` (or its
    saved file) carries that entry's digest (``meta["cache_key"]``) and a hash of its values;
    when the values still match, the curve is keyed on the entry, so a sweep can name the
    curve before the ranking exists. An FFN oracle from :func:`cached_ffn_oracle`, ordered by
    :func:`oracle_order` with such an importance (or not at all), carries its
    :func:`oracle_ref` (``meta["ranking_ref"]``) the same way. Any other ranking (aggregates,
    oracles computed outside the cache, edited or foreign files) is keyed on a hash of its
    values.
    """
    from headlens.results.cache import array_digest

    values = array_digest(ranking.values)
    if ranking.meta.get("values_digest") == values:
        ref = ranking.meta.get("ranking_ref")  # an FFN oracle (:func:`oracle_ref`)
        if isinstance(ref, dict):
            return dict(ref)
        source = ranking.meta.get("cache_key")
        if source:
            return importance_ref(str(source), ranking.metric)
    return {"values": values, "metric": ranking.metric}


def importance_ref(importance_digest: str, metric: str) -> dict[str, Any]:
    """The ranking reference of the heads (``head_importance``) or FFN part of an importance entry."""
    return {"importance": importance_digest, "metric": metric}


def oracle_ref(oracle_digest: str, tie_break: str | None = None) -> dict[str, Any]:
    """The ranking reference of an FFN oracle entry (:func:`ffn_oracle_key`) as a ranking.

    ``tie_break``: the digest of the importance entry whose FFN scores order equal drops
    (:func:`oracle_order`), or None when equal drops keep layer order.
    """
    return {"ffn_oracle": oracle_digest, "tie_break": tie_break, "metric": "ffn_importance"}


def curve_key(model, task, shots: int, ranking: Scores | dict, options: CurveOptions | None = None, *,
              limit: int | None = None, seed: int = 0, split: str | None = None, metric: str = "acc",
              data_dir=None):
    """The cache key of a pruning curve: the one used by the CLI, demo, sweep and notebooks.

    Built from the model's content fingerprint and dtype, the content of the evaluated data
    (eval split, plus train when ``shots > 0``; never a path), shots, queries (``limit``),
    demonstration seed, split, metric, the ranking (:func:`ranking_ref`), the curve's
    options, :data:`VERSION` and the headlens version.

    Args:
        model: a bridge or a :class:`~headlens.results.cache.ModelKey`.
        ranking: Scores, or a reference from :func:`importance_ref` (sweeps, before the
            ranking is computed).
    """
    from headlens.model.fingerprint import model_key
    from headlens.results.cache import CacheKey
    from headlens.tasks import get_task
    from headlens.tasks.sources import data_fingerprint

    options = options or CurveOptions()
    task = get_task(task)
    mk = model_key(model)
    split = split or task.eval_split
    splits = {split} | ({task.train_split} if shots else set())
    ref = ranking if isinstance(ranking, dict) else ranking_ref(ranking)
    return CacheKey.make("pruning", shape=mk.shape, model=mk.part(), data=data_fingerprint(task, splits, data_dir),
                         shots=int(shots), limit=limit, seed=seed, split=split, metric=metric, ranking=ref,
                         what=options.what, percents=list(options.percents), random_draws=options.random_draws,
                         exact_limit=options.exact_limit, version=VERSION)


def valid_curve(value: Any, key) -> bool:
    """A cached curve: one row per percent of the key, accuracies and the random band finite in [0, 1]."""
    from headlens.results.cache import finite_array

    if not isinstance(value, dict) or not isinstance(value.get("curve"), list):
        return False
    rows = value["curve"]
    if [float(r["percent"]) for r in rows] != [float(p) for p in key.parts["percents"]]:
        return False
    table = [[r[c] for c in ("acc", "acc_random_mean", "acc_random_low", "acc_random_high")] for r in rows]
    return finite_array(table) and bool(((np.asarray(table) >= 0) & (np.asarray(table) <= 1)).all())


def cached_curve(evaluator: TaskEvaluator, ranking: Scores, *, what: What = "heads",
                 percents: Sequence[float] = PERCENTS, random_draws: int = RANDOM_DRAWS,
                 exact_limit: int = EXACT_LIMIT, cache=None, progress: bool = True,
                 random_seeds: Sequence[int] | None = None, options: CurveOptions | None = None) -> pd.DataFrame:
    """:func:`pruning_curve` for a task evaluator, stored in the result cache under :func:`curve_key`.

    ``options`` (a :class:`CurveOptions`) replaces ``what``, ``percents``, ``random_draws`` and
    ``exact_limit``; ``random_seeds`` is deprecated (``len(random_seeds)`` draws).
    """
    from headlens.results.cache import ResultCache

    if options is None:
        draws = _legacy_draws(random_seeds, random_draws, "cached_curve")
        options = CurveOptions(what=what, percents=tuple(percents), random_draws=draws, exact_limit=exact_limit)
    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())
    key = evaluator.curve_key(ranking, options)

    def compute():
        df = pruning_curve(ranking, evaluator, what=options.what, percents=options.percents,
                           random_draws=options.random_draws, exact_limit=options.exact_limit, progress=progress)
        return {"curve": df.to_dict("records"), "n": len(evaluator.prepared.items),
                "split": evaluator.prepared.split}

    value = cache.get_or_compute(key, compute, validate=valid_curve)
    df = pd.DataFrame(value["curve"])
    df.attrs = {"what": options.what, "ranking": ranking.name, "task": evaluator.task.name,
                "shots": evaluator.shots, "random_draws": options.random_draws,
                "exact_limit": options.exact_limit, "n": value.get("n")}
    return df


def ffn_oracle_key(model, task, shots: int, *, limit: int | None = None, seed: int = 0, split: str | None = None,
                   metric: str = "acc", data_dir=None):
    """The cache key of :func:`cached_ffn_oracle` on a :class:`TaskEvaluator` of these arguments.

    Built like :func:`curve_key` (model content fingerprint and dtype, the content of the
    evaluated data, shots, ``limit``, demonstration seed, split, metric, :data:`VERSION`), so
    a sweep can name it before loading the model.

    Args:
        model: a bridge or a :class:`~headlens.results.cache.ModelKey`.
        split: default: the task's importance split (where the oracle is meant to be measured).
    """
    from headlens.model.fingerprint import model_key
    from headlens.results.cache import CacheKey
    from headlens.tasks import get_task
    from headlens.tasks.sources import data_fingerprint

    task = get_task(task)
    mk = model_key(model)
    split = split or task.importance_split
    splits = {split} | ({task.train_split} if shots else set())
    return CacheKey.make("ffn_oracle", shape=mk.shape, model=mk.part(), data=data_fingerprint(task, splits, data_dir),
                         shots=int(shots), limit=limit, seed=seed, split=split, metric=metric, version=VERSION)


def oracle_key(evaluator: TaskEvaluator):
    """The cache key of :func:`cached_ffn_oracle` on ``evaluator`` (:func:`ffn_oracle_key`)."""
    return ffn_oracle_key(evaluator.model, evaluator.task, evaluator.shots, limit=evaluator.limit,
                          seed=evaluator.seed, split=evaluator.prepared.split, metric=evaluator.metric,
                          data_dir=evaluator.data_dir)


def cached_ffn_oracle(model, evaluator: TaskEvaluator, *, cache=None) -> Scores:
    """:func:`headlens.analyses.importance.ffn_oracle` on ``evaluator``, stored in the result cache.

    One evaluation without gates and one per FFN block. Run it on the data the ranking is
    meant to be learnt from (the task's importance split), not on the evaluation queries.
    The returned scores carry ``meta["ranking_ref"]`` (:func:`oracle_ref` of the entry) and
    ``meta["values_digest"]``, so a curve by them is keyed on the entry (:func:`ranking_ref`).
    """
    from dataclasses import replace

    from headlens.analyses.importance import ffn_oracle
    from headlens.results.cache import ResultCache, array_digest, valid_scores

    def valid(value, key) -> bool:
        fp = key.parts["model"]["fingerprint"]
        return valid_scores(value, None if key.shape is None else key.shape[:1], fp)

    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())
    key = oracle_key(evaluator)
    scores = Scores.from_dict(cache.get_or_compute(key, lambda: ffn_oracle(model, evaluator).to_dict(), validate=valid))
    return replace(scores, meta={**scores.meta, "ranking_ref": oracle_ref(key.digest),
                                 "values_digest": array_digest(scores.values)})


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


def oracle_order(oracle: Scores, gradient: Scores | None = None) -> Scores:
    """The FFN oracle as a ranking: lowest accuracy drop first, equal drops (common with few
    queries) in the order of ``gradient`` importance when given, else by layer index.

    Returns Scores of ranks 0 .. n_layers-1 (0 = removed first); ``oracle`` itself when
    ``gradient`` is None. When ``oracle`` comes from :func:`cached_ffn_oracle` and
    ``gradient`` straight from an importance entry (``task_importance(...).ffn``), the result
    carries :func:`oracle_ref` of both entries (``meta["ranking_ref"]``), so its curve is
    keyed on them (what sweeps name before computing); otherwise on its values.
    """
    from dataclasses import replace

    from headlens.results.cache import array_digest

    if gradient is None:
        return oracle
    if gradient.values.shape != oracle.values.shape:
        raise HeadlensError(f"oracle_order: gradient shape {gradient.values.shape} != oracle shape "
                            f"{oracle.values.shape}; pass FFN scores of the same model")
    order = np.lexsort((gradient.values, oracle.values))
    ranks = np.empty(oracle.values.size)
    ranks[order] = np.arange(oracle.values.size)
    meta = {k: v for k, v in oracle.meta.items() if k not in ("ranking_ref", "values_digest", "cache_key")}
    meta["tie_break"] = "gradient"
    source, tie = oracle.meta.get("ranking_ref"), gradient.meta.get("cache_key")
    if (isinstance(source, dict) and source.get("ffn_oracle") and source.get("tie_break") is None
            and oracle.meta.get("values_digest") == array_digest(oracle.values)
            and tie and gradient.meta.get("values_digest") == array_digest(gradient.values)):
        meta.update(ranking_ref=oracle_ref(source["ffn_oracle"], str(tie)), values_digest=array_digest(ranks))
    return replace(oracle, values=ranks, std=None, meta=meta)


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

    by_oracle = oracle_order(oracle, gradient)
    return FfnPruning(oracle_ranking=oracle, oracle=curve(by_oracle),
                      gradient=None if gradient is None else curve(gradient))


def resolve_ranking(bridge, source: str, task, shots: int, what: str, *, limit=None, seed=0,
                    variant="bansal", data_dir=None, cache=None, options=None,
                    allow_other_model: bool = False):
    """A ranking named as on the command line -> Scores.

    ``source`` is ``self`` (this task's importance), ``TASK`` or ``TASK:SHOTS`` (cross-task
    transfer), ``aggregate`` (normalised mean over the task's group at ``shots``), ``oracle``
    (FFNs only: accuracy drop when one FFN is removed, measured on the queries the gradient
    importance uses: the importance split, its ``limit``, ``seed``; equal drops ordered by
    this task's own gradient FFN importance, :func:`oracle_order`, exactly as sweeps rank
    them, so both name the same curve entry) or the path of a saved Scores ``.json``. ``options`` (an
    :class:`~headlens.analyses.importance.ImportanceOptions`) replaces ``limit``, ``seed`` and
    ``variant``. A saved ranking of another model (its ``model_fingerprint``) is refused
    unless ``allow_other_model``.
    """
    from headlens.analyses.importance import ImportanceOptions, aggregate, task_importance
    from headlens.model.loading import model_info
    from headlens.results.scores import Scores, check_same_model
    from headlens.tasks import get_task, task_names

    options = options or ImportanceOptions(variant=variant, limit=limit, seed=seed)
    limit, seed = options.limit, options.seed

    def imp(t, k):
        r = task_importance(bridge, t, k, options=options, data_dir=data_dir, cache=cache, progress=False)
        return r.heads if what == "heads" else r.ffn

    if source.endswith(".json"):
        scores = Scores.load(source)
        info = model_info(bridge)
        check_same_model([scores], "prune --ranking", labels=[source], fingerprint=info.fingerprint,
                         model=info.name, allow_other_model=allow_other_model)
        return scores
    if source == "oracle":  # the reference's FFN oracle: accuracy drop when one FFN is removed
        if what != "ffn":
            raise HeadlensError("--ranking oracle ranks FFN blocks; use it with --what ffn")
        task = get_task(task)
        resolved = options.resolved(task)  # the same queries as the gradient importance
        ev = TaskEvaluator(bridge, task, shots, split=resolved["split"], limit=resolved["limit"], seed=seed,
                           data_dir=data_dir)
        return oracle_order(cached_ffn_oracle(bridge, ev, cache=cache), imp(task, shots))
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
