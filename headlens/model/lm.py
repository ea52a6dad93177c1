"""Primitives every analysis shares: the device a model lives on, freezing, next-token loss."""

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
