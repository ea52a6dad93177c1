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


def tiny_config(arch: str, vocab_size: int, n_layers: int = 2, n_ctx: int = 128):
    """A small config of a real architecture: d_model 32, 4 heads (GQA 2 kv heads for llama)."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=2)
    if arch == "gpt2":
        return GPT2Config(n_positions=n_ctx, n_embd=32, n_layer=n_layers, n_head=4, **common)
    if arch == "opt":
        return OPTConfig(hidden_size=32, num_hidden_layers=n_layers, ffn_dim=64, num_attention_heads=4,
                         max_position_embeddings=n_ctx, word_embed_proj_dim=32, **common)
    if arch == "neox":
        return GPTNeoXConfig(hidden_size=32, num_hidden_layers=n_layers, intermediate_size=64,
                             num_attention_heads=4, max_position_embeddings=n_ctx, rotary_pct=0.25, **common)
    if arch == "llama":
        return LlamaConfig(hidden_size=32, num_hidden_layers=n_layers, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_ctx, **common)
    if arch == "qwen2":
        return Qwen2Config(hidden_size=32, num_hidden_layers=n_layers, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_ctx, **common)
    raise ValueError(arch)


ARCHS = ["gpt2", "opt", "neox", "llama", "qwen2"]


def build_tiny(arch: str, folder: str | Path, seed: int = 0, n_layers: int = 2) -> Path:
    """Save a random-weight tiny ``arch`` checkpoint with the local tokenizer into ``folder``."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tok = build_tokenizer(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tok), n_layers=n_layers))
    model.save_pretrained(str(folder))
    return folder
