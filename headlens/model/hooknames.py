"""Every TransformerLens hook name headlens uses is built here, and only here."""

from __future__ import annotations


def z(layer: int) -> str:
    """Per-head attention output before W_O: [batch, pos, n_heads, d_head]."""
    return f"blocks.{layer}.attn.hook_z"


def v(layer: int) -> str:
    """Values: [batch, pos, n_kv_heads, d_head]."""
    return f"blocks.{layer}.attn.hook_v"


def pattern(layer: int) -> str:
    """Attention probabilities: [batch, n_heads, q_pos, k_pos]."""
    return f"blocks.{layer}.attn.hook_pattern"


def mlp_out(layer: int) -> str:
    """FFN block output added to the residual stream: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_mlp_out"


def attn_out(layer: int) -> str:
    """Attention block output added to the residual stream: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_attn_out"


def resid_pre(layer: int) -> str:
    """Residual stream entering block ``layer``: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_post(layer: int) -> str:
    """Residual stream leaving block ``layer`` (before any final norm): [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_resid_post"


def embed() -> str:
    return "hook_embed"


def is_z(name: str) -> bool:
    return name.endswith(".attn.hook_z")


def is_pattern(name: str) -> bool:
    return name.endswith(".attn.hook_pattern")


def layer_of(name: str) -> int:
    """Layer index of a ``blocks.{l}.…`` hook name."""
    return int(name.split(".")[1])


def final_scale() -> str:
    """The final norm's divisor at each position: [batch, pos, 1]."""
    return "ln_final.hook_scale"


def final_out() -> str:
    """Output of the final norm, the unembedding's input: [batch, pos, d_model]."""
    return "ln_final.hook_out"
