"""Train the shipped model ``tiny-icl``: a word-level tokenizer and a 2-layer Llama-style LM on CPU.

``python -m tools.train_tiny --out data/models/tiny-icl --seed 0`` rebuilds it (one CPU
thread, which is faster than two for a model this small; the defaults are the shipped
model's settings). The model: 2 layers, d_model 128, 4
heads of 32, SwiGLU MLP 384, rotary positions (chosen because "attend k tokens back", which
the copying tasks and induction heads need, is a relative offset; ``--arch gpt2`` trains a
GPT-2 with learned positions instead). The training mixture:

* few-shot episodes of the offline suite (:mod:`headlens.tasks.synthetic`): one task, 2..8 of its
  train examples joined by blank lines, so item ``k`` is a ``k``-shot query; the loss is the
  cross-entropy of every item's answer token;
* a warm-up of ``--repeat-warmup`` steps (1,500) on short repeated sequences only, then
* repeated random-token sequences ``[BOS] + S * r`` (``S``: distinct random tokens), 30% of
  them in the induction-probe shape ``[BOS] + S * 4`` with ``25 <= len(S) <= 127``; the loss
  is on the repeats after the first, the tokens an induction head can predict.

The tokenizer is word-level (tokens are split on spaces; every ``\\n`` is its own token).
Its ids after the four special tokens are ordered by frequency in a sample of training
episodes (ties and tokens that occur only in random sequences: in :func:`synthetic.vocabulary`
order), so id order is a frequency order for samplers that exclude frequent/rare tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from headlens.tasks import synthetic

SPECIALS = ("[BOS]", "[EOS]", "[PAD]", "[UNK]")
BOS, EOS, PAD, UNK = range(4)


# ----------------------------------------------------------------------------- tokenizer
def token_frequencies(seed: int = 0, n_episodes: int = 4000) -> Counter:
    """Token counts over ``n_episodes`` training episodes (words split on spaces, ``\\n`` kept)."""
    rng = np.random.default_rng([seed, 0x70C])
    pools = {t: synthetic.examples(t, "train", seed=seed, n=500) for t in synthetic.TASKS}
    counts: Counter = Counter()
    for _ in range(n_episodes):
        _, items = synthetic.training_episode(rng, pools)
        counts.update(_words(synthetic.episode_text(items)))
    return counts


def _words(text: str) -> list[str]:
    return [w for piece in text.split(" ") for w in _split_newlines(piece) if w]


def _split_newlines(piece: str) -> list[str]:
    out, cur = [], ""
    for ch in piece:
        if ch == "\n":
            out += [cur, "\n"]
            cur = ""
        else:
            cur += ch
    return out + [cur]


def build_tokenizer(folder: str | Path | None = None, seed: int = 0):
    """Word-level ``PreTrainedTokenizerFast`` (ids by training frequency); saved if ``folder``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts = token_frequencies(seed)
    words = synthetic.vocabulary()
    rank = {w: i for i, w in enumerate(words)}
    ordered = sorted(words, key=lambda w: (-counts.get(w, 0), rank[w]))
    vocab = {w: i for i, w in enumerate(list(SPECIALS) + ordered)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(" +"), "removed"), pre_tokenizers.Split(Regex("\n"), "isolated")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]")
    if folder is not None:
        fast.save_pretrained(str(folder))
    return fast


# ----------------------------------------------------------------------------- data
class Batcher:
    """Seeded training batches: ``(tokens [batch, pos], loss mask [batch, pos])``.

    ``mask[b, p] = 1`` where token ``p`` is a target (predicted from positions ``< p``).
    """

    def __init__(self, tokenizer, seed: int, tokens_per_batch: int, repeat_fraction: float,
                 no_bos_fraction: float = 0.1, pool_size: int = 4000, max_len: int = 512,
                 probe_fraction: float = 0.3):
        self.rng = np.random.default_rng([seed, 0xBA7C])
        self.vocab = tokenizer.get_vocab()
        self.pools = {t: synthetic.examples(t, "train", seed=seed, n=pool_size) for t in synthetic.TASKS}
        self.ids = {}  # example -> (context ids, answer ids)
        self.sep = [self.vocab["\n"]] * 2
        self.tokens_per_batch = tokens_per_batch
        self.repeat_fraction = repeat_fraction
        self.no_bos_fraction = no_bos_fraction
        self.max_len = max_len
        self.probe_fraction = probe_fraction
        self.queue: list = []
        self.random_ids = np.arange(len(SPECIALS), len(self.vocab))

    def _encode(self, text: str) -> list[int]:
        return [self.vocab[w] for w in _words(text)]

    def _example_ids(self, ex) -> tuple[list[int], list[int]]:
        key = (ex.context, ex.choices[ex.gold])
        if key not in self.ids:
            self.ids[key] = (self._encode(ex.context), self._encode(ex.choices[ex.gold]))
        return self.ids[key]

    def episode_row(self) -> tuple[list[int], list[int]]:
        _, items = synthetic.training_episode(self.rng, self.pools, max_items=8, min_items=2)
        toks, mask = ([], []) if self.rng.random() < self.no_bos_fraction else ([BOS], [0])
        for i, ex in enumerate(items):
            ctx, ans = self._example_ids(ex)
            if i:
                toks += self.sep
                mask += [0, 0]
            toks += ctx + ans
            mask += [0] * len(ctx) + [i + 1] * len(ans)  # i + 1: the answer's shot count + 1
        return toks, mask

    def repeat_rows(self, probes: bool = True) -> list[tuple[list[int], list[int]]]:
        if probes and self.rng.random() < self.probe_fraction:
            length, reps = int(self.rng.integers(25, (self.max_len - 1) // 4 + 1)), 4
        else:
            length, reps = int(self.rng.integers(4, 41)), int(self.rng.integers(2, 5))
        n_rows = max(1, self.tokens_per_batch // (length * reps + 1))
        rows = []
        for _ in range(n_rows):
            s = self.rng.choice(self.random_ids, size=length, replace=False).tolist()
            rows.append(([BOS] + s * reps, [0] * (length + 1) + [1] * (length * (reps - 1))))
        return rows

    def _episode_batches(self) -> list[list[tuple[list[int], list[int]]]]:
        """Rows for about four batches, sorted by length and cut so each batch's padded size is
        about ``tokens_per_batch`` (little padding), in a random order."""
        rows, total = [], 0
        while total < 4 * self.tokens_per_batch:
            rows.append(self.episode_row())
            total += len(rows[-1][0])
        rows.sort(key=lambda r: len(r[0]))
        batches, cur = [], []
        for r in rows:
            if cur and len(r[0]) * (len(cur) + 1) > self.tokens_per_batch:
                batches.append(cur)
                cur = []
            cur.append(r)
        batches.append(cur)
        return [batches[i] for i in self.rng.permutation(len(batches))]

    def next(self, repeat_only: bool = False) -> tuple[str, torch.Tensor, torch.Tensor]:
        """``(kind, tokens, mask)`` with kind ``"repeat"`` or ``"episode"``."""
        kind = "repeat" if repeat_only or self.rng.random() < self.repeat_fraction else "episode"
        if kind == "repeat":
            # the warm-up uses short sequences only: induction heads form there within a
            # few thousand steps, long probe-shaped sequences slow that down (measured)
            rows = self.repeat_rows(probes=not repeat_only)
        else:
            if not self.queue:
                self.queue = self._episode_batches()
            rows = self.queue.pop()
        width = max(len(t) for t, _ in rows)
        tokens = torch.full((len(rows), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), width))
        for i, (t, m) in enumerate(rows):
            tokens[i, : len(t)] = torch.tensor(t)
            mask[i, : len(m)] = torch.tensor(m, dtype=torch.float)
        return kind, tokens, mask


# ----------------------------------------------------------------------------- training
def build_model(arch: str, vocab_size: int, d_model: int, n_layers: int, n_heads: int, n_positions: int):
    """A randomly initialised ``gpt2`` (learned positions) or ``llama`` (rotary) causal LM."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=True)
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab_size, n_positions=n_positions, n_embd=d_model, n_layer=n_layers,
            n_head=n_heads, n_inner=4 * d_model, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids))
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab_size, hidden_size=d_model, intermediate_size=3 * d_model,
            num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
            max_position_embeddings=n_positions, rope_theta=10000.0, **ids))
    raise ValueError(f"unknown arch {arch!r}; use gpt2 or llama")


def train(out: str | Path, steps: int = 5000, arch: str = "llama", seed: int = 0, d_model: int = 128, n_layers: int = 2,
          n_heads: int = 4, n_positions: int = 512, lr: float = 3e-3, tokens_per_batch: int = 1536,
          repeat_fraction: float = 0.45, threads: int = 1, eval_n: int = 50, repeat_warmup: int = 1500,
          log_every: int = 50) -> dict:
    """Build the tokenizer, train the model, save both to ``out``; return the training record."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out, seed=seed)
    model = build_model(arch, len(tokenizer), d_model, n_layers, n_heads, n_positions)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    batcher = Batcher(tokenizer, seed, tokens_per_batch, repeat_fraction, max_len=n_positions)
    model.train()
    t0 = time.time()
    log = []
    ema = {}
    for step in range(steps):
        kind, tokens, mask = batcher.next(repeat_only=step < repeat_warmup)
        logits = model(tokens).logits[:, :-1]
        tgt, m = tokens[:, 1:], mask[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                reduction="none").view_as(m)
        w = (m > 0).float()
        loss = (nll * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        parts = {kind: float(loss)}
        if kind == "episode":
            with torch.no_grad():
                for name, sel in (("0shot", m == 1), ("1shot", m == 2), ("5shot", m == 6)):
                    if sel.any():
                        parts[name] = float(nll[sel].mean())
        for k, v in parts.items():
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        if (step + 1) % log_every == 0 or step == 0:
            rec = {"step": step + 1, "elapsed_s": round(time.time() - t0, 1),
                   **{f"loss_{k}": round(v, 4) for k, v in ema.items()}}
            log.append(rec)
            print(json.dumps(rec), flush=True)
    train_s = time.time() - t0
    model.eval()
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    record = {"arch": arch, "steps": steps, "seed": seed, "train_seconds": round(train_s, 1), "threads": threads,
              "tokens_per_batch": tokens_per_batch, "repeat_fraction": repeat_fraction, "lr": lr,
              "d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
              "n_params": sum(p.numel() for p in model.parameters()), "log": log}
    if eval_n:  # the model card's measurements, by headlens itself
        from tools.tiny_card import measure

        measured = measure(str(out.resolve()), n=eval_n, seed=seed)
        record["summary"] = measured["summary"]
        record["accuracy"] = measured["accuracy"]
        print(json.dumps(record["summary"]), flush=True)
    (out / "training_record.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/models/tiny-icl")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arch", default="llama", choices=["gpt2", "llama"])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--tokens-per-batch", type=int, default=1536)
    ap.add_argument("--repeat-fraction", type=float, default=0.45)
    ap.add_argument("--positions", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat-warmup", type=int, default=1500, help="first N steps: short repeated sequences only")
    ap.add_argument("--eval-n", type=int, default=50)
    a = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(a.out, steps=a.steps, arch=a.arch, seed=a.seed, d_model=a.d_model, n_layers=a.layers, n_heads=a.heads,
          n_positions=a.positions, lr=a.lr, tokens_per_batch=a.tokens_per_batch, repeat_fraction=a.repeat_fraction,
          threads=a.threads, eval_n=a.eval_n, repeat_warmup=a.repeat_warmup)


if __name__ == "__main__":
    main()
