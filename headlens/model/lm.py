"""Primitives every analysis shares: the device a model lives on, freezing, next-token loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor


def nll_sum(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"],
            mask: Int[Tensor, "batch pos"]) -> tuple[Tensor, int]:
    """(sum of next-token cross-entropy over real target tokens, their count)."""
    targets = tokens[:, 1:]
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                           reduction="none")
    return (ce * valid.flatten()).sum(), int(valid.sum())


def device_of(model) -> torch.device:
    """The device of ``model``'s parameters (CPU for objects without parameters)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def freeze(module):
    """Eval mode and ``requires_grad=False`` on every parameter (gates, not weights, get
    gradients in headlens); returns ``module``."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def pad_token_id(tokenizer) -> int:
    """The id used for right-padding: the tokenizer's pad token, else EOS, else BOS, else 0
    (padded positions are masked out everywhere, so the choice never changes a result)."""
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        val = getattr(tokenizer, attr, None)
        if val is not None:
            return int(val)
    return 0


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token id lists -> (right-padded tokens [batch, pos], attention mask, 1 on real tokens)."""
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):  # one row per sequence, not per token
        tokens[row, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[row, : len(s)] = 1
    return tokens, mask
