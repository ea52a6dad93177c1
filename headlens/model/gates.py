"""Per-head and per-FFN gates: differentiable multipliers on ``hook_z`` and ``hook_mlp_out``.

A head gate xi scales the head's output before the output projection (Michel et al. 2019;
Bansal et al. 2023); xi = 1 leaves the model unchanged, xi = 0 removes the head. The
gradient of a loss with respect to xi at 1 is the head-importance signal, so importance
needs no parameter gradients at all. FFN gates scale each block's MLP output likewise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from headlens.errors import HeadlensError
from headlens.model import hooknames


@dataclass(frozen=True)
class Gates:
    """Gate values for every head and every FFN block; ``None`` means "not gated".

    Attributes:
        heads: [n_layers, n_heads] multipliers on each head's ``hook_z``.
        ffn: [n_layers] multipliers on each block's ``hook_mlp_out``.
    """

    heads: Float[Tensor, "n_layers n_heads"] | None = None
    ffn: Float[Tensor, " n_layers"] | None = None

    def hooks(self) -> list[tuple[str, object]]:
        """Forward hooks (name, fn) applying these gates."""
        out: list[tuple[str, object]] = []
        if self.heads is not None:
            for layer in range(self.heads.shape[0]):
                out.append((hooknames.z(layer), _head_hook(self.heads, layer)))
        if self.ffn is not None:
            for layer in range(self.ffn.shape[0]):
                out.append((hooknames.mlp_out(layer), _ffn_hook(self.ffn, layer)))
        return out


def _head_hook(heads: Tensor, layer: int):
    def hook(z: Tensor, hook=None) -> Tensor:
        g = heads[layer].to(dtype=z.dtype, device=z.device)
        return z * g[None, None, :, None]

    return hook


def _ffn_hook(ffn: Tensor, layer: int):
    def hook(x: Tensor, hook=None) -> Tensor:
        return x * ffn[layer].to(dtype=x.dtype, device=x.device)

    return hook


def n_layers_heads(model) -> tuple[int, int]:
    return int(model.cfg.n_layers), int(model.cfg.n_heads)


def ones(model, *, requires_grad: bool = False, heads: bool = True, ffn: bool = True) -> Gates:
    """Gates at 1 for every head and FFN (optionally leaf tensors that collect gradients)."""
    n_layers, n_heads = n_layers_heads(model)
    device = next(model.parameters()).device
    h = torch.ones(n_layers, n_heads, device=device, requires_grad=requires_grad) if heads else None
    f = torch.ones(n_layers, device=device, requires_grad=requires_grad) if ffn else None
    return Gates(heads=h, ffn=f)


def check(model, gates: Gates) -> None:
    """Raise if gate shapes do not match the model."""
    n_layers, n_heads = n_layers_heads(model)
    if gates.heads is not None and tuple(gates.heads.shape) != (n_layers, n_heads):
        raise HeadlensError(
            f"gates: head gates have shape {tuple(gates.heads.shape)}, model needs "
            f"({n_layers}, {n_heads}) = (n_layers, n_heads)")
    if gates.ffn is not None and tuple(gates.ffn.shape) != (n_layers,):
        raise HeadlensError(
            f"gates: FFN gates have shape {tuple(gates.ffn.shape)}, model needs ({n_layers},)")


@contextmanager
def gated(model, gates: Gates | None = None, *, heads: Tensor | None = None,
          ffn: Tensor | None = None) -> Iterator[Gates]:
    """Context manager: every forward pass inside runs with the gates applied.

    Example:
        >>> mask = torch.ones(model.cfg.n_layers, model.cfg.n_heads); mask[3, 5] = 0
        >>> with gated(model, heads=mask):
        ...     logits = model(tokens)
    """
    if gates is None:
        gates = Gates(heads=heads, ffn=ffn)
    elif heads is not None or ffn is not None:
        raise HeadlensError("gated: pass either a Gates object or heads=/ffn=, not both")
    check(model, gates)
    with model.hooks(fwd_hooks=gates.hooks()):
        yield gates


def mask_lowest(scores: Tensor | np.ndarray, fraction: float) -> Tensor:
    """0/1 mask that zeroes the ``fraction`` of entries with the lowest scores (global rank).

    Ties are broken by position (stable sort), so the same scores give the same mask.
    """
    if not 0.0 <= fraction <= 1.0:
        raise HeadlensError(f"mask_lowest: fraction must be in [0, 1], got {fraction}")
    t = (scores.detach().to("cpu", torch.float64) if isinstance(scores, Tensor)
         else torch.from_numpy(np.array(scores, dtype=np.float64)))
    flat = t.flatten()
    k = int(round(fraction * flat.numel()))
    mask = torch.ones_like(flat, dtype=torch.float32)
    if k:
        order = torch.sort(flat, stable=True).indices
        mask[order[:k]] = 0.0
    return mask.reshape(t.shape)
