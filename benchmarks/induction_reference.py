"""Slow, obvious re-implementations of the reference induction scores (the benchmark baseline).

Written from the description of Bansal et al. (2023)'s code in REFERENCE.md, with the same
structure: Python loops over layers, heads, query positions and keys, one ``.item()`` per
element, a full [heads, positions, vocabulary] softmax per layer. They work directly on a
Hugging Face GPT-2 (``GPT2LMHeadModel``), not through TransformerLens, so they are also an
independent check of the hooks headlens uses. Used by ``induction_bench.py`` and by the
tests; not part of the library.

Two documented deviations from the reference, shared with headlens so numbers can agree:
``prefix_loop(fix=True)`` drops the spurious last-token term, and copying treats raised
probabilities at or below ``NOISE_FLOOR`` times their mean as zero (the reference compares
the sum with exactly 0, which float residue of a uniform distribution defeats).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NOISE_FLOOR = 1e-6


def prefix_loop(patterns: list[torch.Tensor], length: int, *, fix: bool = True) -> torch.Tensor:
    """Reference prefix matching on ``[BOS] + S*4`` from per-layer [heads, pos, pos] patterns."""
    n_layers, n_heads = len(patterns), patterns[0].shape[0]
    out = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            attn = patterns[layer][head]
            total, count = 0.0, 0
            for j in range(length + 1, 4 * length + 1):
                for num in range(j // length):
                    if fix and j % length == 0 and num == 0:
                        continue  # key 1 follows BOS, not an earlier copy of token j
                    total += attn[j][num * length + (j % length) + 1].item()
                count += 1
            out[layer, head] = total / count
    return out


def gpt2_patterns(hf, tokens: torch.Tensor, *, embeddings_only: bool = False) -> dict:
    """Manual GPT-2 forward from the HF modules: per-layer patterns, v, z and the final state.

    With ``embeddings_only`` every layer reads ``wte + wpe`` (the reference's copying input).
    """
    tr = hf.transformer
    n_heads = hf.config.n_head
    n = tokens.shape[0]
    x0 = tr.wte(tokens) + tr.wpe(torch.arange(n))
    h = x0
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    out = {"pattern": [], "v": [], "z": []}
    for block in tr.h:
        inp = x0 if embeddings_only else h
        hs = block.ln_1(inp)
        q, k, v = block.attn.c_attn(hs).split(hf.config.n_embd, dim=-1)
        q, k, v = (t.view(n, n_heads, -1).transpose(0, 1) for t in (q, k, v))  # [heads, pos, d_head]
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        z = pattern @ v
        out["pattern"].append(pattern)
        out["v"].append(v)
        out["z"].append(z)
        attn_out = block.attn.c_proj(z.transpose(0, 1).reshape(n, -1))
        h = h + attn_out
        h = h + block.mlp(block.ln_2(h))
    out["final"] = h
    out["logits"] = hf.lm_head(tr.ln_f(h))
    return out


def _copying_from_probs(probs: torch.Tensor, patterns: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The reference's per-(head, position) loop on softmaxed [heads, pos, vocab] outputs."""
    n_heads, n = probs.shape[0], probs.shape[1]
    out = torch.zeros(n_heads, dtype=torch.float64)
    for head in range(n_heads):
        max_ind = patterns[head].argmax(-1)
        total, count = 0.0, 0
        for j in range(1, n):
            count += 1
            attendable = probs[head, j, tokens[: j + 1]].double()
            mean = attendable.mean()
            raised = F.relu(attendable - mean)
            raised = torch.where(raised > NOISE_FLOOR * mean, raised, torch.zeros_like(raised))
            picked = raised[max_ind[j]].item()
            all_ = raised.sum().item()
            total += picked / all_ if all_ != 0 else 0.0
        out[head] = total / count
    return out


def copying_loop(hf, tokens: torch.Tensor, variant: str) -> torch.Tensor:
    """Reference-style copying scores (``paper`` or ``corrected``) of a HF GPT-2 on ``tokens``."""
    n_heads, d_model = hf.config.n_head, hf.config.n_embd
    d_head = d_model // n_heads
    run = gpt2_patterns(hf, tokens, embeddings_only=variant == "paper")
    ln_f = hf.transformer.ln_f
    final = run["final"]
    scale = (final.var(-1, unbiased=False, keepdim=True) + ln_f.eps).sqrt()
    out = torch.zeros(len(run["pattern"]), n_heads, dtype=torch.float64)
    for layer, block in enumerate(hf.transformer.h):
        W_O = block.attn.c_proj.weight  # [d_model (heads x d_head), d_model]
        src = run["v"][layer] if variant == "paper" else run["z"][layer]
        # each head's vector placed in its own slot of a zero d_model vector, through out_proj
        padded = torch.zeros(n_heads, src.shape[1], d_model)
        for head in range(n_heads):
            padded[head, :, head * d_head:(head + 1) * d_head] = src[head]
        if variant == "paper":
            writes = block.attn.c_proj(padded)  # with the output bias, as the reference
            logits = hf.lm_head(writes)
        else:
            writes = padded @ W_O
            centred = writes - writes.mean(-1, keepdim=True)
            logits = (centred / scale * ln_f.weight) @ hf.lm_head.weight.T
        probs = logits.float().softmax(-1)
        out[layer] = _copying_from_probs(probs, run["pattern"][layer], tokens)
    return out


def eigen_loop(hf) -> torch.Tensor:
    """sum(lambda)/sum(|lambda|) of every head's full vocab x vocab OV circuit, one head at a time."""
    n_heads, d_model = hf.config.n_head, hf.config.n_embd
    d_head = d_model // n_heads
    W_E = hf.transformer.wte.weight.double()
    W_U = (hf.lm_head.weight.double() * hf.transformer.ln_f.weight.double()).T
    out = torch.zeros(len(hf.transformer.h), n_heads, dtype=torch.float64)
    for layer, block in enumerate(hf.transformer.h):
        W_V_all = block.attn.c_attn.weight.double()[:, 2 * d_model:] * block.ln_1.weight.double()[:, None]
        for head in range(n_heads):
            cols = slice(head * d_head, (head + 1) * d_head)
            circuit = W_E @ W_V_all[:, cols] @ block.attn.c_proj.weight.double()[cols] @ W_U
            lam = torch.linalg.eigvals(circuit)
            denom = lam.abs().sum().item()
            out[layer, head] = lam.sum().real.item() / denom if denom > 0 else 0.0
    return out
