"""Multiple-choice scoring: sum of log-probabilities of each choice's continuation tokens.

``score(choice) = sum_t log p(c_t | prompt, c_<t)`` (Brown et al. 2020; the lm-evaluation-
harness ``loglikelihood``); the prediction is the argmax (``acc``); ``acc_norm`` divides by
the choice's length in characters. ReCoRD counts the argmax entity right when it is one of
the answers (exact match); MultiRC counts a question right only when all its answers are.

Shared-context scoring (the default for a TransformerBridge): the prompt a query's choices
share is computed once. Each query becomes ONE packed row ``prefix + r_0 + r_1 + ...``,
where ``prefix`` is the longest common prefix of the choices' rows ``context_j +
choice_j[:-1]`` (the whole k-shot context when the context is shared; the demonstrations
and the common start of the sentence for Winogrande-style per-choice contexts) and ``r_j``
is the rest of choice j's row. A 4D attention mask lets a token of ``r_j`` see the prefix
and the earlier tokens of ``r_j`` only, and position ids restart each ``r_j`` where the
prefix ends, so every scored log-probability is the one a separate row
``context_j + choice_j`` gives (checked to 1e-4 on GPT-2, OPT, GPT-NeoX, Llama and Qwen2;
tests/integration/test_shared_context.py). Head and FFN gates act on the packed pass like
on any other, so pruning curves use it too. Only the scored positions are unembedded
(``logits_to_keep=1`` plus the final norm's output at the scored positions), so the
cost of a query is about one forward pass over its context plus its choices' tokens.

The per-choice path (:func:`per_choice_logprobs`: one right-padded row per choice, the
context recomputed for every choice) is the reference, and the fallback for a plain
callable or an architecture on which a one-time probe finds the packed pass disagrees.
Rows of several examples are packed up to ``batch_size`` rows per pass (an example is never
split).
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from headlens.errors import HeadlensError
from headlens.model import hooknames
from headlens.model.lm import device_of
from headlens.tasks import Task, get_task
from headlens.tasks.prompts import PreparedExample, prepare

PROBE_ATOL = 1e-4  # packed vs per-choice log-probabilities on the probe (fp32: ~1e-6 seen)


def _rows(item: PreparedExample) -> tuple[list[list[int]], list[tuple[int, int, int, int]]]:
    """Token rows of one example and its targets (row, position, token, choice)."""
    single = item.contexts_ids is None and all(len(c) == 1 for c in item.choice_ids)
    if single:
        last = len(item.context_ids) - 1
        return [item.context_ids], [(0, last, c[0], j) for j, c in enumerate(item.choice_ids)]
    rows, targets = [], []
    for j, cont in enumerate(item.choice_ids):
        ctx = item.context_for(j)
        rows.append(ctx + cont[:-1])
        targets.extend((j, len(ctx) - 1 + t, tok, j) for t, tok in enumerate(cont))
    return rows, targets


@dataclass(frozen=True)
class Packed:
    """One query as a single packed row: shared prefix, then each choice's remaining tokens.

    Attributes:
        tokens: packed token ids [n]; positions: position id of each token [n];
        segment: -1 on the shared prefix, j on choice j's remaining tokens [n];
        targets: (packed index whose logits predict the token, token, choice) per scored
            continuation token.
    """

    tokens: list[int]
    positions: list[int]
    segment: list[int]
    targets: list[tuple[int, int, int]]


def pack(item: PreparedExample) -> Packed:
    """Pack a query's choice rows ``context_j + choice_j[:-1]`` around their common prefix.

    With ``p`` the longest common prefix length of the rows, choice j's token at row index
    ``q`` is predicted by the logits at ``q`` when ``q < p`` (the prefix, identical in every
    row) and at ``offset_j + q - p`` otherwise. Positions of ``r_j`` are ``p .. len(row_j)-1``.
    """
    rows = [item.context_for(j) + list(c[:-1]) for j, c in enumerate(item.choice_ids)]
    if any(len(item.context_for(j)) == 0 for j in range(len(rows))):
        raise HeadlensError("choice_logprobs: an example has an empty context (nothing to predict the "
                            "first choice token from); prepare it with headlens.tasks.prompts.prepare")
    p = len(os.path.commonprefix(rows))  # works on any sequences, here lists of token ids
    tokens, positions, segment = list(rows[0][:p]), list(range(p)), [-1] * p
    targets: list[tuple[int, int, int]] = []
    for j, (row, cont) in enumerate(zip(rows, item.choice_ids)):
        offset = len(tokens)
        tokens.extend(row[p:])
        positions.extend(range(p, len(row)))
        segment.extend([j] * (len(row) - p))
        start = len(item.context_for(j)) - 1
        for t, tok in enumerate(cont):
            q = start + t
            targets.append((q if q < p else offset + q - p, int(tok), j))
    return Packed(tokens, positions, segment, targets)


def packed_mask(segment: Int[Tensor, "batch pos"], dtype: torch.dtype = torch.float32
                ) -> Float[Tensor, "batch 1 q_pos k_pos"]:
    """Additive attention mask of packed rows: 0 where key k is visible from query i, the
    dtype's minimum elsewhere. k is visible iff ``k <= i`` and k is on the shared prefix
    (segment -1) or on i's own segment. Right padding carries its own segment id, so it
    sees only the prefix and earlier padding and is never seen.

    Additive, not boolean: attention that defers to Hugging Face's eager kernel (OPT) adds
    the mask to the scores, so a boolean mask would add 0/1 instead of masking.
    """
    n = segment.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segment.device).tril()
    visible = causal[None] & ((segment[:, None, :] == -1) | (segment[:, None, :] == segment[:, :, None]))
    mask = torch.zeros(visible.shape, dtype=dtype, device=segment.device)
    return mask.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]


_PACKING_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_packing(model) -> bool:
    """Packed vs per-choice scores of two small random queries (a shared context with 1- to
    3-token choices; per-choice contexts that share 2 tokens) agree.

    float32/float64: to ``PROBE_ATOL``, which catches an ignored mask or ignored position
    ids. Half precision: the two layouts round differently (bfloat16: 0.2 apart on
    SmolLM2-135M, as far as a leaking mask moves them), so the masking is checked exactly
    instead (the last choice's score does not change by a single bit when the earlier
    choices' tokens change) and the numbers to ``64 * eps`` of the dtype.
    """
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(model.cfg.d_vocab), (20,), generator=g).tolist()
    probe = [_Probe(ids[:5], [ids[5:8], ids[8:9], ids[9:11]]),
             _Probe(ids[:4], [ids[4:6], ids[6:7]], [ids[:4], ids[:2] + ids[11:14]])]
    with torch.no_grad():
        got = _shared_context_logprobs(model, probe, batch_size=2)
    want = per_choice_logprobs(model, probe, batch_size=8, progress=False)
    full = dtype in (torch.float32, torch.float64)
    atol = PROBE_ATOL if full else max(PROBE_ATOL, 64 * torch.finfo(dtype).eps)
    ok = all(np.allclose(a, b, atol=atol, rtol=0) for a, b in zip(got, want))
    if ok and not full:
        # the earlier choices' tokens change (same lengths): the last choice sees none of them
        other = _Probe(ids[:5], [ids[14:17], ids[17:18], ids[9:11]])
        with torch.no_grad():
            one = _shared_context_logprobs(model, probe[:1], batch_size=1)[0]
            two = _shared_context_logprobs(model, [other], batch_size=1)[0]
        ok = bool(one[-1] == two[-1])
    return ok


def _can_pack(model) -> bool:
    """Whether ``model`` takes the packed pass: a TransformerBridge that passes
    :func:`_probe_packing` (run once per model)."""
    if not (hasattr(model, "hooks") and hasattr(model, "cfg") and hasattr(model, "unembed")
            and hooknames.final_out() in getattr(model, "hook_dict", {})):
        return False
    if model not in _PACKING_OK:
        try:
            ok = _probe_packing(model)
        except (TypeError, ValueError, RuntimeError, NotImplementedError):  # refuses a 4D mask
            ok = False
        if not ok:
            arch = getattr(model.cfg, "architecture", None) or type(model).__name__
            warnings.warn(f"choice_logprobs: shared-context scoring does not reproduce per-choice "
                          f"scores on {arch}; scoring every choice separately (slower, same numbers)",
                          stacklevel=3)
        _PACKING_OK[model] = ok
    return _PACKING_OK[model]


@dataclass(frozen=True)
class _Probe:  # the fields of PreparedExample that packing reads
    context_ids: list[int]
    choice_ids: list[list[int]]
    contexts_ids: list[list[int]] | None = None

    def context_for(self, choice: int) -> list[int]:
        return self.contexts_ids[choice] if self.contexts_ids is not None else self.context_ids


def _batches(lengths: Sequence[int], sizes: Sequence[int], batch_size: int) -> list[list[int]]:
    """Group item indices, longest first, into passes of at most ``batch_size`` rows."""
    # longest first: similar lengths share a batch, so little padding is computed
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    filled = batch_size
    for i in order:
        if filled + sizes[i] <= batch_size:
            batches[-1].append(i)
            filled += sizes[i]
        else:
            batches.append([i])
            filled = sizes[i]
    return batches


def _shared_context_logprobs(model, items, *, batch_size: int, progress: bool = False) -> list[np.ndarray]:
    """Packed scoring (see the module docstring); gates come from the caller's context."""
    from tqdm.auto import tqdm

    plans = [pack(it) for it in items]
    batches = _batches([len(p.tokens) for p in plans], [1] * len(plans), batch_size)
    out: list[np.ndarray] = [np.zeros(len(it.choice_ids)) for it in items]
    device = device_of(model)
    dtype = next(model.parameters()).dtype
    captured: dict[str, Tensor] = {}

    def keep(x: Tensor, hook=None) -> Tensor:
        captured["h"] = x
        return x

    with model.hooks(fwd_hooks=[(hooknames.final_out(), keep)]):
        for batch in tqdm(batches, disable=not progress, desc="scoring", unit="batch", leave=False):
            width = max(len(plans[i].tokens) for i in batch)
            tokens = torch.zeros(len(batch), width, dtype=torch.long)
            positions = torch.zeros(len(batch), width, dtype=torch.long)
            segment = torch.full((len(batch), width), -2, dtype=torch.long)
            tgt: list[tuple[int, int, int, int]] = []  # (row, packed index, token, choice)
            for r, i in enumerate(batch):
                pl = plans[i]
                n = len(pl.tokens)
                tokens[r, :n] = torch.tensor(pl.tokens, dtype=torch.long)
                positions[r, :n] = torch.tensor(pl.positions, dtype=torch.long)
                segment[r, :n] = torch.tensor(pl.segment, dtype=torch.long)
                tgt.extend((r, idx, tok, j) for idx, tok, j in pl.targets)
            if not tgt:
                continue
            # logits_to_keep=1: the unembedding runs on one position per row, not all of them
            model(tokens.to(device), attention_mask=packed_mask(segment.to(device), dtype),
                  position_ids=positions.to(device), logits_to_keep=1)
            t = torch.tensor(tgt, dtype=torch.long)
            t_dev = t.to(captured["h"].device)
            hidden = captured.pop("h")[t_dev[:, 0], t_dev[:, 1]]
            # log-softmax only at the scored positions: [n_targets, d_vocab]
            picked = model.unembed(hidden[None])[0].float().log_softmax(-1)
            lp = picked.gather(1, t_dev[:, 2:3]).squeeze(1).double().cpu().numpy()
            row_of, choice_of = t[:, 0].numpy(), t[:, 3].numpy()
            for r, i in enumerate(batch):
                mask = row_of == r
                np.add.at(out[i], choice_of[mask], lp[mask])
    return out


def choice_logprobs(model, items: Sequence[PreparedExample], *, batch_size: int = 16, gates=None,
                    progress: bool = True) -> list[np.ndarray]:
    """Summed continuation log-probabilities, one float64 array [n_choices] per item.

    A TransformerBridge is scored with shared contexts (one packed row per query, see the
    module docstring); anything else, and an architecture that fails the one-time packing
    probe, with :func:`per_choice_logprobs`. Both give the same numbers to 1e-4.

    Args:
        model: a TransformerBridge (or any callable mapping [batch, pos] tokens to logits).
        items: prepared examples (:func:`headlens.prompts.prepare`).
        batch_size: rows per forward pass (a query is one packed row; per-choice: an
            example's choices always share one pass).
        gates: optional :class:`headlens.gates.Gates` applied during the passes.
        progress: show a tqdm bar.
    """
    from headlens.model.gates import gated

    if batch_size < 1:
        raise HeadlensError(f"choice_logprobs: batch_size must be >= 1, got {batch_size}")
    if not _can_pack(model):
        return per_choice_logprobs(model, items, batch_size=batch_size, gates=gates, progress=progress)
    context = gated(model, gates) if gates is not None else nullcontext()
    with context, torch.no_grad():
        return _shared_context_logprobs(model, items, batch_size=batch_size, progress=progress)


def per_choice_logprobs(model, items: Sequence[PreparedExample], *, batch_size: int = 16, gates=None,
                        progress: bool = True) -> list[np.ndarray]:
    """:func:`choice_logprobs` by one right-padded row ``context_j + choice_j[:-1]`` per choice.

    Every choice recomputes its context (about n_choices forward passes over the context
    per query); when every choice is a single token and the context is shared, one row (the
    context) scores them all at its last position. Causal attention never sees the padding
    on the right, so no mask is needed. The reference for the shared-context path.
    """
    from tqdm.auto import tqdm

    from headlens.model.gates import gated

    if batch_size < 1:
        raise HeadlensError(f"choice_logprobs: batch_size must be >= 1, got {batch_size}")
    plans = [_rows(it) for it in items]
    batches = _batches([max(len(r) for r in p[0]) for p in plans], [len(p[0]) for p in plans], batch_size)
    out: list[np.ndarray] = [np.zeros(len(it.choice_ids)) for it in items]
    device = device_of(model)
    context = gated(model, gates) if gates is not None else nullcontext()
    with context, torch.no_grad():
        for batch in tqdm(batches, disable=not progress, desc="scoring", unit="batch", leave=False):
            rows: list[list[int]] = []
            tgt: list[tuple[int, int, int, int, int]] = []  # (row, pos, token, choice, slot)
            for slot, i in enumerate(batch):
                r, t = plans[i]
                tgt.extend((len(rows) + row, pos, tok, choice, slot) for row, pos, tok, choice in t)
                rows.extend(r)
            width = max(len(r) for r in rows)
            tokens = torch.zeros(len(rows), width, dtype=torch.long)
            for n, r in enumerate(rows):
                tokens[n, : len(r)] = torch.tensor(r, dtype=torch.long)
            logits = model(tokens.to(device))
            t = torch.tensor(tgt, dtype=torch.long)
            t_dev = t.to(logits.device)
            # log-softmax only at the scored positions: [n_targets, d_vocab], not the whole batch
            picked = logits[t_dev[:, 0], t_dev[:, 1]].float().log_softmax(-1)
            lp = picked.gather(1, t_dev[:, 2:3]).squeeze(1).double().cpu().numpy()
            slot_of, choice_of = t[:, 4].numpy(), t[:, 3].numpy()
            for slot, i in enumerate(batch):
                mask = slot_of == slot
                np.add.at(out[i], choice_of[mask], lp[mask])
    return out


@dataclass(frozen=True)
class EvalResult:
    """Metrics and per-example records of one evaluation.

    Attributes:
        model: model name; task: task name; shots, seed, split: as evaluated.
        metrics: ``acc``, ``acc_norm``, ``n``, ``truncated``, ``skipped`` (+ ``em`` for
            ReCoRD, ``acc_per_answer`` and ``n_questions`` for MultiRC).
        records: one row per scored example: doc_id, group, gold, gold_set, pred, pred_norm,
            correct, correct_norm, logprobs (per choice, the scores argmax picks from),
            n_demos, n_choices, choices (the continuations as scored), context (the exact
            prompt text before the choices: demonstrations + query, no BOS) and contexts
            (per-choice prompt texts when they differ, Winogrande; else None).
    """

    model: str
    task: str
    shots: int
    seed: int
    split: str
    metrics: dict
    records: pd.DataFrame

    def to_dict(self) -> dict:
        """The CLI's JSON object: model, task, shots, n, acc, acc_norm, truncated, skipped, ..."""
        return {"model": self.model, "task": self.task, "shots": self.shots, "split": self.split,
                "seed": self.seed, **self.metrics}

    def samples(self) -> list[dict]:
        """One dict per scored query, as ``headlens eval --log-samples`` writes them: task,
        doc_id, shots, seed, split, context (the exact prompt text), contexts (Winogrande),
        choices, gold, gold_set, logprobs, pred, correct, n_demos, group."""
        keys = ("doc_id", "context", "contexts", "choices", "gold", "gold_set", "logprobs", "pred", "correct",
                "n_demos", "group")
        out = []
        for row in self.records[list(keys)].to_dict("records"):
            rec = {"task": self.task, "doc_id": int(row.pop("doc_id")), "shots": self.shots, "seed": self.seed,
                   "split": self.split, **row}
            rec["gold"], rec["pred"] = int(rec["gold"]), int(rec["pred"])
            rec["correct"], rec["n_demos"] = bool(rec["correct"]), int(rec["n_demos"])
            rec["choices"], rec["gold_set"] = list(rec["choices"]), [int(g) for g in rec["gold_set"]]
            if rec["contexts"] is None:
                del rec["contexts"]
            if rec["group"] is None:
                del rec["group"]
            out.append(rec)
        return out


def _metrics(task: Task, records: pd.DataFrame, truncated: int, skipped: int) -> dict:
    n = len(records)
    metrics: dict = {"n": n, "truncated": truncated, "skipped": skipped}
    if n == 0:
        return {**metrics, "acc": float("nan"), "acc_norm": float("nan")}
    if task.metric == "multirc":
        by_q = records.groupby("group", sort=False)
        metrics["acc"] = float(by_q["correct"].all().mean())
        metrics["acc_norm"] = float(by_q["correct_norm"].all().mean())
        metrics["acc_per_answer"] = float(records["correct"].mean())
        metrics["n_questions"] = int(by_q.ngroups)
    else:
        metrics["acc"] = float(records["correct"].mean())
        metrics["acc_norm"] = float(records["correct_norm"].mean())
        if task.metric == "record_em":
            metrics["em"] = metrics["acc"]
    return {k: metrics[k] for k in ("n", "acc", "acc_norm", "truncated", "skipped")} | {
        k: v for k, v in metrics.items() if k not in ("n", "acc", "acc_norm", "truncated", "skipped")}


def evaluate(model, task: Task | str, shots: int, *, limit: int | None = None, seed: int = 0,
             split: str | None = None, gates=None, data_dir: str | Path | None = None,
             batch_size: int = 16, progress: bool = True) -> EvalResult:
    """k-shot accuracy of ``model`` on ``task`` (optionally through ``gates``).

    Args:
        model: a TransformerBridge (``headlens.load_model``).
        task: registry name, task file path, or Task.
        shots: demonstrations per query.
        limit: first ``limit`` queries of the split; seed: demonstration draw.
        split: default ``task.eval_split``; gates: :class:`headlens.gates.Gates` or None.
        data_dir: local data folder; batch_size: rows per forward pass.

    Returns:
        EvalResult with ``.metrics`` and ``.records``.
    """
    task = get_task(task)
    prepared = prepare(model, task, shots, split=split, limit=limit, seed=seed, data_dir=data_dir)
    return evaluate_prepared(model, prepared, gates=gates, batch_size=batch_size, progress=progress)


def _check_finite(model, prepared, scores: Sequence[np.ndarray]) -> None:
    """Raise when any log-probability is NaN or inf: argmax would turn it into a confident answer."""
    bad = [i for i, lp in enumerate(scores) if not np.isfinite(lp).all()]
    if bad:
        info = getattr(model, "headlens_info", None)
        name = info.name if info is not None else type(model).__name__
        raise HeadlensError(
            f"evaluate: {len(bad)} of {len(scores)} {prepared.task.name} examples got NaN or inf "
            f"log-probabilities from model {name}; its weights or activations are not finite (e.g. a "
            f"diverged healing run, or float16 overflow: try --dtype float32); no accuracy is reported")


def evaluate_prepared(model, prepared, *, gates=None, batch_size: int = 16,
                      progress: bool = False) -> EvalResult:
    """Score already-prepared prompts (:func:`headlens.prompts.prepare`), e.g. many times
    through different gates when pruning; same metrics as :func:`evaluate`."""
    scores = choice_logprobs(model, prepared.items, batch_size=batch_size, gates=gates, progress=progress)
    _check_finite(model, prepared, scores)
    rows = []
    for item, lp in zip(prepared.items, scores):
        lengths = np.array([max(len(c), 1) for c in item.example.choices], dtype=np.float64)
        pred, pred_norm = int(np.argmax(lp)), int(np.argmax(lp / lengths))
        contexts = (None if item.example.contexts is None
                    else tuple(item.prompt_for(j) for j in range(len(item.choice_ids))))
        rows.append({"doc_id": item.example.doc_id, "group": item.group, "gold": item.gold,
                     "gold_set": item.gold_set, "pred": pred, "pred_norm": pred_norm,
                     "correct": pred in item.gold_set, "correct_norm": pred_norm in item.gold_set,
                     "logprobs": lp.tolist(), "n_demos": item.n_demos, "n_choices": len(lp),
                     "choices": item.example.choices, "context": item.prompt, "contexts": contexts})
    records = pd.DataFrame(rows, columns=["doc_id", "group", "gold", "gold_set", "pred", "pred_norm", "correct",
                                          "correct_norm", "logprobs", "n_demos", "n_choices", "choices",
                                          "context", "contexts"])
    info = getattr(model, "headlens_info", None)
    name = info.name if info is not None else type(model).__name__
    return EvalResult(model=name, task=prepared.task.name, shots=prepared.shots, seed=prepared.seed,
                      split=prepared.split, metrics=_metrics(prepared.task, records, prepared.truncated,
                                                             prepared.skipped), records=records)
