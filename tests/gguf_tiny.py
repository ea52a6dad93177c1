"""A tiny Llama GGUF file written with the ``gguf`` package, for conversion tests.

2 layers x 4 heads (2 key/value heads), d_model 32, a byte-level BPE vocabulary of 262
tokens (the 256 byte symbols, 3 merges, 3 specials). Most matrices are stored as Q8_0 so
the dequantization path runs; norms stay F32. ``arch`` and ``extra`` (one more tensor of
any numpy dtype, e.g. int32 -> GGUF type I32) build the unsupported cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable unicode table (the alphabet of byte-level BPE)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_tiny_gguf(path, *, arch: str = "llama", seed: int = 0, extra: np.ndarray | None = None,
                    d: int = 32, layers: int = 2, heads: int = 4, kv: int = 2, ff: int = 64) -> Path:
    import gguf
    from gguf import GGMLQuantizationType as Q

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *_byte_symbols(), "Ġt", "he", "Ġthe"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_context_length(64)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(d // heads)
    w.add_vocab_size(len(tokens))
    w.add_file_type(7)  # mostly Q8_0
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)

    def matrix(name: str, rows: int, cols: int, quant: bool = True) -> None:
        a = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        if quant:
            w.add_tensor(name, gguf.quants.quantize(a, Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            w.add_tensor(name, a)

    hd = d // heads
    matrix("token_embd.weight", len(tokens), d)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        matrix(f"blk.{i}.attn_q.weight", d, d)
        matrix(f"blk.{i}.attn_k.weight", kv * hd, d, quant=False)
        matrix(f"blk.{i}.attn_v.weight", kv * hd, d, quant=False)
        matrix(f"blk.{i}.attn_output.weight", d, d)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
        matrix(f"blk.{i}.ffn_gate.weight", ff, d)
        matrix(f"blk.{i}.ffn_up.weight", ff, d)
        matrix(f"blk.{i}.ffn_down.weight", d, ff)
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    if extra is not None:
        w.add_tensor("extra.weight", extra)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
