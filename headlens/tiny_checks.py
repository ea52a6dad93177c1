"""Quick, self-contained checks of the shipped model's induction heads (for its model card).

These are this module's own minimal versions of the two induction primitives (Bansal et al.
2023, Sec. 4; the project's induction module is the full implementation), computed on the
Hugging Face GPT-2 checkpoint directly:

* prefix matching: on ``[BOS] + S * 4`` (``S``: ``L`` distinct tokens), for every query
  position ``q`` in repeats 2-4, ``sum_k A[q, k] * [tok[k-1] == tok[q], k - 1 < q]`` (the
  attention paid to tokens that followed earlier copies of the current token); mean over
  positions and sequences.
* copying ("corrected"): every block reads the layer-normed embeddings of ``[BOS] + U`` (``U``:
  distinct tokens); for query ``q`` the head's most-attended position ``a``; the OV output of
  position ``a`` through ``W_O`` and the unembedding (no final norm), softmaxed over the
  vocabulary, restricted to tokens present up to ``q``, minus their mean, ReLU; the score is
  the share of ``tok[a]``; mean over positions and sequences.

Tokens are drawn from ids ordered by frequency (the tokenizer's id order), excluding the
special tokens and the 4% most and 4% least frequent.
"""

from __future__ import annotations

import numpy as np
import torch

N_SPECIAL = 4


def _pool(vocab_size: int) -> np.ndarray:
    ids = np.arange(N_SPECIAL, vocab_size)
    cut = int(round(0.04 * len(ids)))
    return ids[cut: len(ids) - cut]


def prefix_matching(model, lengths=range(25, 125, 10), seed: int = 0) -> np.ndarray:
    """[n_layers, n_heads] mean prefix-matching attention on ``[BOS] + S * 4``."""
    pool = _pool(model.config.vocab_size)
    rng = np.random.default_rng(seed)
    total = None
    for L in lengths:
        s = rng.choice(pool, size=L, replace=False)
        tok = torch.tensor(np.concatenate([[0], np.tile(s, 4)]))[None]
        with torch.no_grad():
            att = torch.stack(model(tok, output_attentions=True).attentions)[:, 0]  # [L, H, q, k]
        t = tok[0]
        T = len(t)
        prev = torch.cat([torch.tensor([-1]), t[:-1]])  # token before each key position
        k_idx = torch.arange(T)
        target = (prev[None, :] == t[:, None]) & (k_idx[None, :] - 1 < k_idx[:, None]) & (k_idx[None, :] >= 2)
        q_sel = torch.arange(1 + L, T)
        score = (att[:, :, q_sel] * target[q_sel].float()).sum(-1).mean(-1)
        total = score if total is None else total + score
    return (total / len(list(lengths))).numpy()


def _layer_heads(model, li: int, emb: torch.Tensor):
    """For layer ``li`` fed ``emb`` [T, d_model] (after its input norm): causal attention scores
    [H, T, T], values [H, T, d_head] and the per-head output projections [H, d_head, d_model]."""
    cfg = model.config
    T = emb.shape[0]
    if cfg.model_type == "gpt2":
        H, d = cfg.n_head, cfg.n_embd // cfg.n_head
        block = model.transformer.h[li]
        x = block.ln_1(emb)
        q, k, v = block.attn.c_attn(x).split(cfg.n_embd, dim=-1)
        q, k, v = (z.view(T, H, d).transpose(0, 1) for z in (q, k, v))
        W_O = block.attn.c_proj.weight.view(H, d, cfg.n_embd)  # Conv1D weight is [in, out]
    elif cfg.model_type == "llama":
        H, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
        layer = model.model.layers[li]
        x = layer.input_layernorm(emb)[None]
        cos, sin = model.model.rotary_emb(x, torch.arange(T)[None])
        attn = layer.self_attn
        q = attn.q_proj(x).view(1, T, H, d).transpose(1, 2)
        k = attn.k_proj(x).view(1, T, H, d).transpose(1, 2)
        v = attn.v_proj(x).view(T, H, d).transpose(0, 1)
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        q, k = q[0], k[0]
        W_O = attn.o_proj.weight.T.reshape(H, d, cfg.hidden_size)
    else:
        raise ValueError(f"tiny_checks: unsupported model type {cfg.model_type!r}")
    scores = q @ k.transpose(-1, -2) / d ** 0.5
    return scores, v, W_O


def _embed(model, tok: torch.Tensor) -> torch.Tensor:
    if model.config.model_type == "gpt2":
        return model.transformer.wte(tok) + model.transformer.wpe(torch.arange(len(tok)))
    return model.model.embed_tokens(tok)


def copying(model, n_seq: int = 5, length: int = 120, seed: int = 0) -> np.ndarray:
    """[n_layers, n_heads] 'corrected' copying score (OV output of the attended position)."""
    cfg = model.config
    pool = _pool(cfg.vocab_size)
    rng = np.random.default_rng(seed)
    W_U = model.lm_head.weight.T  # [d_model, vocab]
    n_layers = cfg.num_hidden_layers
    scores = None
    with torch.no_grad():
        for _ in range(n_seq):
            tok = torch.tensor(np.concatenate([[0], rng.choice(pool, size=length, replace=False)]))
            T = len(tok)
            emb = _embed(model, tok)
            present = torch.tril(torch.ones(T, T, dtype=torch.bool))  # present[q, k]: k <= q
            per_layer = []
            for li in range(n_layers):
                s, v, W_O = _layer_heads(model, li, emb)
                a = s.masked_fill(~present, float("-inf")).argmax(-1)  # [H, T] most-attended key
                ov = torch.einsum("htd,hdm->htm", v, W_O)  # [H, T, d_model] per source position
                probs = torch.softmax(ov @ W_U, -1)  # [H, T(src), vocab]
                src = torch.gather(probs, 1, a[..., None].expand(-1, -1, probs.shape[-1]))
                on_seq = src[..., tok]  # [H, q, k]: probability of token tok[k]
                m = present.float()[None]
                mean = (on_seq * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True)
                rel = torch.relu(on_seq - mean) * m
                share = torch.gather(rel, 2, a[..., None])[..., 0] / rel.sum(-1).clamp_min(1e-12)
                per_layer.append(share[:, 1:].mean(-1))
            s_all = torch.stack(per_layer)
            scores = s_all if scores is None else scores + s_all
    return (scores / n_seq).numpy()


def measure(folder: str, n: int = 200, seed: int = 0) -> dict:
    """Everything the model card reports: accuracy per task at 0/1/5 shots (through
    ``headlens.load_model``) and the best prefix-matching / copying heads."""
    import time

    from transformers import AutoModelForCausalLM

    from headlens.loading import load_model
    from headlens.train_tiny import icl_accuracy, summary

    t0 = time.time()
    bridge = load_model(folder, device="cpu")
    acc = icl_accuracy(lambda t: bridge(t), bridge.tokenizer, shots=(0, 1, 5), n=n, seed=seed)
    acc_s = time.time() - t0
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    pm, cp = prefix_matching(hf, seed=seed), copying(hf, seed=seed)
    both = np.minimum(pm, cp)
    best = np.unravel_index(int(both.argmax()), both.shape)
    return {"n_per_task_and_shot": n, "accuracy": acc, "summary": summary(acc),
            "accuracy_seconds": round(acc_s, 1),
            "prefix_matching": pm.round(3).tolist(), "copying": cp.round(3).tolist(),
            "best_head": {"layer": int(best[0]), "head": int(best[1]),
                          "prefix_matching": float(pm[best]), "copying": float(cp[best])}}


if __name__ == "__main__":
    import json
    import sys

    torch.set_num_threads(2)
    print(json.dumps(measure(sys.argv[1], n=int(sys.argv[2]) if len(sys.argv) > 2 else 200), indent=1))
