"""Layer pruning by angular distance (Gromov et al., 2024): distances, block removal, curves.

x(l) is the residual stream entering block l (``hook_resid_pre``) for l < L and the output
of the last block (``hook_resid_post`` of block L-1, before the final norm) for l = L. For
a block of n layers starting at l,

    d(l, n) = mean over samples of arccos(cos(x(l), x(l+n))) / pi,

taken at each sample's last real (non-pad) token, in [0, 1]. The block to drop is
l*(n) = argmin_l d(l, n) (ties: the shallowest). All pairs come from one forward pass per
batch: the L+1 last-token vectors are normalised and their Gram matrix gives every cosine.

Reference: A. Gromov, K. Tirumala, H. Shapourian, P. Glorioso, D. A. Roberts, "The
Unreasonable Ineffectiveness of the Deeper Layers", arXiv:2403.17887 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headlens.errors import HeadlensError
from headlens.model import hooknames
from headlens.model.lm import device_of, nll_sum
from headlens.model.surgery import deepest_block, remove_layers
from headlens.tasks.texts import (
    DatasetTexts,
    TextSource,
    TextSplits,
    batches,
    check_disjoint,
    last_index,
    load_texts,
)

# Version of the layer-distance definition; part of every cache key. Bump it when what
# d(l, n) computes changes, so cached distances become stale.
VERSION = 1


def _context(model, max_len: int | None) -> int:
    n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 2048)
    if max_len is None:
        return n_ctx
    if max_len < 2 or max_len > n_ctx:
        raise HeadlensError(f"max_len must be in [2, {n_ctx}] (the model's context), got {max_len}")
    return max_len


def _texts(texts: TextSource | Sequence[str]) -> list[str]:
    if isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts):
        return load_texts(list(texts))
    return load_texts(texts)  # type: ignore[arg-type]


def _prepend_bos(model) -> bool:
    return bool(getattr(model.cfg, "default_prepend_bos", True))


# ----------------------------------------------------------------------------- distances


@dataclass(frozen=True)
class LayerDistances:
    """Mean angular distances between residual streams at the last real token.

    Attributes:
        pairwise: [L+1, L+1] mean of arccos(cos(x(i), x(j)))/pi over samples (symmetric,
            zero diagonal); x(L) is the last block's output before the final norm.
        n_samples: texts averaged over.
        n_truncated: texts cut to ``max_len`` tokens (start kept).
        max_len: token budget per text (BOS included).
        model: model name.
        meta: anything else worth recording (model fingerprint, source ...).
    """

    pairwise: Float[Tensor, "n_points n_points"]
    n_samples: int
    n_truncated: int
    max_len: int
    model: str = "model"
    meta: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.pairwise.shape[0] - 1

    @property
    def distance(self) -> Float[Tensor, "n_sizes n_starts"]:
        """[L+1, L+1] with ``distance[n, l] = d(l, n)``; NaN where l + n > L; row 0 is zero."""
        size = self.n_layers + 1
        n = torch.arange(size)[:, None]
        l = torch.arange(size)[None, :]
        j = (l + n).clamp(max=size - 1)
        out = self.pairwise[l.expand(size, size), j]
        out = torch.where(n == 0, torch.zeros_like(out), out)  # d(x, x) = 0 exactly
        return torch.where(l + n <= self.n_layers, out, torch.full_like(out, float("nan")))

    @property
    def best_start(self) -> Int[Tensor, " n_sizes"]:
        """[L+1] with ``best_start[n] = l*(n)`` (shallowest on ties; ``best_start[0] = 0``)."""
        d = torch.nan_to_num(self.distance, nan=float("inf"))
        return d.argmin(dim=1)

    def best(self, n: int) -> tuple[int, float]:
        """(l*(n), d(l*(n), n)) for a block of ``n`` layers, 1 <= n <= L."""
        if not 1 <= n <= self.n_layers:
            raise HeadlensError(f"block size n must be in [1, {self.n_layers}], got {n}")
        start = int(self.best_start[n])
        return start, float(self.distance[n, start])

    def to_dict(self) -> dict:
        """JSON-ready: ``distance`` and ``best_start`` are lists over n = 1..L (see ``n``)."""
        ns = list(range(1, self.n_layers + 1))
        d = self.distance
        return {
            "model": self.model, "n_layers": self.n_layers, "n": ns,
            "distance": [[float(x) for x in d[n, : self.n_layers + 1 - n]] for n in ns],
            "best_start": [int(self.best_start[n]) for n in ns],
            "best_distance": [self.best(n)[1] for n in ns],
            "n_samples": self.n_samples, "n_truncated": self.n_truncated, "max_len": self.max_len,
            "meta": self.meta,
        }

    def to_cache(self) -> dict:
        """:meth:`to_dict` plus ``pairwise`` (what :meth:`from_cache` needs to rebuild it)."""
        return {**self.to_dict(), "pairwise": self.pairwise.tolist()}

    @classmethod
    def from_cache(cls, d: dict) -> LayerDistances:
        return cls(pairwise=torch.tensor(d["pairwise"], dtype=torch.float32), n_samples=int(d["n_samples"]),
                   n_truncated=int(d["n_truncated"]), max_len=int(d["max_len"]), model=str(d["model"]),
                   meta=dict(d.get("meta") or {}))

    def to_frame(self):
        """Long DataFrame: one row per (n, l) with its distance and whether l = l*(n)."""
        import pandas as pd

        rows = [{"n": n, "start": l, "distance": float(self.distance[n, l]),
                 "best": l == int(self.best_start[n])}
                for n in range(1, self.n_layers + 1) for l in range(self.n_layers + 1 - n)]
        return pd.DataFrame(rows)


def residual_points(model, tokens: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
                    ) -> Float[Tensor, "batch n_points d_model"]:
    """x(0..L) at each row's last real token, from one forward pass (no logits kept)."""
    n_layers = model.cfg.n_layers
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    last = last_index(mask)
    kept: dict[int, Tensor] = {}

    def keep(index: int):
        def hook(x, hook):
            kept[index] = x[rows, last].detach().double()
            return x
        return hook

    fwd = [(hooknames.resid_pre(layer), keep(layer)) for layer in range(n_layers)]
    fwd.append((hooknames.resid_post(n_layers - 1), keep(n_layers)))
    with torch.no_grad():
        model.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=fwd, return_type=None)
    return torch.stack([kept[i] for i in range(n_layers + 1)], dim=1)


def angular_gram(points: Float[Tensor, "batch n_points d_model"]) -> Float[Tensor, "batch n_points n_points"]:
    """arccos(clamp(cos, -1, 1)) / pi between every pair of points, per sample."""
    unit = points / points.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    cos = (unit @ unit.transpose(-1, -2)).clamp(-1.0, 1.0)
    return torch.arccos(cos) / math.pi


def layer_distances(model, texts: TextSource | Sequence[str], *, batch_size: int = 8,
                    max_len: int | None = None) -> LayerDistances:
    """d(l, n) for every block start l and size n, averaged over ``texts`` (see module doc).

    Args:
        model: a TransformerBridge.
        texts: list of strings, text file path, :class:`~headlens.texts.DatasetTexts`, or
            ``None`` for the embedded corpus.
        batch_size: texts per forward pass.
        max_len: tokens kept per text (start kept); default the model's context.
    """
    texts = _texts(texts)
    max_len = _context(model, max_len)
    size = model.cfg.n_layers + 1
    total = torch.zeros(size, size, dtype=torch.float64)
    truncated = 0
    for batch in batches(model.tokenizer, texts, batch_size=batch_size, max_len=max_len,
                         prepend_bos=_prepend_bos(model), device=device_of(model)):
        total += angular_gram(residual_points(model, batch.tokens, batch.mask)).sum(0).cpu()
        truncated += batch.truncated
    from headlens.model.loading import model_info

    info = model_info(model)
    return LayerDistances(pairwise=(total / len(texts)).float(), n_samples=len(texts),
                          n_truncated=truncated, max_len=max_len, model=info.name,
                          meta={"fingerprint": info.fingerprint})


# ----------------------------------------------------------------------------- caching


@dataclass(frozen=True)
class DistancesOptions:
    """How layer distances are measured; validated once, here.

    Attributes:
        n_texts: the first N texts of the source (None: all of them; the embedded corpus: 64).
        seed: seed of the embedded corpus (other sources ignore it).
        max_len: tokens kept per text (start kept); None: the model's context.
        batch_size: texts per forward pass. Execution only: not part of the cache key.
    """

    n_texts: int | None = 64
    seed: int = 0
    max_len: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name, low, optional in (("n_texts", 1, True), ("seed", 0, False), ("max_len", 2, True),
                                    ("batch_size", 1, False)):
            v = getattr(self, name)
            if (v is None and optional) or (isinstance(v, int) and not isinstance(v, bool) and v >= low):
                continue
            raise HeadlensError(f"layer distances: {name} must be an integer >= {low}"
                                f"{' or None' if optional else ''}, got {v!r}")


def texts_ref(source: TextSource | Sequence[str], n: int | None, seed: int = 0) -> dict:
    """How a text source enters a key: a hash of the texts themselves (files, lists), the
    embedded corpus's generator arguments (count, seed), or the data set's name, config,
    split, column and count."""
    from headlens.results.cache import digest

    if isinstance(source, DatasetTexts):
        return {"dataset": [source.name, source.config, source.split, source.column], "n": n}
    if source is None:  # generated: its arguments identify it (generating it costs a second)
        return {"embedded": {"n": n or 64, "seed": seed}}
    texts = _texts(source) if isinstance(source, (list, tuple)) else load_texts(source, n, seed=seed)
    return {"texts": digest(texts[:n] if n is not None else texts), "n": len(texts[:n] if n is not None else texts)}


def distances_key(model, source: TextSource | Sequence[str], options: DistancesOptions | None = None):
    """The cache key of :func:`cached_layer_distances` (CLI, demo, sweep and notebooks alike).

    Built from the model's content fingerprint and dtype, the texts' content
    (:func:`texts_ref`), ``max_len``, :data:`VERSION` and the headlens version.
    """
    from headlens.model.fingerprint import model_key
    from headlens.results.cache import CacheKey

    options = options or DistancesOptions()
    mk = model_key(model)
    return CacheKey.make("layer_distances", shape=mk.shape, model=mk.part(),
                         texts=texts_ref(source, options.n_texts, options.seed), max_len=options.max_len,
                         version=VERSION)


def valid_distances(value, key) -> bool:
    """A cached entry: [L+1, L+1] finite pairwise distances in [0, 1] for the key's L layers."""
    from headlens.results.cache import finite_array

    pairwise = value.get("pairwise") if isinstance(value, dict) else None
    shape = None if key.shape is None else (key.shape[0] + 1, key.shape[0] + 1)
    if not finite_array(pairwise, shape) or not all(isinstance(value.get(k), int) for k in ("n_samples", "max_len")):
        return False
    arr = torch.tensor(pairwise, dtype=torch.float64)
    return arr.ndim == 2 and arr.shape[0] == arr.shape[1] and bool(((arr >= 0) & (arr <= 1)).all())


def cached_layer_distances(model, source: TextSource | Sequence[str] = None,
                           options: DistancesOptions | None = None, *, cache=None) -> LayerDistances:
    """:func:`layer_distances` on the first ``options.n_texts`` texts of ``source``, cached.

    Args:
        source: list of strings, text file, :class:`~headlens.tasks.texts.DatasetTexts`, or
            None for the embedded corpus.
        cache: a :class:`headlens.results.cache.ResultCache` (default one under
            ``$HEADLENS_CACHE``); ``False`` disables caching. The key is :func:`distances_key`.
    """
    from headlens.results.cache import ResultCache

    options = options or DistancesOptions()
    key = distances_key(model, source, options)
    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())

    def compute():
        texts = (_texts(source)[: options.n_texts] if isinstance(source, (list, tuple))
                 else load_texts(source, options.n_texts, seed=options.seed))
        return layer_distances(model, texts, batch_size=options.batch_size, max_len=options.max_len).to_cache()

    return LayerDistances.from_cache(cache.get_or_compute(key, compute, validate=valid_distances))


# ----------------------------------------------------------------------------- loss and curves


def lm_loss(model, texts: TextSource | Sequence[str], *, batch_size: int = 8,
            max_len: int | None = None) -> float:
    """Mean next-token cross-entropy (nats per token) over every real token of ``texts``.

    Pad positions are neither inputs to a scored prediction nor targets.
    """
    texts = _texts(texts)
    max_len = _context(model, max_len)
    total, count = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for batch in batches(model.tokenizer, texts, batch_size=batch_size, max_len=max_len,
                             prepend_bos=_prepend_bos(model), device=device_of(model)):
            logits = model(batch.tokens, attention_mask=batch.mask)
            s, c = nll_sum(logits, batch.tokens, batch.mask)
            total += s.double().cpu()
            count += c
    if count == 0:
        raise HeadlensError("lm_loss: every text is a single token; give longer texts")
    return float(total / count)


def pruning_curve(model, texts: TextSource | Sequence[str] | TextSplits, *, ns: Sequence[int] | None = None,
                  fractions: Sequence[float] | None = None,
                  methods: Sequence[str] = ("similarity", "deepest"), heal: bool = False,
                  heal_texts: TextSource | Sequence[str] | None = None, heal_kwargs: dict | None = None,
                  tasks: Sequence[str] | None = None, shots: int = 0, limit: int | None = None,
                  seed: int = 0, eval_fn: Callable[[object], dict] | None = None,
                  distances: LayerDistances | None = None, batch_size: int = 8,
                  max_len: int | None = None,
                  calibration_texts: TextSource | Sequence[str] | None = None):
    """Loss (and accuracy per task) vs fraction of layers removed, per method, healed or not.

    Returns a DataFrame with columns n, fraction_removed, method, healed, start, loss, and
    ``acc_<task>`` per task (plus ``eval_fn(model)``'s keys). ``texts`` measure the loss;
    the block is chosen on ``calibration_texts`` (or given ``distances``; with neither, on
    ``texts`` themselves, which lets the evaluation texts pick the block); healing trains on
    ``heal_texts`` (required when ``heal``). Pass a :class:`~headlens.tasks.texts.TextSplits`
    (:func:`~headlens.tasks.texts.split_texts`) as ``texts`` to take all three from it.

    Raises:
        HeadlensError: ``heal_texts`` or ``calibration_texts`` share a text with ``texts``
            (the loss would be measured on what was trained or calibrated on).
    """
    import pandas as pd

    if isinstance(texts, TextSplits):
        splits = texts
        texts = list(splits.eval)
        calibration_texts = list(splits.calibration) if calibration_texts is None else calibration_texts
        heal_texts = list(splits.heal) if heal_texts is None else heal_texts

    L = model.cfg.n_layers
    unknown = set(methods) - {"similarity", "deepest"}
    if unknown:
        raise HeadlensError(f"pruning_curve: unknown method(s) {sorted(unknown)}; available: "
                            f"similarity, deepest")
    if ns is None:
        fractions = fractions if fractions is not None else [i / L for i in range(L)]
        ns = sorted({round(f * L) for f in fractions})
    ns = sorted(set(int(n) for n in ns))
    if any(n < 0 or n >= L for n in ns):
        raise HeadlensError(f"pruning_curve: every n must be in [0, {L - 1}], got {ns}")
    if heal and heal_texts is None:
        raise HeadlensError("pruning_curve: heal=True needs heal_texts (training text, kept apart "
                            "from the evaluation texts)")
    texts = _texts(texts)
    if heal:
        heal_texts = _texts(heal_texts)
        check_disjoint({"evaluation (texts)": texts, "healing (heal_texts)": heal_texts},
                       what="pruning_curve")
    if calibration_texts is not None:
        calibration_texts = _texts(calibration_texts)
        check_disjoint({"evaluation (texts)": texts, "calibration (calibration_texts)": calibration_texts},
                       what="pruning_curve")
    if "similarity" in methods and distances is None:
        # without calibration texts the block is chosen on the evaluation texts themselves
        distances = layer_distances(model, texts if calibration_texts is None else calibration_texts,
                                    batch_size=batch_size, max_len=max_len)

    def measure(m) -> dict:
        row = {"loss": lm_loss(m, texts, batch_size=batch_size, max_len=max_len)}
        for task in tasks or ():
            from headlens.analyses import (
                scoring,  # written in parallel; imported only when asked
            )

            row[f"acc_{task}"] = scoring.evaluate(m, task, shots, limit=limit, seed=seed,
                                                      progress=False).metrics["acc"]
        if eval_fn is not None:
            row.update(eval_fn(m))
        return row

    rows = []
    base = measure(model) if 0 in ns else None
    for method in methods:
        for n in ns:
            if n == 0:
                for healed in ([False, True] if heal else [False]):
                    rows.append({"n": 0, "fraction_removed": 0.0, "method": method,
                                 "healed": healed, "start": None, **base})
                continue
            start = distances.best(n)[0] if method == "similarity" else deepest_block(L, n)
            pruned = remove_layers(model, start, n)
            rows.append({"n": n, "fraction_removed": n / L, "method": method, "healed": False,
                         "start": start, **measure(pruned)})
            if heal:
                from headlens.analyses.healing import heal as run_heal

                healed_model = run_heal(pruned, heal_texts, **(heal_kwargs or {})).model
                rows.append({"n": n, "fraction_removed": n / L, "method": method, "healed": True,
                             "start": start, **measure(healed_model)})
    return pd.DataFrame(rows)
