"""Multiple-choice scoring: sum of log-probabilities of each choice's continuation tokens.

``score(choice) = sum_t log p(c_t | prompt, c_<t)`` (Brown et al. 2020; the lm-evaluation-
harness ``loglikelihood``); the prediction is the argmax (``acc``); ``acc_norm`` divides by
the choice's length in characters. ReCoRD counts the argmax entity right when it is one of
the answers (exact match); MultiRC counts a question right only when all its answers are.

All choices of an example go through one forward pass: when every choice is a single token
and the context is shared, one row (the context) scores them all at its last position;
otherwise each choice is a row ``context + choice[:-1]`` of a right-padded batch (causal
attention never sees the padding on the right, so no mask is needed). Rows of several
examples are packed up to ``batch_size`` rows per pass (an example is never split).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from headlens.errors import HeadlensError
from headlens.tasks.prompts import PreparedExample, prepare
from headlens.tasks import Task, get_task


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


def choice_logprobs(model, items: Sequence[PreparedExample], *, batch_size: int = 16, gates=None,
                    progress: bool = True) -> list[np.ndarray]:
    """Summed continuation log-probabilities, one float64 array [n_choices] per item.

    Args:
        model: a TransformerBridge (or any callable mapping [batch, pos] tokens to logits).
        items: prepared examples (:func:`headlens.prompts.prepare`).
        batch_size: rows per forward pass (an example's choices always share one pass).
        gates: optional :class:`headlens.gates.Gates` applied during the passes.
        progress: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    from headlens.model.gates import gated

    if batch_size < 1:
        raise HeadlensError(f"choice_logprobs: batch_size must be >= 1, got {batch_size}")
    plans = [_rows(it) for it in items]
    # longest first: similar lengths share a batch, so little padding is computed
    order = sorted(range(len(items)), key=lambda i: -max(len(r) for r in plans[i][0]))
    batches: list[list[int]] = []
    filled = batch_size
    for i in order:
        n_rows = len(plans[i][0])
        if filled + n_rows <= batch_size:
            batches[-1].append(i)
            filled += n_rows
        else:
            batches.append([i])
            filled = n_rows
    out: list[np.ndarray] = [np.zeros(len(it.choice_ids)) for it in items]
    device = next(model.parameters()).device if hasattr(model, "parameters") else torch.device("cpu")
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
