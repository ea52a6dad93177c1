"""Slow, obvious re-implementations of the reference induction scores (the benchmark baseline).

Written from the description of Bansal et al. (2023)'s code in REFERENCE.md, with the same
structure: Python loops over layers, heads, query positions and keys, one ``.item()`` per
element, a full [heads, positions, vocabulary] softmax per layer. They work directly on a
Hugging Face GPT-2 (``GPT2LMHeadModel``), not through TransformerLens, so they are also an
independent check of the hooks headlens uses. Used by ``induction_bench.py`` and by the
tests; not part of the library.

``corrected_loop`` and ``concentration_loop`` are headlens's own scores (not the reference's),
written as loops for the same purpose. Two documented deviations from the reference, shared
with headlens so numbers can agree:
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
    """Reference prefix matching on ``[BOS] + S*4`` from per-layer [heads, pos, pos] patterns.

    As the reference: every attention entry is read with ``.item()`` and added into the
    result tensor element by element.
    """
    n_layers, n_heads = len(patterns), patterns[0].shape[0]
    attn_matrix = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            attn_prob = patterns[layer][head]
            c = 0
            for j in range(length + 1, 4 * length + 1):
                for num in range(j // length):
                    if fix and j % length == 0 and num == 0:
                        continue  # key 1 follows BOS, not an earlier copy of token j
                    attn_matrix[layer][head] += attn_prob[j][num * length + (j % length) + 1].item()
                c += 1
            attn_matrix[layer][head] = attn_matrix[layer][head] / c
    return attn_matrix


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


def copying_loop_from_writes(writes: torch.Tensor, pattern: torch.Tensor, tokens: torch.Tensor,
                             W_U: torch.Tensor, b_U: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's scoring stage for one layer: full [heads, pos, vocab] softmax, then a
    Python loop over heads and query positions with a few tensor ops and ``.item()`` each."""
    logits = writes @ W_U
    if b_U is not None:
        logits = logits + b_U
    probs = logits.float().softmax(-1)  # h, l, vocab: the reference materialises all of it
    n_heads, n = probs.shape[0], probs.shape[1]
    copying_matrix = torch.zeros(n_heads, dtype=torch.float64)
    for head in range(n_heads):
        # the reference sorts each row and takes the end; a stable descending sort gives the
        # first maximal position on ties, the rule headlens documents (argmax)
        _, ind = torch.sort(pattern[head], dim=1, descending=True, stable=True)
        max_ind = ind[:, 0]
        c = 0
        for j in range(1, n):
            c += 1
            attendable_input = tokens[: j + 1]
            attendable = probs[head][j][attendable_input].double()
            mean = attendable.mean()
            raised = F.relu(attendable - mean)
            raised = torch.where(raised > NOISE_FLOOR * mean, raised, torch.zeros_like(raised))
            picked = raised[max_ind[j]].item()
            total = raised.sum().item()
            score = picked / total if total != 0 else 0.0
            copying_matrix[head] += score
        copying_matrix[head] = copying_matrix[head] / c
    return copying_matrix


def copying_writes(hf, tokens: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``paper`` copying, per layer: what each head sends to the unembedding [heads, pos, d_model]
    and its pattern. Embeddings-only inputs, the query position's value through out_proj (with
    its bias), as the reference."""
    n_heads, d_model = hf.config.n_head, hf.config.n_embd
    d_head = d_model // n_heads
    run = gpt2_patterns(hf, tokens, embeddings_only=True)
    writes_all = []
    for layer, block in enumerate(hf.transformer.h):
        src = run["v"][layer]
        # each head's vector placed in its own slot of a zero d_model vector, through out_proj
        padded = torch.zeros(n_heads, src.shape[1], d_model)
        for head in range(n_heads):
            padded[head, :, head * d_head:(head + 1) * d_head] = src[head]
        writes_all.append(block.attn.c_proj(padded))
    return writes_all, run["pattern"]


def copying_loop(hf, tokens: torch.Tensor) -> torch.Tensor:
    """Reference-style ``paper`` copying scores of a HF GPT-2 on ``tokens`` ([BOS] + 4L unique)."""
    writes, patterns = copying_writes(hf, tokens)
    W_U = hf.lm_head.weight.T
    return torch.stack([copying_loop_from_writes(w, p, tokens, W_U) for w, p in zip(writes, patterns)])


def corrected_loop(hf, tokens: torch.Tensor, length: int, run: dict | None = None) -> torch.Tensor:
    """headlens's ``corrected`` copying on ``[BOS] + S*4`` (real forward pass), element by element.

    For every head and query i in copies 2-4: the most-attended position after BOS (first on
    ties, found by comparing ``.item()``s), its value through the head's rows of out_proj (no
    bias), centred, divided by the real final-LN scale at i, times the LN weight, through the
    whole unembedding; softmax over the logits of the tokens of S; probability of the attended
    token; mean over queries.
    """
    n_heads, d_model = hf.config.n_head, hf.config.n_embd
    d_head = d_model // n_heads
    run = gpt2_patterns(hf, tokens) if run is None else run
    ln_f = hf.transformer.ln_f
    final = run["final"]
    scale = (final.var(-1, unbiased=False) + ln_f.eps).sqrt()
    n = tokens.shape[0]
    offset = n % length
    context = sorted(set(tokens[offset:].tolist()))
    W_U = hf.lm_head.weight.T
    out = torch.zeros(len(hf.transformer.h), n_heads, dtype=torch.float64)
    for layer, block in enumerate(hf.transformer.h):
        for head in range(n_heads):
            rows = block.attn.c_proj.weight[head * d_head:(head + 1) * d_head]
            pattern = run["pattern"][layer][head]
            total, c = 0.0, 0
            for i in range(offset + length, n):
                best = offset
                for k in range(offset, i + 1):
                    if pattern[i, k].item() > pattern[i, best].item():
                        best = k
                o = run["v"][layer][head, best] @ rows
                o = (o - o.mean()) / scale[i] * ln_f.weight
                logits = (o @ W_U)[context].double()
                total += logits.softmax(-1)[context.index(int(tokens[best]))].item()
                c += 1
            out[layer, head] = total / c
    return out


def concentration_loop(patterns: list[torch.Tensor], tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Attention concentration: per query in copies 2-4, the most attention any one token gets."""
    n = tokens.shape[0]
    offset = n % length
    toks = tokens.tolist()
    out = torch.zeros(len(patterns), patterns[0].shape[0], dtype=torch.float64)
    for layer, pats in enumerate(patterns):
        for head in range(pats.shape[0]):
            total, c = 0.0, 0
            for i in range(offset + length, n):
                per_token: dict[int, float] = {}
                for k in range(i + 1):
                    per_token[toks[k]] = per_token.get(toks[k], 0.0) + pats[head, i, k].item()
                total += max(per_token.values())
                c += 1
            out[layer, head] = total / c
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
