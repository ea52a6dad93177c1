"""Overlap between head scores: rank agreement, top-k set overlap, retained score, causal check.

Every function here takes :class:`headlens.results.Scores` over (layer, head) and returns a
small frozen result or a DataFrame; nothing runs a model except :func:`causal_check`.

The study behind this module (Bansal et al., 2023, "Rethinking the role of scale for
in-context learning", ACL) asks whether the heads that matter for in-context learning
coincide across tasks, across numbers of shots, and with induction heads (Olsson et al.,
2022). Its Spearman matrix correlated ``argsort`` vectors (the head index found at each
rank) instead of the scores, which destroys the pairing of heads; here the scores are
correlated directly (scipy ranks them, averaging ties).

Top-k sets break ties in a seeded random order that differs between score sets (seeded by
``seed``, the set's label and a hash of its values; see :func:`top_order`). Breaking ties by
head index, the same way in every set, made sets that share one head among otherwise equal
(e.g. zero) scores look identical (Jaccard 1.0, p = 0.018). When ties straddle the top-k
boundary the set is not determined by the scores: a :class:`TieWarning` says so and the
result records how many heads were tied there.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from headlens.analyses.importance import (
    aggregate,  # the aggregate ranking lives with importance
)
from headlens.errors import HeadlensError
from headlens.model.lm import device_of
from headlens.results.scores import Scores, head_label

Method = Literal["spearman", "kendall"]
Head = tuple[int, int]

__all__ = [
    "Agreement", "Baseline", "OverlapMatrix", "OverlapSummary", "aggregate", "by_shot",
    "by_task", "causal_check", "combined_rank", "head_sets", "overlap_matrix",
    "overlap_summary", "overlap_sweep", "random_baseline", "rank_agreement", "retained_curve",
    "score_label", "set_overlap", "TieWarning", "top_k_set", "top_order",
]


class TieWarning(UserWarning):
    """Heads with equal scores straddle a top-k boundary: a random tie-break chose among them."""


# ------------------------------------------------------------------------- labels, checks
def score_label(scores: Scores) -> str:
    """Short label from the metadata: ``hellaswag/1-shot``, ``prefix_matching/paper``.

    The task (or, without one, the metric) comes first, then ``{shots}-shot`` and the
    variant when present.
    """
    meta = scores.meta
    parts = [str(meta["task"]) if meta.get("task") is not None else scores.metric]
    if meta.get("shots") is not None:
        parts.append(f"{meta['shots']}-shot")
    if meta.get("variant") is not None:
        parts.append(str(meta["variant"]))
    return "/".join(parts)


def _labels(scores: Sequence[Scores]) -> tuple[str, ...]:
    """Labels for a list of scores, made unique with ``#i`` suffixes where they repeat."""
    raw = [score_label(s) for s in scores]
    return tuple(f"{lab}#{i}" if raw.count(lab) > 1 else lab for i, lab in enumerate(raw))


def _check_heads(scores: Sequence[Scores], caller: str, *, at_least: int = 1) -> np.ndarray:
    """Stack per-head scores of one shape into a [n_sets, n_layers * n_heads] matrix."""
    scores = list(scores)
    if len(scores) < at_least:
        raise HeadlensError(f"{caller}: needs at least {at_least} score sets, got {len(scores)}")
    for s in scores:
        if not isinstance(s, Scores):
            raise HeadlensError(f"{caller}: expected headlens.results.Scores, got {type(s).__name__}")
        if not s.per_head:
            raise HeadlensError(
                f"{caller}: {score_label(s)} is per layer (shape {s.values.shape}); pass "
                "per-head scores [n_layers, n_heads]")
    shapes = {s.values.shape for s in scores}
    if len(shapes) > 1:
        raise HeadlensError(
            f"{caller}: score sets have different shapes {sorted(shapes)}; compare scores "
            "of the same model only")
    mat = np.stack([s.values.ravel() for s in scores])
    if not np.isfinite(mat).all():
        raise HeadlensError(f"{caller}: scores contain NaN or inf; recompute or drop them")
    return mat


def _unravel(flat: np.ndarray, n_heads: int) -> set[Head]:
    return {(int(i // n_heads), int(i % n_heads)) for i in flat}


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


# ------------------------------------------------------------------------- rank agreement
@dataclass(frozen=True)
class Agreement:
    """Rank correlation between every pair of score sets.

    Attributes:
        method: ``spearman`` or ``kendall`` (tau-b).
        labels: one label per score set (see :func:`score_label`).
        matrix: [n_sets, n_sets] correlations; 1 on the diagonal, NaN where a set is
            constant (the correlation is undefined).
        p_values: [n_sets, n_sets] two-sided p-values of scipy's test of zero correlation;
            0 on the diagonal.
        n: number of heads correlated.
    """

    method: str
    labels: tuple[str, ...]
    matrix: np.ndarray
    p_values: np.ndarray
    n: int

    def to_frame(self):
        """The correlation matrix as a labelled DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.matrix, index=list(self.labels), columns=list(self.labels))


_CORR: dict[str, Callable[..., Any]] = {"spearman": stats.spearmanr, "kendall": stats.kendalltau}


def _check_method(method: str, caller: str) -> None:
    if method not in _CORR:
        raise HeadlensError(f"{caller}: method must be spearman or kendall, got {method!r}")


def rank_agreement(scores: Sequence[Scores], method: Method = "spearman") -> Agreement:
    """Spearman's rho or Kendall's tau-b between the head scores of every pair of sets.

    For sets a and b over the same N heads, Spearman's rho is the Pearson correlation of
    their ranks, rho = cov(rank(a), rank(b)) / (sd(rank(a)) sd(rank(b))), ties averaged
    (Spearman, 1904); Kendall's tau-b = (C - D) / sqrt((C + D + T_a)(C + D + T_b)) over head
    pairs (Kendall, 1945). Both come from ``scipy.stats``. The SCORES are correlated, head by
    head; correlating ``argsort`` vectors, as the reference did, compares which head sits at
    each rank and is near 0 even for strongly related scores.

    Args:
        scores: per-head scores of one model, all [n_layers, n_heads].
        method: ``spearman`` or ``kendall``.

    Returns:
        An :class:`Agreement` with the [n_sets, n_sets] matrix and p-values.
    """
    _check_method(method, "rank_agreement")
    mat = _check_heads(scores, "rank_agreement")
    n_sets = mat.shape[0]
    corr = np.eye(n_sets)
    pval = np.zeros((n_sets, n_sets))
    constant = np.ptp(mat, axis=1) == 0
    for i in range(n_sets):
        for j in range(i + 1, n_sets):
            if constant[i] or constant[j]:
                r, p = np.nan, np.nan
            else:
                res = _CORR[method](mat[i], mat[j])
                r, p = float(res.statistic), float(res.pvalue)
            corr[i, j] = corr[j, i] = r
            pval[i, j] = pval[j, i] = p
    corr[constant, constant] = np.nan
    _readonly(corr, pval)
    return Agreement(method=method, labels=_labels(scores), matrix=corr, p_values=pval,
                     n=int(mat.shape[1]))


def _group(scores: Sequence[Scores], key: str, caller: str) -> dict[Any, list[Scores]]:
    groups: dict[Any, list[Scores]] = {}
    for s in scores:
        if s.meta.get(key) is None:
            raise HeadlensError(
                f"{caller}: {score_label(s)} ({s.metric}) has no meta[{key!r}]; group only "
                "task scores that record task and shots")
        groups.setdefault(s.meta[key], []).append(s)
    # numbers (shots) in numeric order, then names in alphabetical order
    return dict(sorted(groups.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))


def by_shot(scores: Sequence[Scores], method: Method = "spearman") -> dict[Any, Agreement]:
    """Tasks x tasks agreement at each number of shots: {shots: Agreement}.

    Groups by ``meta['shots']``; a shot with a single task gives a 1 x 1 matrix.
    """
    return {k: rank_agreement(g, method) for k, g in _group(scores, "shots", "by_shot").items()}


def by_task(scores: Sequence[Scores], method: Method = "spearman") -> dict[Any, Agreement]:
    """Shots x shots agreement for each task: {task: Agreement} (grouped by ``meta['task']``)."""
    out = {}
    for task, group in _group(scores, "task", "by_task").items():
        group = sorted(group, key=lambda s: float(s.meta.get("shots") or 0))
        out[task] = rank_agreement(group, method)
    return out


@dataclass(frozen=True)
class Baseline:
    """Null distribution of rank correlation between independent random head orders.

    Attributes:
        method, n, n_samples, seed: what was sampled.
        mean: mean correlation (0 in expectation).
        low, high: the 2.5% and 97.5% quantiles (a 95% band).
        sd_theory: the large-n standard deviation, 1/sqrt(n-1) for Spearman and
            sqrt(2(2n+5) / (9n(n-1))) for Kendall (Kendall, 1948).
    """

    method: str
    n: int
    n_samples: int
    seed: int
    mean: float
    low: float
    high: float
    sd_theory: float


def random_baseline(n: int, method: Method = "spearman", *, n_samples: int = 1000,
                    seed: int = 0) -> Baseline:
    """Correlation of two independent uniformly random rankings of ``n`` heads (seeded).

    Without loss of generality one ranking is the identity and the other a random
    permutation. Spearman uses rho = 1 - 6 sum(d^2) / (n (n^2 - 1)) (exact for
    permutations), vectorised over samples; Kendall calls scipy per sample.
    """
    _check_method(method, "random_baseline")
    if n < 3:
        raise HeadlensError(f"random_baseline: needs at least 3 heads, got n={n}")
    if n_samples < 2:
        raise HeadlensError(f"random_baseline: n_samples must be >= 2, got {n_samples}")
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(n), (n_samples, 1)), axis=1)
    if method == "spearman":
        d = perms - np.arange(n)
        r = 1.0 - 6.0 * (d.astype(np.float64) ** 2).sum(axis=1) / (n * (n**2 - 1.0))
        sd = 1.0 / np.sqrt(n - 1.0)
    else:
        ident = np.arange(n)
        r = np.array([stats.kendalltau(ident, p).statistic for p in perms])
        sd = float(np.sqrt(2.0 * (2 * n + 5) / (9.0 * n * (n - 1))))
    low, high = np.quantile(r, [0.025, 0.975])
    return Baseline(method=method, n=n, n_samples=n_samples, seed=seed, mean=float(r.mean()),
                    low=float(low), high=float(high), sd_theory=float(sd))


# ------------------------------------------------------------------------- set overlap
def _resolve_k(n: int, k: int | None, percent: float | None, caller: str, *, minimum: int = 1) -> int:
    if (k is None) == (percent is None):
        raise HeadlensError(f"{caller}: pass exactly one of k= (a count) or percent= (of {n} heads)")
    if percent is not None:
        if not 0 < percent <= 100:
            raise HeadlensError(f"{caller}: percent must be in (0, 100], got {percent}")
        k = max(1, int(round(percent / 100.0 * n)))
    if not minimum <= int(k) <= n or int(k) != k:
        raise HeadlensError(f"{caller}: k must be an integer in [{minimum}, {n}] (the number of heads), "
                            f"got {k}")
    return int(k)


def _tie_rng(scores: Scores, seed: int) -> np.random.Generator:
    values = np.ascontiguousarray(scores.values, dtype=np.float64)
    payload = json.dumps([int(seed), score_label(scores), list(values.shape),
                          hashlib.sha256(values.tobytes()).hexdigest()])
    return np.random.default_rng(np.random.SeedSequence(int(hashlib.sha256(payload.encode()).hexdigest(), 16)))


def top_order(scores: Scores, *, seed: int = 0) -> np.ndarray:
    """Flat head indices (l * n_heads + h), highest score first; ties in a seeded random order.

    The tie-break is a uniformly random permutation from a generator seeded by ``seed``, the
    set's label (:func:`score_label`) and a SHA-256 hash of its values, so two different score
    sets break their ties independently, and the same set always the same way.
    """
    flat = _check_heads([scores], "top_order")[0]
    perm = _tie_rng(scores, seed).permutation(flat.size)
    return np.lexsort((perm, -flat))  # sorted by -score, then by the random key


def _tied_at(flat: np.ndarray, order: np.ndarray, k: int) -> int:
    """Heads whose score equals the k-th best when some of them fall outside the top k, else 0."""
    if not 0 < k < flat.size or flat[order[k - 1]] != flat[order[k]]:
        return 0
    return int((flat == flat[order[k - 1]]).sum())


def _warn_ties(caller: str, where: Sequence[str], seed: int) -> None:
    if where:
        warnings.warn(f"{caller}: equal scores straddle the top-k boundary ({'; '.join(where)}); "
                      f"a random tie-break (seed {seed}) picked among them, so those heads' membership "
                      f"is not determined by the scores: choose k where the scores differ, or read "
                      f"the overlap as uncertain", TieWarning, stacklevel=3)


def top_k_set(scores: Scores, k: int | None = None, percent: float | None = None, *,
              seed: int = 0) -> set[Head]:
    """The k highest-scoring heads as a set of (layer, head); ties in a seeded random order.

    Pass ``k`` (a count, >= 1) or ``percent`` (of all heads, rounded, at least 1), not both.
    Ties are broken as in :func:`top_order`; a :class:`TieWarning` is issued when tied heads
    straddle the boundary (some in the set, some out).
    """
    mat = _check_heads([scores], "top_k_set")[0]
    k = _resolve_k(mat.size, k, percent, "top_k_set")
    order = top_order(scores, seed=seed)
    tied = _tied_at(mat, order, k)
    _warn_ties("top_k_set", [f"{score_label(scores)}: {tied} heads tie at k={k}"] if tied else [], seed)
    return _unravel(order[:k], scores.values.shape[1])


def combined_rank(a: Scores, b: Scores) -> Scores:
    """Heads high in BOTH a and b: the mean of their rank fractions, (rank(a) + rank(b)) / 2N.

    Ranks are ascending (best head = N), ties averaged; used to define "induction by both
    prefix matching and copying" as one ranking. The result has metric ``combined_rank``.
    """
    mat = _check_heads([a, b], "combined_rank")
    ranks = stats.rankdata(mat, axis=1) / mat.shape[1]
    return Scores(values=ranks.mean(axis=0).reshape(a.values.shape), metric="combined_rank",
                  model=a.model, meta={"combined_of": [score_label(a), score_label(b)]})


def head_sets(importance: Scores | None = None, prefix_matching: Scores | None = None,
              copying: Scores | None = None, *, k: int | None = None,
              percent: float | None = None,
              both: Literal["intersection", "rank"] = "intersection",
              seed: int = 0) -> dict[str, set[Head]]:
    """The study's head sets at one k: ``important``, ``prefix_matching``, ``copying``, ``induction``.

    ``induction`` (heads that are induction heads by both measures) is, with
    ``both='intersection'``, top-k(prefix matching) & top-k(copying), which may hold fewer
    than k heads; with ``both='rank'``, the top k of :func:`combined_rank`, always k heads.
    Sets whose scores are not given are left out. Ties: see :func:`top_k_set` (``seed``).
    """
    if both not in ("intersection", "rank"):
        raise HeadlensError(f"head_sets: both must be intersection or rank, got {both!r}")
    out: dict[str, set[Head]] = {}
    for name, s in (("important", importance), ("prefix_matching", prefix_matching),
                    ("copying", copying)):
        if s is not None:
            out[name] = top_k_set(s, k, percent, seed=seed)
    if prefix_matching is not None and copying is not None:
        if both == "intersection":
            out["induction"] = out["prefix_matching"] & out["copying"]
        else:
            out["induction"] = top_k_set(combined_rank(prefix_matching, copying), k, percent, seed=seed)
    return out


def set_overlap(a: set[Head], b: set[Head], n_total: int) -> dict[str, float]:
    """Overlap of two head sets drawn from ``n_total`` heads, against random choice.

    With I = |a & b|:

    * ``jaccard`` = I / |a | b| (NaN if both are empty);
    * ``recall_b_by_a`` = I / |b|: the share of b's heads that a also contains;
      ``recall_a_by_b`` = I / |a|: the share of a's heads found in b (NaN for an empty set);
    * ``expected_intersection`` = |a| |b| / n_total and ``expected_jaccard`` = E[I / (|a| + |b| - I)]:
      their means if b were |b| heads chosen uniformly at random;
    * ``p_value`` = P(X >= I) for X ~ Hypergeometric(n_total, |a|, |b|), from
      ``scipy.stats.hypergeom.sf(I - 1, ...)``: how often random choice overlaps this much
      (one-sided; Fisher's exact test).
    """
    a, b = set(a), set(b)
    na, nb, inter = len(a), len(b), len(a & b)
    union = len(a | b)
    if n_total < union or n_total < 1:
        raise HeadlensError(
            f"set_overlap: n_total={n_total} is smaller than the {union} distinct heads given; "
            "pass the number of heads of the model (n_layers * n_heads)")
    support = np.arange(max(0, na + nb - n_total), min(na, nb) + 1)
    pmf = stats.hypergeom.pmf(support, n_total, na, nb)
    denom = na + nb - support
    jac_i = np.divide(support, denom, out=np.zeros(len(support)), where=denom > 0)
    return {
        "n_a": na, "n_b": nb, "n_total": int(n_total), "intersection": inter,
        "jaccard": inter / union if union else float("nan"),
        "recall_b_by_a": inter / nb if nb else float("nan"),
        "recall_a_by_b": inter / na if na else float("nan"),
        "expected_intersection": na * nb / n_total,
        "expected_jaccard": float((pmf * jac_i).sum()) if union else float("nan"),
        "p_value": float(stats.hypergeom.sf(inter - 1, n_total, na, nb)),
    }


def _default_ks(n: int) -> list[int]:
    return sorted({max(1, int(round(p / 100 * n))) for p in (1, 2, 5, 10, 15, 20, 30, 40, 50)})


def overlap_sweep(score_a: Scores, score_b: Scores, ks: Sequence[int] | None = None, *,
                  seed: int = 0):
    """:func:`set_overlap` of top-k(a) and top-k(b) for each k: one DataFrame row per k.

    Columns: ``k``, ``percent`` (k / N * 100), every key of :func:`set_overlap`, and
    ``ties_a`` / ``ties_b``: heads tied across the top-k boundary of each set (0 when the
    set is determined by the scores; see :func:`top_order` for the tie-break).
    ``ks`` defaults to 1, 2, 5, 10, 15, 20, 30, 40 and 50% of the heads.
    """
    import pandas as pd

    mat = _check_heads([score_a, score_b], "overlap_sweep")
    n, n_heads = mat.shape[1], score_a.values.shape[1]
    ks = _default_ks(n) if ks is None else [_resolve_k(n, int(k), None, "overlap_sweep") for k in ks]
    order_a, order_b = top_order(score_a, seed=seed), top_order(score_b, seed=seed)
    rows = [{"k": k, "percent": 100.0 * k / n,
             **set_overlap(_unravel(order_a[:k], n_heads), _unravel(order_b[:k], n_heads), n),
             "ties_a": _tied_at(mat[0], order_a, k), "ties_b": _tied_at(mat[1], order_b, k)}
            for k in ks]
    df = pd.DataFrame(rows)
    df.attrs = {"a": score_label(score_a), "b": score_label(score_b), "seed": seed}
    where = [f"{df.attrs[side]} at k={', '.join(str(k) for k in df.k[df[f'ties_{side}'] > 0])}"
             for side in ("a", "b") if (df[f"ties_{side}"] > 0).any()]
    _warn_ties("overlap_sweep", where, seed)
    return df


@dataclass(frozen=True)
class OverlapMatrix:
    """Top-k overlap between every pair of score sets.

    Attributes:
        labels: one per set; k: heads per set; n_total: heads in the model.
        jaccard, intersection, expected_intersection, p_values: [n_sets, n_sets]
            (see :func:`set_overlap`; p-values are one-sided hypergeometric).
        tied: per set, the heads tied across its top-k boundary (0: the set is determined
            by the scores; otherwise a seeded random tie-break chose, see :func:`top_order`).
        seed: the tie-break seed.
    """

    labels: tuple[str, ...]
    k: int
    n_total: int
    jaccard: np.ndarray
    intersection: np.ndarray
    expected_intersection: np.ndarray
    p_values: np.ndarray
    tied: tuple[int, ...] = ()
    seed: int = 0


def overlap_matrix(scores: Sequence[Scores], k: int | None = None,
                   percent: float | None = None, *, seed: int = 0) -> OverlapMatrix:
    """:func:`set_overlap` of the top-k sets of every pair of score sets (ties: :func:`top_order`)."""
    mat = _check_heads(scores, "overlap_matrix")
    n = mat.shape[1]
    k = _resolve_k(n, k, percent, "overlap_matrix")
    orders = [top_order(s, seed=seed) for s in scores]
    tied = tuple(_tied_at(row, order, k) for row, order in zip(mat, orders))
    labels = _labels(scores)
    _warn_ties("overlap_matrix", [f"{lab}: {t} heads tie at k={k}" for lab, t in zip(labels, tied) if t], seed)
    top = np.stack([order[:k] for order in orders])
    member = np.zeros(mat.shape, dtype=np.int64)
    np.put_along_axis(member, top, 1, axis=1)
    inter = member @ member.T
    union = 2 * k - inter
    jac = np.divide(inter, union, out=np.full(inter.shape, np.nan), where=union > 0)
    expected = np.full(inter.shape, k * k / n)
    pval = stats.hypergeom.sf(inter - 1, n, k, k)
    _readonly(jac, inter, expected, pval)
    return OverlapMatrix(labels=labels, k=k, n_total=n, jaccard=jac, intersection=inter,
                         expected_intersection=expected, p_values=pval, tied=tied, seed=seed)


# ------------------------------------------------------------------------- retained score
def retained_curve(ranking: Scores, target: Scores,
                   fractions: Sequence[float] | np.ndarray = np.linspace(0, 0.9, 10), *,
                   n_random: int = 200, seed: int = 0, clip: bool = True):
    """Share of the total target score kept as heads are removed, lowest ``ranking`` first.

    Removing the m = round(f N) heads with the lowest ranking score (ties: earlier head
    first, as :func:`headlens.gates.mask_lowest` prunes), the retained share is
    R(f) = sum_{kept} t_h / sum_{all} t_h with t = max(target, 0) when ``clip`` (negative
    prefix-matching or copying scores would otherwise count as a gain when removed).
    Random removal keeps (N - m) / N in expectation, exactly; the band is the 2.5-97.5%
    quantiles of R over ``n_random`` seeded random orders.

    Returns:
        DataFrame with ``fraction``, ``n_removed``, ``retained``, ``random_expected``,
        ``random_mean``, ``random_low``, ``random_high``.
    """
    import pandas as pd

    mat = _check_heads([ranking, target], "retained_curve")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or ((fr < 0) | (fr > 1)).any():
        raise HeadlensError(f"retained_curve: fractions must be a list of numbers in [0, 1], got {fractions}")
    if n_random < 2:
        raise HeadlensError(f"retained_curve: n_random must be >= 2, got {n_random}")
    t = np.clip(mat[1], 0, None) if clip else mat[1]
    total = t.sum()
    if total <= 0:
        raise HeadlensError(
            f"retained_curve: target {score_label(target)} has no positive score to retain; "
            "pass a score that is positive for some heads")
    n = t.size
    m = np.rint(fr * n).astype(np.int64)
    # removed(m) = cumsum over the removal order up to m; prepend 0 for m = 0
    order = np.argsort(mat[0], kind="stable")
    removed = np.concatenate([[0.0], np.cumsum(t[order])])[m]
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(n), (n_random, 1)), axis=1)
    rand_removed = np.concatenate([np.zeros((n_random, 1)), np.cumsum(t[perms], axis=1)], axis=1)[:, m]
    rand = 1.0 - rand_removed / total
    low, high = np.quantile(rand, [0.025, 0.975], axis=0)
    df = pd.DataFrame({"fraction": fr, "n_removed": m, "retained": 1.0 - removed / total,
                       "random_expected": 1.0 - m / n, "random_mean": rand.mean(axis=0),
                       "random_low": low, "random_high": high})
    df.attrs = {"ranking": score_label(ranking), "target": score_label(target)}
    return df


# ------------------------------------------------------------------------- one-call summary
@dataclass(frozen=True)
class OverlapSummary:
    """Every overlap measure between two head scores (e.g. task importance vs induction).

    Attributes:
        spearman, spearman_p, kendall, kendall_p: rank agreement over all heads.
        k, jaccard, recall_b_by_a, intersection, expected_intersection, p_value: top-k overlap.
        retained: share of b's (clipped) score kept after pruning the lowest ``fraction``
            of heads by a; random_expected = 1 - fraction.
    """

    spearman: float
    spearman_p: float
    kendall: float
    kendall_p: float
    k: int
    jaccard: float
    recall_b_by_a: float
    intersection: int
    expected_intersection: float
    p_value: float
    fraction: float
    retained: float
    random_expected: float


def overlap_summary(a: Scores, b: Scores, *, k: int | None = None, percent: float | None = None,
                    fraction: float = 0.5, seed: int = 0) -> OverlapSummary:
    """All measures for one pair: rank agreement, top-k overlap (ties: :func:`top_k_set`), and
    b retained when pruning by a."""
    sp = rank_agreement([a, b], "spearman")
    kd = rank_agreement([a, b], "kendall")
    n = a.values.size
    kk = _resolve_k(n, k, percent, "overlap_summary")
    ov = set_overlap(top_k_set(a, kk, seed=seed), top_k_set(b, kk, seed=seed), n)
    ret = retained_curve(a, b, [fraction], n_random=2).iloc[0]
    return OverlapSummary(
        spearman=float(sp.matrix[0, 1]), spearman_p=float(sp.p_values[0, 1]),
        kendall=float(kd.matrix[0, 1]), kendall_p=float(kd.p_values[0, 1]), k=kk,
        jaccard=ov["jaccard"], recall_b_by_a=ov["recall_b_by_a"], intersection=ov["intersection"],
        expected_intersection=ov["expected_intersection"], p_value=ov["p_value"],
        fraction=float(fraction), retained=float(ret["retained"]),
        random_expected=float(ret["random_expected"]))


# ------------------------------------------------------------------------- causal check
def causal_check(model, task: str, shots: int, induction: Scores, importance: Scores,
                 ks: Sequence[int], *, limit: int | None = None, seed: int = 0,
                 n_random: int = 3, evaluate: Callable[..., Any] | None = None,
                 metric: str = "acc"):
    """Task accuracy after ablating (head gate 0) k heads chosen three ways, for each k.

    Conditions: ``none`` (no ablation, k = 0), ``top_induction`` (the k highest
    ``induction`` scores), ``random`` (k heads drawn uniformly, ``n_random`` draws from
    ``numpy.random.default_rng(seed)``; mean and std over draws) and ``least_important``
    (the k lowest ``importance`` scores). Every evaluation uses the same ``seed`` and
    ``limit``, so all conditions see the same examples (a paired comparison). If induction
    heads drive in-context learning, top_induction should hurt more than random, and
    least_important should hurt least.

    Args:
        model: a loaded model (``model.cfg.n_layers``, ``model.cfg.n_heads``).
        evaluate: ``evaluate(model, task, shots, *, limit, seed, gates) -> result`` with
            ``result.metrics[metric]``; defaults to :func:`headlens.scoring.evaluate`.

    Returns:
        DataFrame with ``task``, ``shots``, ``k``, ``condition``, ``acc`` (mean of
        ``metric``), ``acc_std`` (0 for single runs), ``n_runs``, ``heads`` (the ablated
        heads, ``L{l}H{h}`` joined by spaces; draws separated by `` | ``).
    """
    import pandas as pd
    import torch

    from headlens.model.gates import Gates, n_layers_heads

    task_evaluator = None
    if evaluate is None:  # prompts prepared once, scored through each condition's gates
        from headlens.analyses.pruning import TaskEvaluator

        task_evaluator = TaskEvaluator(model, task, shots, limit=limit, seed=seed, metric=metric)
    n_layers, n_heads = n_layers_heads(model)
    _check_heads([induction, importance], "causal_check")
    if induction.values.shape != (n_layers, n_heads):
        raise HeadlensError(
            f"causal_check: scores have shape {induction.values.shape}, the model has "
            f"({n_layers}, {n_heads}) heads; pass scores computed on this model")
    n = n_layers * n_heads
    ks = [_resolve_k(n, int(k), None, "causal_check", minimum=0) for k in ks]
    if n_random < 1:
        raise HeadlensError(f"causal_check: n_random must be >= 1, got {n_random}")
    device = device_of(model)

    def run(flat: np.ndarray) -> float:
        heads = torch.ones(n_layers * n_heads, device=device)
        heads[torch.as_tensor(flat, dtype=torch.long, device=device)] = 0.0
        gates = Gates(heads=heads.reshape(n_layers, n_heads))
        if task_evaluator is not None:
            return task_evaluator(gates)
        result = evaluate(model, task, shots, limit=limit, seed=seed, gates=gates)
        return float(getattr(result, "metrics", result)[metric])

    def names(flat: np.ndarray) -> str:
        return " ".join(head_label(int(i // n_heads), int(i % n_heads)) for i in sorted(flat))

    ind_order = np.argsort(-induction.values.ravel(), kind="stable")
    imp_order = np.argsort(importance.values.ravel(), kind="stable")
    rng = np.random.default_rng(seed)
    rows = [{"k": 0, "condition": "none", "runs": [run(np.array([], dtype=np.int64))], "heads": ""}]
    for k in ks:
        draws = [rng.choice(n, size=k, replace=False) for _ in range(n_random)]
        for cond, sets in (("top_induction", [ind_order[:k]]), ("random", draws),
                           ("least_important", [imp_order[:k]])):
            rows.append({"k": k, "condition": cond, "runs": [run(s) for s in sets],
                         "heads": " | ".join(names(s) for s in sets)})
    df = pd.DataFrame([{"task": task, "shots": shots, "k": r["k"], "condition": r["condition"],
                        "acc": float(np.mean(r["runs"])), "acc_std": float(np.std(r["runs"])),
                        "n_runs": len(r["runs"]), "heads": r["heads"]} for r in rows])
    df.attrs = {"metric": metric, "seed": seed, "limit": limit,
                "induction": score_label(induction), "importance": score_label(importance)}
    return df
