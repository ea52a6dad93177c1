"""Benchmark: vectorised induction scores vs the reference's Python loops, same model and sequences.

Run from the repository root:  ``python benchmarks/induction_bench.py``  (CPU, one thread,
about a minute; ``--quick``: fewer, shorter seeds, a few seconds). Loops run once;
vectorised timings are the best of 3 after a warm-up.

The model is a random-weight GPT-2 (4 layers x 8 heads, d_model 256) with the tests' local
byte-level BPE tokenizer, saved to a temporary folder and loaded both ways: through
``headlens.load_model`` (TransformerBridge) for the vectorised scores and as a plain
Hugging Face model for the loops in ``induction_reference.py``. Every score is asserted
equal to 1e-5; the speed ratios are printed (no timing is asserted).

- scoring: the same activations (attention patterns; head outputs) go into the loop (as
  the reference: one ``.item()`` and one tensor update per element, a full vocabulary
  softmax per layer) and into the vectorised function (one gather; chunked projection).
  This is the part of the reference that loops, and where the ratio is measured.
  ``corrected`` copying and attention concentration are headlens's own scores; their loops
  (``corrected_loop``, ``concentration_loop``) are the same definitions element by element.
- eigen: one vocab x vocab eigendecomposition per head vs d_head x d_head (FactoredMatrix).
- end to end: the public API against forward pass + loop; the forward passes (the same
  work on both sides) dominate here, so the ratio is small on a model this size.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
warnings.filterwarnings("ignore")

import induction_reference as ref  # noqa: E402

from headlens.analyses.induction import (  # noqa: E402
    attended_copying_scores,
    attention_concentration,
    attention_concentration_scores,
    copying,
    copying_scores,
    most_attended_content,
    prefix_matching,
    prefix_matching_scores,
    repeated_random_tokens,
    sequence_length,
)
from headlens.model.loading import load_model  # noqa: E402

PREFIX_SEEDS = [0, 35, 70, 105]
COPYING_SEEDS = [0, 20]
TOL = 1e-5


def build(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.builders import build_tokenizer

    tok = build_tokenizer(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=256, n_layer=4, n_head=8,
                        bos_token_id=0, eos_token_id=0, pad_token_id=2)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


def timed(fn, repeat: int = 1):
    """(result, best wall time of ``repeat`` runs); a first untimed run warms up when repeat > 1."""
    if repeat > 1:
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    global PREFIX_SEEDS, COPYING_SEEDS
    if "--quick" in sys.argv[1:]:
        PREFIX_SEEDS, COPYING_SEEDS = [0, 5], [0]
    torch.set_num_threads(1)  # one core on both sides: a fair, load-insensitive comparison
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        folder = build(Path(tmp) / "gpt2-4x8")
        model = load_model(str(folder), device="cpu")
        hf = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        print(f"model: random GPT-2, {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, "
              f"d_model {model.cfg.d_model}, vocab {model.cfg.d_vocab}; torch threads {torch.get_num_threads()}")
        rows = []
        with torch.no_grad():
            # ---- prefix matching, scoring only (same patterns on both sides)
            t_loop = t_vec = 0.0
            for seed in PREFIX_SEEDS:
                L = sequence_length(seed)
                toks = repeated_random_tokens(model, seed)
                patterns = ref.gpt2_patterns(hf, toks)["pattern"]
                stacked = torch.stack(patterns)  # [n_layers, n_heads, pos, pos], as run_with_cache gives
                slow, dt = timed(lambda: ref.prefix_loop(patterns, L))
                t_loop += dt
                fast, dt = timed(lambda: prefix_matching_scores(stacked, toks, L), repeat=3)
                t_vec += dt
                assert np.allclose(fast.numpy(), slow.numpy(), atol=TOL), seed
            rows.append(("prefix matching, scoring", t_loop, t_vec))

            # ---- attention concentration, scoring only (same patterns on both sides)
            t_loop = t_vec = 0.0
            for seed in PREFIX_SEEDS:
                L = sequence_length(seed)
                toks = repeated_random_tokens(model, seed)
                patterns = ref.gpt2_patterns(hf, toks)["pattern"]
                stacked = torch.stack(patterns)
                slow, dt = timed(lambda: ref.concentration_loop(patterns, toks, L))
                t_loop += dt
                fast, dt = timed(lambda: attention_concentration_scores(stacked, toks, L), repeat=3)
                t_vec += dt
                assert np.allclose(fast.numpy(), slow.numpy(), atol=TOL), seed
            rows.append(("attention concentration, scoring", t_loop, t_vec))

            # ---- copying, scoring only (same activations on both sides)
            W_U = hf.lm_head.weight.T
            t_loop = t_vec = 0.0
            for seed in COPYING_SEEDS:
                toks = repeated_random_tokens(model, seed, n_repeats=1, length=4 * sequence_length(seed))
                writes, patterns = ref.copying_writes(hf, toks)
                for w, p in zip(writes, patterns):
                    slow, dt = timed(lambda: ref.copying_loop_from_writes(w, p, toks, W_U))
                    t_loop += dt
                    fast, dt = timed(lambda: copying_scores(w, p.argmax(-1), toks, W_U), repeat=3)
                    t_vec += dt
                    assert np.allclose(fast.numpy(), slow.numpy(), atol=TOL), "paper"
            rows.append(("copying paper, scoring", t_loop, t_vec))

            ln_f = hf.transformer.ln_f
            n_heads, d_model = hf.config.n_head, hf.config.n_embd
            t_loop = t_vec = 0.0
            for seed in COPYING_SEEDS:
                L = sequence_length(seed)
                toks = repeated_random_tokens(model, seed)
                run = ref.gpt2_patterns(hf, toks)
                scale = (run["final"].var(-1, unbiased=False) + ln_f.eps).sqrt()
                slow, dt = timed(lambda: ref.corrected_loop(hf, toks, L, run))
                t_loop += dt

                def vectorised():
                    return torch.stack([attended_copying_scores(
                        run["v"][layer], most_attended_content(run["pattern"][layer], toks, L), toks, L,
                        block.attn.c_proj.weight.view(n_heads, -1, d_model), W_U, scale=scale,
                        norm_weight=ln_f.weight, center=True) for layer, block in enumerate(hf.transformer.h)])

                fast, dt = timed(vectorised, repeat=3)
                t_vec += dt
                assert np.allclose(fast.numpy(), slow.numpy(), atol=TOL), "corrected"
            rows.append(("copying corrected, scoring", t_loop, t_vec))

            slow, t_loop = timed(lambda: ref.eigen_loop(hf))
            fast, t_vec = timed(lambda: copying(model, "eigen"), repeat=3)
            assert np.allclose(fast.values, slow.numpy(), atol=TOL)
            rows.append(("copying eigen (vocab^2 circuits vs d_head^2)", t_loop, t_vec))

            # ---- end to end through the public API (forward passes included on both sides)
            def loop_prefix():
                return torch.stack([ref.prefix_loop(ref.gpt2_patterns(hf, repeated_random_tokens(model, s))["pattern"],
                                                    sequence_length(s)) for s in PREFIX_SEEDS]).mean(0)

            slow, t_loop = timed(loop_prefix)
            fast, t_vec = timed(lambda: prefix_matching(model, PREFIX_SEEDS))
            assert np.allclose(fast.values, slow.numpy(), atol=TOL)
            rows.append(("prefix matching, end to end", t_loop, t_vec))
            def loop_paper():
                return torch.stack([ref.copying_loop(hf, repeated_random_tokens(
                    model, s, n_repeats=1, length=4 * sequence_length(s))) for s in COPYING_SEEDS]).mean(0)

            def loop_corrected():
                return torch.stack([ref.corrected_loop(hf, repeated_random_tokens(model, s), sequence_length(s))
                                    for s in COPYING_SEEDS]).mean(0)

            for variant, loop in (("paper", loop_paper), ("corrected", loop_corrected)):
                slow, t_loop = timed(loop)
                fast, t_vec = timed(lambda variant=variant: copying(model, variant, COPYING_SEEDS))
                assert np.allclose(fast.values, slow.numpy(), atol=TOL), variant
                rows.append((f"copying {variant}, end to end", t_loop, t_vec))

            def loop_concentration():
                return torch.stack([ref.concentration_loop(ref.gpt2_patterns(hf, repeated_random_tokens(model, s))[
                    "pattern"], repeated_random_tokens(model, s), sequence_length(s)) for s in PREFIX_SEEDS]).mean(0)

            slow, t_loop = timed(loop_concentration)
            fast, t_vec = timed(lambda: attention_concentration(model, PREFIX_SEEDS))
            assert np.allclose(fast.values, slow.numpy(), atol=TOL)
            rows.append(("attention concentration, end to end", t_loop, t_vec))

    print(f"prefix seeds {PREFIX_SEEDS} (L up to {sequence_length(max(PREFIX_SEEDS))}), "
          f"copying seeds {COPYING_SEEDS}; all scores equal to {TOL}")
    print(f"{'score':<48}{'loop s':>10}{'vectorised s':>14}{'ratio':>10}")
    for name, a, b in rows:
        print(f"{name:<48}{a:>10.3f}{b:>14.4f}{a / b:>9.1f}x")


if __name__ == "__main__":
    main()
