"""Builders for the tiny models the tests use: random-weight checkpoints of real architectures.

Everything is built locally (no hub): a byte-level BPE tokenizer trained on a few sentences,
then Hugging Face models from configs, saved as ordinary checkpoint folders.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine and the early bird catches the worm",
    "question answer true false neither because therefore yes no",
    "headlens measures attention heads in language models across layers",
    "copy reverse successor larger label mapping key value recall",
] * 20

SPECIALS = ["<bos>", "<unk>", "<pad>"]


def build_tokenizer(folder: str | Path, vocab_size: int = 320):
    """Train a byte-level BPE tokenizer (ids 0..2 are <bos>, <unk>, <pad>) and save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(str(folder))
    return fast


def tiny_config(arch: str, vocab_size: int, n_layers: int | None = None, n_ctx: int = 128, *,
                layers: int = 2, d_model: int = 32, heads: int = 4, kv_heads: int | None = None,
                d_mlp: int | None = None, **hf_overrides):
    """A small config of a real architecture: d_model 32, 4 heads, 2 layers, MLP 2*d_model (GPT-2: 4*).

    Keyword overrides state only what a test varies: ``layers`` (``n_layers`` is the older
    name), ``d_model``, ``heads``, ``kv_heads`` (grouped-query attention; llama and qwen2 only,
    default 2 there), ``d_mlp``, ``n_ctx``; any other keyword is passed to the Hugging Face
    config (e.g. ``scale_attn_by_inverse_layer_idx=True``).
    """
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config

    layers = n_layers if n_layers is not None else layers
    inner = d_mlp if d_mlp is not None else 2 * d_model  # GPT-2's own default (4 d_model) when None
    if d_model % heads:
        raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
    gqa = arch in ("llama", "qwen2")
    kv = kv_heads if kv_heads is not None else (min(2, heads) if gqa else heads)
    if heads % kv or (not gqa and kv != heads):
        raise ValueError(f"{arch}: kv_heads {kv} must divide heads {heads}"
                         + ("" if gqa else f" and equal it ({arch} has no grouped-query attention)"))
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=2, **hf_overrides)
    if arch == "gpt2":
        return GPT2Config(n_positions=n_ctx, n_embd=d_model, n_layer=layers, n_head=heads, n_inner=d_mlp, **common)
    if arch == "opt":
        return OPTConfig(hidden_size=d_model, num_hidden_layers=layers, ffn_dim=inner, num_attention_heads=heads,
                         max_position_embeddings=n_ctx, word_embed_proj_dim=d_model, **common)
    if arch == "neox":
        return GPTNeoXConfig(hidden_size=d_model, num_hidden_layers=layers, intermediate_size=inner,
                             num_attention_heads=heads, max_position_embeddings=n_ctx, rotary_pct=0.25, **common)
    if arch == "llama":
        return LlamaConfig(hidden_size=d_model, num_hidden_layers=layers, intermediate_size=inner,
                           num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=n_ctx, **common)
    if arch == "qwen2":
        return Qwen2Config(hidden_size=d_model, num_hidden_layers=layers, intermediate_size=inner,
                           num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=n_ctx, **common)
    raise ValueError(f"unknown arch {arch!r}; one of {', '.join(ARCHS)}")


ARCHS = ["gpt2", "opt", "neox", "llama", "qwen2"]


def build_tiny(arch: str, folder: str | Path, seed: int = 0, n_layers: int | None = None, **overrides) -> Path:
    """Save a random-weight tiny ``arch`` checkpoint with the local tokenizer into ``folder``.

    ``overrides`` go to :func:`tiny_config` (``layers``, ``d_model``, ``heads``, ``kv_heads``,
    ``d_mlp``, ``n_ctx`` or any Hugging Face config field).
    """
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tok = build_tokenizer(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok), n_layers=n_layers, **overrides))
    model.save_pretrained(str(folder))
    return folder
