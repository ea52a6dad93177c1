"""Importance (all heads and FFNs, gradient gates) vs plain scoring of the same examples.

Target (issue 4): importance <= 3.5x the time of scoring the same N examples. Each mode runs
in its own subprocess so peak memory (max RSS above the loaded model) is measured cleanly.
Prints one table; no assertions on time.

    python benchmarks/importance_bench.py [--n 64] [--layers 6] [--d-model 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Item:  # the fields of headlens.prompts.PreparedExample the two code paths read
    context_ids: list
    choice_ids: list
    gold: int
    contexts_ids: list | None = None

    def context_for(self, choice):
        return self.context_ids


def build(folder: Path, layers: int, d_model: int, vocab: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    sys.path.insert(0, str(ROOT))
    from tests.builders import build_tokenizer

    tok = build_tokenizer(folder, vocab_size=vocab)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=d_model, n_layer=layers,
                     n_head=d_model // 32, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(str(folder))


def items(n: int, vocab: int, ctx: int = 160, n_choices: int = 4):
    import numpy as np

    g = np.random.default_rng(0)
    return [Item(g.integers(3, vocab, ctx).tolist(),
                 [g.integers(3, vocab, g.integers(2, 6)).tolist() for _ in range(n_choices)],
                 int(g.integers(0, n_choices))) for _ in range(n)]


def run_mode(mode: str, folder: str, n: int, batch: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from headlens.analyses.importance import head_importance
    from headlens.model.loading import load_model
    from headlens.analyses.scoring import choice_logprobs

    torch.set_num_threads(2)
    model = load_model(folder, device="cpu")
    data = items(n, model.cfg.d_vocab)
    warm = data[:2]
    if mode == "scoring":
        choice_logprobs(model, warm, batch_size=batch * 4, progress=False)
    else:
        head_importance(model, warm, batch_size=batch, progress=False)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if mode == "scoring":  # batch_size counts rows (choices): same examples per pass
        choice_logprobs(model, data, batch_size=batch * 4, progress=False)
    else:
        head_importance(model, data, batch_size=batch, progress=False)
    dt = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "seconds": dt, "peak_rss_mb": rss1 / 1024, "peak_above_start_mb": (rss1 - rss0) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--_mode")
    ap.add_argument("--_folder")
    a = ap.parse_args()
    if a._mode:
        print(json.dumps(run_mode(a._mode, a._folder, a.n, a.batch)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), a.layers, a.d_model, a.vocab)
        res = {}
        for mode in ("scoring", "importance"):
            out = subprocess.run([sys.executable, __file__, "--_mode", mode, "--_folder", tmp,
                                  "--n", str(a.n), "--batch", str(a.batch)],
                                 capture_output=True, text=True, check=True)
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    s, i = res["scoring"], res["importance"]
    print(f"model: random GPT-2 {a.layers} layers x {a.d_model // 32} heads, d_model {a.d_model}; "
          f"N={a.n} examples, 160-token contexts, 4 choices")
    print(f"{'mode':<12}{'seconds':>10}{'peak RSS MB':>14}{'peak above start MB':>22}")
    for r in (s, i):
        print(f"{r['mode']:<12}{r['seconds']:>10.2f}{r['peak_rss_mb']:>14.0f}{r['peak_above_start_mb']:>22.0f}")
    ratio = i["seconds"] / s["seconds"]
    print(f"importance / scoring time ratio: {ratio:.2f}x (target <= 3.5x): {'OK' if ratio <= 3.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
