"""Throughput on a real model (issue 15, item 7): eval, importance, induction, layer distances,
and the cost of a multiple-choice query relative to one forward pass over its context.

    python benchmarks/real_bench.py [--model smollm2-135m] [--threads 1] [--limit 8]

``--model`` is a model registry name (default ``smollm2-135m``) or a checkpoint folder, e.g.
the converted ``/work/models/smollm2-135m``. CPU by default; about 4-5 minutes on one
thread of a shared 2-core machine. Prints one table; asserts nothing about time. Absolute
tokens/s depend on the machine and its load, so read the ratios: they are measured in the
same run, interleaved (each mode once per round, ``--rounds`` rounds, the best round kept).

What is timed (every count is in tokens of the model's tokenizer):

- eval: :func:`choice_logprobs` (shared-context scoring, what ``headlens eval`` and the
  pruning curves run) on 5-shot prompts of a few offline tasks (``--limit`` queries each)
  and on the study tasks' fixtures under tests/fixtures/tasks (3-shot: their train splits
  have 3 documents; fewer where a task's demonstrations must have a given label, WSC). tokens = context + every choice's continuation, per query.
- item 3 ratio: the same queries through the per-choice path (:func:`per_choice_logprobs`,
  the scoring before shared contexts) and through one plain forward pass over the contexts
  alone (``model(tokens)``, logits at every position: "ctx fwd"; and with
  ``logits_to_keep=1``, the transformer body without the unembedding: "ctx body", the
  stricter baseline, since shared scoring unembeds only the scored positions), all batched
  ``--batch`` rows per pass, longest first. ratio = time(path) / time(baseline).
- importance: :func:`head_importance` (Bansal variant, one forward + backward per batch of
  8 examples, all head and FFN gates) on the offline prompts; tokens = context + gold choice.
- induction: prefix matching (seeds 0-4, ``[BOS] + S x 4``) and the ``corrected`` copying
  score (seed 0, ``[BOS] + S``, ``len(S) = 4L``); tokens = sequence lengths.
- distances: :func:`layer_distances` on the embedded corpus (``--texts`` texts, batches of 8).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures" / "tasks"
OFFLINE_TASKS = ("letter_first", "number_larger", "label_flipped", "recall_value")
STUDY_SHOTS = 3  # the fixtures' train splits hold 3 documents


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def context_forward(model, items, batch_size: int, **kwargs) -> None:
    """One plain forward pass over each query's context, ``batch_size`` rows per pass
    (``logits_to_keep=1``: the body only, the unembedding at the last position alone)."""
    import torch

    ctxs = sorted((it.context_ids for it in items), key=len, reverse=True)
    device = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, len(ctxs), batch_size):
            chunk = ctxs[s: s + batch_size]
            tokens = torch.zeros(len(chunk), len(chunk[0]), dtype=torch.long)
            for r, c in enumerate(chunk):
                tokens[r, : len(c)] = torch.tensor(c)
            model(tokens.to(device), **kwargs)


def query_tokens(items) -> int:
    return sum(len(it.context_ids) + sum(len(c) for c in it.choice_ids) for it in items)


def bench_scoring(model, groups: dict[str, list], batch_size: int, rounds: int) -> list[dict]:
    """Best-of-``rounds`` seconds of the three modes per group, interleaved within a round."""
    import numpy as np

    from headlens.analyses.scoring import choice_logprobs, per_choice_logprobs

    modes = {
        "context": lambda items: context_forward(model, items, batch_size),
        "body": lambda items: context_forward(model, items, batch_size, logits_to_keep=1),
        "shared": lambda items: choice_logprobs(model, items, batch_size=batch_size, progress=False),
        "per_choice": lambda items: per_choice_logprobs(model, items, batch_size=batch_size, progress=False),
    }
    best = {(g, m): float("inf") for g in groups for m in modes}
    for _ in range(rounds):
        for g, items in groups.items():
            outs = {}
            for m, fn in modes.items():
                dt, outs[m] = _timed(lambda: fn(items))
                best[g, m] = min(best[g, m], dt)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(outs["shared"], outs["per_choice"]))
            if diff > 1e-4:
                raise SystemExit(f"real_bench: shared and per-choice scores differ by {diff:.2e} on {g}")
    return [{"group": g, "queries": len(items), "ctx_tokens": sum(len(it.context_ids) for it in items),
             "tokens": query_tokens(items), **{m: best[g, m] for m in modes}} for g, items in groups.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="registry name or checkpoint folder")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--limit", type=int, default=8, help="queries per offline task")
    ap.add_argument("--batch", type=int, default=16, help="rows per forward pass when scoring")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (best kept)")
    ap.add_argument("--texts", type=int, default=16, help="texts for layer distances")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    torch.set_num_threads(a.threads)
    from headlens.analyses.importance import head_importance
    from headlens.analyses.induction import copying, prefix_matching, sequence_length
    from headlens.analyses.layers import layer_distances
    from headlens.analyses.scoring import choice_logprobs
    from headlens.errors import HeadlensError
    from headlens.model.loading import load_model
    from headlens.tasks import task_names
    from headlens.tasks.prompts import prepare
    from headlens.tasks.texts import batches, load_texts

    t_start = time.perf_counter()
    load_s, model = _timed(lambda: load_model(a.model, device=a.device))
    cfg = model.cfg
    print(f"model {a.model}: {cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, "
          f"vocab {cfg.d_vocab}; loaded in {load_s:.1f} s; torch threads {a.threads}; device {a.device}")

    offline = [it for t in OFFLINE_TASKS for it in prepare(model, t, 5, limit=a.limit).items]
    study, fewer = [], []
    for t in task_names("study"):
        for k in range(STUDY_SHOTS, -1, -1):  # as many shots as the fixture's train split allows
            try:
                study += prepare(model, t, k, data_dir=FIXTURES).items
                break
            except HeadlensError:
                continue
        if k < STUDY_SHOTS:
            fewer.append(f"{t} {k}-shot")
    if fewer:
        print(f"fixtures with fewer than {STUDY_SHOTS} usable demonstrations: {', '.join(fewer)}")
    # warm-up: the one-time packing probe and first-call allocations stay out of the timings
    choice_logprobs(model, offline[:2], progress=False)
    context_forward(model, offline[:2], a.batch)

    rows = bench_scoring(model, {f"offline 5-shot ({len(OFFLINE_TASKS)} tasks)": offline,
                                 f"study fixtures {STUDY_SHOTS}-shot (14 tasks)": study}, a.batch, a.rounds)
    print(f"\n== multiple-choice scoring: {a.batch} rows per pass, best of {a.rounds} interleaved rounds;"
          f" ctx fwd = model(contexts), ctx body = the same with logits_to_keep=1")
    head = ["n", "ctx tok", "tokens", "ctx fwd", "ctx body", "shared", "per-choice",
            "shared/fwd", "shared/body", "per-choice/fwd", "shared tok/s"]
    print(f"{'queries':<34}" + "".join(f"{h:>{max(len(h) + 2, 9)}}" for h in head))
    tot = {"context": 0.0, "body": 0.0, "shared": 0.0, "per_choice": 0.0, "tokens": 0}

    def line(label, n, ctx_tok, r):
        cells = [n, ctx_tok, r["tokens"], f"{r['context']:.2f}s", f"{r['body']:.2f}s", f"{r['shared']:.2f}s",
                 f"{r['per_choice']:.2f}s", f"{r['shared'] / r['context']:.2f}x", f"{r['shared'] / r['body']:.2f}x",
                 f"{r['per_choice'] / r['context']:.2f}x", f"{r['tokens'] / r['shared']:.0f}"]
        print(f"{label:<34}" + "".join(f"{c:>{max(len(h) + 2, 9)}}" for c, h in zip(cells, head)))

    for r in rows:
        line(r["group"], r["queries"], r["ctx_tokens"], r)
        for k in tot:
            tot[k] += r[k]
    line("all", "", "", tot)
    print(f"eval tokens/s: shared {tot['tokens'] / tot['shared']:.0f}, per-choice "
          f"{tot['tokens'] / tot['per_choice']:.0f} ({tot['per_choice'] / tot['shared']:.2f}x faster); "
          f"a query costs {tot['shared'] / tot['context']:.2f}x one forward over its context "
          f"({tot['shared'] / tot['body']:.2f}x its body without logits; per-choice: "
          f"{tot['per_choice'] / tot['context']:.2f}x)")

    print("\n== other analyses")
    results = []
    gold_tokens = sum(len(it.context_ids) + len(it.choice_ids[it.gold]) for it in offline)
    dt, _ = _timed(lambda: head_importance(model, offline, batch_size=8, progress=False))
    results.append(("importance (bansal, fwd+bwd, heads+FFNs)", f"{len(offline)} prompts", gold_tokens, dt))
    seeds = list(range(5))
    toks = sum(1 + 4 * sequence_length(s) for s in seeds)
    dt, _ = _timed(lambda: prefix_matching(model, seeds))
    results.append(("induction: prefix matching", f"seeds 0-{seeds[-1]}", toks, dt))
    dt, _ = _timed(lambda: copying(model, "corrected", [0]))
    results.append(("induction: copying (corrected)", "seed 0", 1 + 4 * sequence_length(0), dt))
    texts = load_texts(None, a.texts)
    n_tok = sum(int(b.mask.sum()) for b in batches(
        model.tokenizer, texts, batch_size=8, max_len=int(cfg.n_ctx),
        prepend_bos=bool(getattr(cfg, "default_prepend_bos", True)), device="cpu"))
    dt, _ = _timed(lambda: layer_distances(model, texts, batch_size=8))
    results.append(("layer distances", f"{len(texts)} texts", n_tok, dt))
    print(f"{'analysis':<42}{'input':>14}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}")
    for name, what, n, dt in results:
        print(f"{name:<42}{what:>14}{n:>8}{dt:>9.2f}{n / dt:>10.0f}")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
