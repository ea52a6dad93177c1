"""Language-model primitives shared by every analysis: next-token loss over real tokens."""

from __future__ import annotations

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
