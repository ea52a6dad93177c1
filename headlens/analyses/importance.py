"""Head and FFN importance by gradient gates (Michel et al. 2019; Bansal et al. 2023).

Every head's output before W_O (``hook_z``) is multiplied by a gate xi and every FFN
output (``hook_mlp_out``) by a gate; the gates are per token, so one backward pass gives,
for head h of layer l at token t, ``dL/dxi_t = a_t . g_t`` where a_t is the head's output and
g_t the gradient of the loss with respect to it. Parameters stay frozen: no parameter
gradient is ever allocated. The loss is the negative log-probability of the gold
continuation tokens only (context tokens are not scored), summed over each example's
continuation tokens.

Variants:
    ``bansal``: ``I(l,h) = (1/T) sum_examples sum_t |a_t . g_t|`` with T the number of
        (non-pad) tokens, the absolute value taken per token (Bansal et al. 2023).
    ``michel``: ``I(l,h) = (1/N) sum_examples |sum_t a_t . g_t|``, the absolute value of
        each example's gate gradient, averaged over the N examples (Michel et al. 2019).
FFN importance uses the same two formulas on the FFN gates. ``ffn_oracle`` is the
reference's oracle: remove one FFN, re-evaluate, score = accuracy drop.

Normalisation (``normalize``), with N_i the tokens of example i (context + gold
continuation) and C_i its gold continuation tokens:
    ``mean`` (default): the loss is the gold NLL summed over each example's continuation
        tokens; ``bansal`` divides every layer by T = sum_i N_i, ``michel`` by the number of
        examples.
    ``reference``: what the study's code (amazon-science/llm-interpret,
        ``calculate_importance`` in ``lm_eval/base.py``) computes, for replication. Its
        loss is Hugging Face's ``.loss``, the MEAN NLL over the gold tokens of a batch of
        one example, so example i's gradients carry a factor 1/C_i; it sums |a_t . g_t| over
        all positions, then divides layers 0 .. L-2 by sum_i (N_i - 1) ("the gradient is
        calculated over N - 1 tokens") and the last layer by sum_i C_i (in the last layer only
        the C_i positions that predict a gold token have a gradient):
        ``I(l,h) = sum_i (1/C_i) sum_t |a_t . g_t| / D_l``, ``D_l = sum_i (N_i - 1)`` for
        l < L-1, ``D_{L-1} = sum_i C_i``. Only with ``variant="bansal"`` (the reference has
        no other). The reference scores heads only; the same scaling is applied to the FFN
        gates here. Its effect: short-continuation examples weigh more, and the last layer is
        a mean over gold positions while the others are means over all positions (most of
        which have near-zero gradient), which inflates the last layer relative to the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from headlens.errors import HeadlensError, closest
from headlens.model import hooknames
from headlens.model.lm import pad_token_id, right_pad
from headlens.results.scores import Scores

Variant = Literal["bansal", "michel"]
Normalize = Literal["none", "l2_layer", "sum"]
VARIANTS: tuple[str, ...] = get_args(Variant)
TokenNorm = Literal["mean", "reference"]
TOKEN_NORMS: tuple[str, ...] = get_args(TokenNorm)

# Version of the importance definition; part of every cache key. Bump it when what is
# computed changes (formula, normalisation, prompts), so old cached maps become stale.
VERSION = 2  # 2: documents without a correct answer are skipped


@dataclass(frozen=True)
class Importance:
    """Head ([n_layers, n_heads]) and FFN ([n_layers]) importance of one task and shot count."""

    heads: Scores
    ffn: Scores

    def to_dict(self) -> dict[str, Any]:
        return {"heads": self.heads.to_dict(), "ffn": self.ffn.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Importance:
        return cls(heads=Scores.from_dict(d["heads"]), ffn=Scores.from_dict(d["ffn"]))


def pack_gold(items: Sequence[Any], pad_id: int) -> tuple[
        Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """Right-padded ``context + gold continuation`` batch.

    Returns:
        tokens [batch, pos]; attention mask [batch, pos] (1 on real tokens); and
        ``target_mask`` [batch, pos] that is 1 at positions whose NEXT token is a gold
        continuation token (the positions whose log-probabilities the loss sums).
    """
    seqs, starts = [], []
    for it in items:
        cont = list(it.choice_ids[it.gold])
        if not cont:
            raise HeadlensError("importance: an example's gold continuation has no tokens; "
                                "check the task's choices (an empty choice cannot be scored)")
        seqs.append(list(it.context_ids) + cont)
        starts.append(len(it.context_ids))
    tokens, attn = right_pad(seqs, pad_id)
    target = torch.zeros(tokens.shape)
    for i, (s, st) in enumerate(zip(seqs, starts)):
        target[i, max(st - 1, 0): len(s) - 1] = 1.0
    return tokens, attn, target


def gold_nll(logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"],
             target: Float[Tensor, "batch pos"]) -> Float[Tensor, " batch"]:
    """Per-example sum of -log p(next token) over the target positions (float32, chunk-free:
    log-softmax is taken only at the target positions)."""
    b, p = torch.nonzero(target[:, :-1], as_tuple=True)
    logp = torch.log_softmax(logits[b, p].float(), dim=-1)
    nll = -logp.gather(-1, tokens[b, p + 1][:, None])[:, 0]
    return torch.zeros(tokens.shape[0], dtype=nll.dtype, device=nll.device).index_add(0, b, nll)


def gate_gradients(model, tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                   target: Float[Tensor, "batch pos"]) -> tuple[
        Float[Tensor, "n_layers batch pos n_heads"], Float[Tensor, "n_layers batch pos"]]:
    """Per-token gate gradients ``a_t . g_t`` for every head and every FFN, one backward pass.

    The gates are leaf tensors at 1, so the forward pass is unchanged; model parameters
    are not touched (they stay frozen and get no ``.grad``).
    """
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    device = next(model.parameters()).device
    tokens, attention_mask, target = tokens.to(device), attention_mask.to(device), target.to(device)
    b, p = tokens.shape
    head_gate = torch.ones(n_layers, b, p, n_heads, device=device, requires_grad=True)
    ffn_gate = torch.ones(n_layers, b, p, device=device, requires_grad=True)

    def head_hook(layer):
        return lambda z, hook: z * head_gate[layer].to(z.dtype)[..., None]

    def ffn_hook(layer):
        return lambda x, hook: x * ffn_gate[layer].to(x.dtype)[..., None]

    hooks = [(hooknames.z(l), head_hook(l)) for l in range(n_layers)]
    hooks += [(hooknames.mlp_out(l), ffn_hook(l)) for l in range(n_layers)]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens, attention_mask=attention_mask)
        loss = gold_nll(logits, tokens, target).sum()
        hg, fg = torch.autograd.grad(loss, [head_gate, ffn_gate])
    return hg.detach(), fg.detach()


def _check_norm(normalize: str, variant: str, caller: str) -> None:
    if normalize not in TOKEN_NORMS:
        raise HeadlensError(f"{caller}: unknown normalize {normalize!r}; {closest(normalize, TOKEN_NORMS)}")
    if normalize == "reference" and variant != "bansal":
        raise HeadlensError(f"{caller}: normalize='reference' replicates the reference's bansal "
                            f"scores; use it with variant='bansal', not {variant!r}")


def head_importance(model, items: Sequence[Any], *, variant: Variant = "bansal", batch_size: int = 8,
                    progress: bool = True, meta: dict[str, Any] | None = None,
                    normalize: TokenNorm = "mean") -> Importance:
    """Head and FFN importance over prepared examples (see the module docstring for formulas).

    Args:
        model: a TransformerBridge (parameters frozen).
        items: prepared examples with ``context_ids``, ``choice_ids`` and ``gold``
            (see :func:`headlens.prompts.prepare`); only the gold continuation is scored.
        variant: ``bansal`` (|.| per token, / token count) or ``michel`` (|.| per example, / N).
        batch_size: examples per forward/backward pass (no effect on the result).
        normalize: ``mean`` (default) or ``reference`` (the study code's scaling; bansal
            only); see the module docstring.
        meta: extra metadata stored in the result (task, shots, seed ...).

    Returns:
        :class:`Importance` with ``heads`` [n_layers, n_heads] and ``ffn`` [n_layers].

    Raises:
        HeadlensError: no examples, unknown variant or normalisation, or non-finite gradients
            (fp16 underflow/overflow: rerun with float32 or bfloat16).
    """
    if variant not in VARIANTS:
        raise HeadlensError(f"head_importance: unknown variant {variant!r}; {closest(variant, VARIANTS)}")
    _check_norm(normalize, variant, "head_importance")
    n_given = len(items)
    # a document with no acceptable answer (ReCoRD: no entity matches its answers) has no
    # gold continuation: scoring its placeholder choice would measure a wrong target
    items = [it for it in items if getattr(it, "gold_set", None) != ()]
    if len(items) == 0:
        raise HeadlensError("head_importance: no examples to score (none given, or none with a correct "
                            "answer); check the task, split and --limit")
    from tqdm.auto import tqdm

    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    head_acc = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    ffn_acc = torch.zeros(n_layers, dtype=torch.float64)
    n_tokens = n_gold = 0
    pad_id = _pad_id(model)
    starts = range(0, len(items), batch_size)
    for s in tqdm(starts, desc="importance", disable=not progress, leave=False):
        tokens, attn, target = pack_gold(items[s: s + batch_size], pad_id)
        hg, fg = gate_gradients(model, tokens, attn, target)
        mask = attn.to(hg.device, hg.dtype)
        gold = target.sum(1)  # C_i: gold continuation tokens of each example
        if normalize == "reference":  # gradient of each example's MEAN gold NLL: a factor 1/C_i
            mask = mask / gold.to(mask.device, mask.dtype)[:, None]
        n_gold += int(gold.sum())
        if variant == "bansal":
            head_acc += (hg.abs() * mask[None, :, :, None]).sum((1, 2)).double().cpu()
            ffn_acc += (fg.abs() * mask[None]).sum((1, 2)).double().cpu()
        else:
            head_acc += (hg * mask[None, :, :, None]).sum(2).abs().sum(1).double().cpu()
            ffn_acc += (fg * mask[None]).sum(2).abs().sum(1).double().cpu()
        n_tokens += int(attn.sum())
    if normalize == "reference":  # layers before the last: sum_i (N_i - 1); last: sum_i C_i
        denom = torch.full((n_layers,), float(n_tokens - len(items)), dtype=torch.float64)
        denom[-1] = float(n_gold)
    else:
        denom = torch.full((n_layers,), float(n_tokens if variant == "bansal" else len(items)),
                           dtype=torch.float64)
    heads, ffn = (head_acc / denom[:, None]).numpy(), (ffn_acc / denom).numpy()
    if not (np.isfinite(heads).all() and np.isfinite(ffn).all()):
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        raise HeadlensError(
            f"head_importance: gate gradients are NaN/inf with dtype {dtype} (fp16 underflow or "
            f"overflow); rerun with --dtype float32 or bfloat16")
    from headlens.model.loading import model_info

    info = model_info(model)
    m = {"variant": variant, "normalize": normalize, "n_examples": len(items),
         "n_without_answer": n_given - len(items), "n_tokens": n_tokens,
         "model_fingerprint": info.fingerprint, **(meta or {})}
    return Importance(heads=Scores(heads, metric="head_importance", model=info.name, meta=m),
                      ffn=Scores(ffn, metric="ffn_importance", model=info.name, meta=m))


def _pad_id(model) -> int:
    return pad_token_id(model.tokenizer)


def normalize(values: np.ndarray, how: Normalize = "none") -> np.ndarray:
    """Normalise one score array (heads [n_layers, n_heads] or FFNs [n_layers]).

    ``none``: unchanged. ``sum``: divided by the sum of absolute values, so every task
    weighs the same in a mean. ``l2_layer``: each layer's head vector divided by its L2 norm,
    s[l, h] / ||s[l, :]||_2 (Michel et al. 2019, "Are sixteen heads really better than one?");
    for a per-layer array, the whole vector by its norm. Zero rows/totals stay zero.
    """
    v = np.asarray(values, dtype=np.float64)
    if how == "none":
        return v.copy()
    if how == "l2_layer":
        norm = np.linalg.norm(v, axis=-1, keepdims=True)
    elif how == "sum":
        norm = np.abs(v).sum(keepdims=True)
    else:
        raise HeadlensError(f"normalize: unknown normalisation {how!r}; available: none, l2_layer, sum")
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def aggregate(scores: Sequence[Scores], normalize_by: Normalize = "sum") -> Scores:
    """The aggregate ranking: mean of several score sets after normalising each one.

    The reference averaged raw scores, so tasks with large gradients dominated; here each
    set is normalised first (see :func:`normalize`). ``std`` of the result is the spread of
    the normalised sets. Meta: ``task='aggregate'``, ``aggregate_of`` (labels), ``normalize``.
    """
    if not scores:
        raise HeadlensError("aggregate: no scores given")
    shapes = {s.values.shape for s in scores}
    if len(shapes) != 1:
        raise HeadlensError(f"aggregate: scores have different shapes {sorted(shapes)}; use one model")
    normed = np.stack([normalize(s.values, normalize_by) for s in scores])
    metrics = {s.metric for s in scores}
    models = {s.model for s in scores}
    variants = {s.meta.get("variant") for s in scores}
    fingerprints = {s.fingerprint for s in scores}
    labels = [str(s.meta.get("task", s.name)) + (f"/{s.meta['shots']}-shot" if s.meta.get("shots") is not None else "")
              if s.meta.get("task") is not None else s.name for s in scores]
    return Scores(normed.mean(axis=0), metric=metrics.pop() if len(metrics) == 1 else "aggregate",
                  model=models.pop() if len(models) == 1 else "",
                  meta={"task": "aggregate", "aggregate_of": labels, "normalize": normalize_by,
                        "variant": variants.pop() if len(variants) == 1 else None,
                        "model_fingerprint": fingerprints.pop() if len(fingerprints) == 1 else None},
                  std=normed.std(axis=0))


def ffn_oracle(model, evaluate: Callable[[Any], float]) -> Scores:
    """FFN importance by removal (the reference's oracle): score(l) = acc - acc(without FFN l).

    Args:
        evaluate: ``evaluate(gates) -> accuracy``; called once with no gates and once per
            layer with that layer's FFN gate at 0.
    """
    from headlens.model.gates import Gates
    from headlens.model.loading import model_info

    n_layers = int(model.cfg.n_layers)
    base = float(evaluate(None))
    drops = np.empty(n_layers)
    for layer in range(n_layers):
        g = torch.ones(n_layers)
        g[layer] = 0.0
        drops[layer] = base - float(evaluate(Gates(ffn=g)))
    info = model_info(model)
    return Scores(drops, metric="ffn_importance", model=info.name,
                  meta={"variant": "oracle", "base_acc": base, "model_fingerprint": info.fingerprint})


@dataclass(frozen=True)
class ImportanceOptions:
    """How importance is measured for one task and shot count; validated once, here.

    Attributes:
        variant: ``bansal`` (|.| per token, / tokens) or ``michel`` (|.| per example, / N).
        limit: queries (the first ``limit`` of the split); None: the task's ``importance_limit``.
        seed: seed of the demonstration draw.
        split: None: the task's ``importance_split`` (train).
        batch_size: examples per forward/backward pass. Execution only: it does not change
            the result, so it is not part of the cache key.
        normalize: ``mean`` (default) or ``reference`` (the study code's scaling, bansal only).
    """

    variant: Variant = "bansal"
    limit: int | None = None
    seed: int = 0
    split: str | None = None
    batch_size: int = 8
    normalize: TokenNorm = "mean"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise HeadlensError(f"importance: unknown variant {self.variant!r}; {closest(str(self.variant), VARIANTS)}")
        _check_norm(str(self.normalize), self.variant, "importance")
        if self.limit is not None and (not _is_int(self.limit) or self.limit < 1):
            raise HeadlensError(f"importance: limit must be an integer >= 1 or None (the task's own), got {self.limit!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise HeadlensError(f"importance: seed must be an integer >= 0, got {self.seed!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise HeadlensError(f"importance: batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.split is not None and (not isinstance(self.split, str) or not self.split):
            raise HeadlensError(f"importance: split must be a split name or None, got {self.split!r}")

    def resolved(self, task) -> dict[str, Any]:
        """The options that define the result, defaults filled in from ``task``."""
        return {"variant": self.variant, "seed": self.seed, "normalize": self.normalize,
                "limit": self.limit if self.limit is not None else task.importance_limit,
                "split": self.split or task.importance_split}


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def importance_key(model, task, shots: int, options: ImportanceOptions | None = None, *,
                   data_dir=None):
    """The cache key of :func:`task_importance`: the one used by the CLI, demo, sweep and notebooks.

    Built from the model's content fingerprint and dtype, the content of the task's data
    (query split, plus the train split when ``shots > 0``; file bytes, never a path: see
    :func:`headlens.tasks.sources.data_fingerprint`), ``shots``, the resolved options,
    :data:`VERSION` and the headlens version.

    Args:
        model: a bridge, or a :class:`~headlens.results.cache.ModelKey` (sweeps key jobs
            before loading the model).
    """
    from headlens.model.fingerprint import model_key
    from headlens.results.cache import CacheKey
    from headlens.tasks import get_task
    from headlens.tasks.sources import data_fingerprint

    options = options or ImportanceOptions()
    if not _is_int(shots) or shots < 0:
        raise HeadlensError(f"importance: shots must be an integer >= 0, got {shots!r}")
    task = get_task(task)
    mk = model_key(model)
    opts = options.resolved(task)
    splits = {opts["split"]} | ({task.train_split} if shots else set())
    return CacheKey.make("importance", shape=mk.shape, model=mk.part(),
                         data=data_fingerprint(task, splits, data_dir), shots=int(shots), options=opts,
                         version=VERSION)


def valid_importance(value: Any, key) -> bool:
    """A cached importance entry: heads [n_layers, n_heads] and FFNs [n_layers], finite, of the key's model."""
    from headlens.results.cache import valid_scores

    if not isinstance(value, dict):
        return False
    heads, ffn = value.get("heads"), value.get("ffn")
    fp = key.parts.get("model", {}).get("fingerprint")
    shape = key.shape
    if not (valid_scores(heads, shape, fp) and valid_scores(ffn, None if shape is None else shape[:1], fp)):
        return False
    h, f = np.shape(heads["values"]), np.shape(ffn["values"])
    return len(h) == 2 and len(f) == 1 and h[0] == f[0]


def task_importance(model, task, shots: int, *, options: ImportanceOptions | None = None,
                    limit: int | None = None, seed: int = 0, variant: Variant = "bansal",
                    split: str | None = None, data_dir=None, batch_size: int = 8, cache=None,
                    progress: bool = True, normalize: TokenNorm = "mean") -> Importance:
    """Importance of every head and FFN for one task and shot count, cached.

    Prompts come from :func:`headlens.prompts.prepare` on the task's importance split (the
    train split, first documents in dataset order; demonstrations never include the query),
    so scoring and importance use exactly the same continuation tokens.

    Args:
        model: a TransformerBridge; task: registry name, task file or Task; shots: k.
        options: :class:`ImportanceOptions`; when given, ``limit``, ``seed``, ``variant``,
            ``split``, ``batch_size`` and ``normalize`` are ignored (they build the options otherwise).
        limit: number of queries (default: the task's ``importance_limit``, 2,500 in the study).
        cache: a :class:`headlens.results.cache.ResultCache` (default one under
            ``$HEADLENS_CACHE``); ``False`` disables caching. The key is :func:`importance_key`;
            a cached entry of the wrong shape, non-finite, or of another model is recomputed.
        normalize: ``mean`` (default) or ``reference`` (the study code's scaling, for
            replication); see the module docstring.

    Returns:
        :class:`Importance`; both score sets carry ``meta["model_fingerprint"]`` and
        ``meta["cache_key"]`` (the entry's digest, which pruning curves use to name their ranking).
    """
    from headlens.results.cache import ResultCache, array_digest
    from headlens.tasks import get_task
    from headlens.tasks.prompts import prepare

    if options is None:
        options = ImportanceOptions(variant=variant, limit=limit, seed=seed, split=split, batch_size=batch_size,
                                    normalize=normalize)
    task = get_task(task)
    cache = ResultCache(enabled=False) if cache is False else (cache or ResultCache())
    key = importance_key(model, task, shots, options, data_dir=data_dir)
    opts = options.resolved(task)

    def compute():
        prepared = prepare(model, task, shots, split=opts["split"], limit=opts["limit"], seed=options.seed,
                           data_dir=data_dir)
        meta = {"task": task.name, "task_version": task.version, "shots": shots, "seed": options.seed,
                "split": opts["split"], "limit": opts["limit"], "truncated": prepared.truncated,
                "skipped": prepared.skipped, "cache_key": key.digest}
        out = head_importance(model, prepared.items, variant=options.variant, batch_size=options.batch_size,
                              progress=progress, meta=meta, normalize=options.normalize).to_dict()
        for part in ("heads", "ffn"):  # lets a ranking prove it is this entry's, unmodified
            out[part]["meta"]["values_digest"] = array_digest(out[part]["values"])
        return out

    return Importance.from_dict(cache.get_or_compute(key, compute, validate=valid_importance))
