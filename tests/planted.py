"""A hand-weighted 2-layer GPT-2 with a planted previous-token head and induction head.

The residual stream (d_model = 640) is split into four blocks of one-hot features, each
160 wide: TOK (the current token), POS (the position), PREV (the previous token, written by
the previous-token head) and OUT (the prediction, written by the induction head and read by
the unembedding).

- L0H1 (``PREV_HEAD``): query = own position, key = position + 1, so position i attends to
  i - 1 (softmax logit gap 40); OV copies TOK into PREV.
- L1H2 (``INDUCTION_HEAD``): query = TOK, key = PREV (gap 30): at a repeated token A it
  attends to the token B that followed A before. The key also reads TOK weakly (gap 5), so
  when nothing matches (the first copy of S, or unique tokens) the head falls back to the
  current token. OV copies TOK into OUT, and W_U reads OUT: "... A B ... A" -> B.
- Every other head has random query/key weights (non-trivial patterns) and zero value and
  output weights, so it writes nothing. MLPs are zero.

LayerNorms are made harmless: every vector written into the residual stream is centred
(the all-ones direction is projected out), so LN's mean subtraction does nothing and LN
only rescales; the LN weights undo that scale for the expected number of active features,
and all biases are zero. The final LN's rescaling does not change the argmax. The centring
leaks a uniform -1/d_model from L0H1's output into OUT, so its full OV circuit is a tiny
constant matrix with one negative eigenvalue: its ``eigen`` copying score is -1 (not copying).

Expected scores (seeds 0-2): prefix matching L1H2 = 1.000, every other head < 0.05; copying
L1H2 = 1.000 under ``paper``, ``corrected`` and ``eigen``, every other head 0 under ``paper``
and ``eigen`` (L0H1 -1 under ``eigen``) and at chance under ``corrected`` (1/len(S), 0.037). The induction continuation is predicted with probability > 0.99; zero-ablating
L1H2 or L0H1 drops it to chance, other heads change nothing.

Two switches build variants for the copying tests (the default model has neither):
``fallback_gap=0`` removes L1H2's fallback, so on unique tokens it has nothing to match and
spreads its attention; ``bos_head=True`` turns L1H0 (``BOS_HEAD``) into a head that attends
to BOS from every position (gap ``BOS_GAP``) and writes ``BOS_WRITE`` times the BOS token's OUT
feature (its value reads only the BOS token): a fixed-position head whose output is a
constant, which copies no content token.

The tokenizer is word-level (``t3`` ... ``t159`` plus ``<bos> <unk> <pad>``), built with
``tokenizers`` and saved next to the weights, so ``headlens.load_model(folder)`` loads it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

PREV_HEAD = (0, 1)
INDUCTION_HEAD = (1, 2)
N_VOCAB = 160
N_CTX = 160
D_HEAD = 160
N_HEADS = 4
D_MODEL = D_HEAD * N_HEADS  # = 3 * N_VOCAB + N_CTX
D_MLP = 8  # the MLPs are zero; keep them narrow so the model runs fast
SPECIALS = ["<bos>", "<unk>", "<pad>"]

TOK, POS, PREV, OUT = 0, N_VOCAB, N_VOCAB + N_CTX, 2 * N_VOCAB + N_CTX
PREV_GAP, MATCH_GAP, FALLBACK_GAP = 40.0, 30.0, 5.0
BOS_HEAD = (1, 0)
BOS_GAP, BOS_WRITE = 30.0, 0.5
BOS_ID = 0


def build_word_tokenizer(folder: str | Path):
    """A word-level tokenizer (ids 0..2 specials, then ``t3`` ... ``t159``) saved into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIALS), N_VOCAB)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(str(folder))
    return fast


def _block(start: int, n: int) -> torch.Tensor:
    """[n, D_MODEL]: row i is the unit vector of feature ``start + i``."""
    m = torch.zeros(n, D_MODEL)
    m[torch.arange(n), start + torch.arange(n)] = 1.0
    return m


def planted_weights(seed: int = 0, *, fallback_gap: float = FALLBACK_GAP,
                    bos_head: bool = False) -> dict[str, torch.Tensor]:
    """The GPT-2 state dict (HF names and Conv1D [in, out] layout) of the planted model.

    ``fallback_gap`` and ``bos_head`` build the variants described in the module docstring.
    """
    g = torch.Generator().manual_seed(seed)
    centre = torch.eye(D_MODEL) - 1.0 / D_MODEL  # projects out the all-ones direction
    root_dh = math.sqrt(D_HEAD)
    sd: dict[str, torch.Tensor] = {
        "transformer.wte.weight": _block(TOK, N_VOCAB) @ centre,
        "transformer.wpe.weight": _block(POS, N_CTX) @ centre,
        "transformer.ln_f.weight": torch.ones(D_MODEL),
        "transformer.ln_f.bias": torch.zeros(D_MODEL),
        "lm_head.weight": _block(OUT, N_VOCAB),
    }
    shift = torch.zeros(N_CTX, D_HEAD)
    shift[torch.arange(N_CTX - 1), torch.arange(1, N_CTX)] = 1.0  # position p -> slot p + 1
    for layer in range(2):
        wq = torch.randn(D_MODEL, D_MODEL, generator=g)
        wk = torch.randn(D_MODEL, D_MODEL, generator=g)
        wv = torch.zeros(D_MODEL, D_MODEL)
        wo = torch.zeros(D_MODEL, D_MODEL)
        planted = PREV_HEAD if layer == PREV_HEAD[0] else INDUCTION_HEAD
        cols = slice(planted[1] * D_HEAD, (planted[1] + 1) * D_HEAD)
        wq[:, cols] = 0.0
        wk[:, cols] = 0.0
        eye = torch.eye(N_VOCAB)
        if layer == PREV_HEAD[0]:
            wq[POS:POS + N_CTX, cols] = PREV_GAP * root_dh * torch.eye(N_CTX)
            wk[POS:POS + N_CTX, cols] = shift
            wv[TOK:TOK + N_VOCAB, cols] = eye
            wo[cols, PREV:PREV + N_VOCAB] = eye
        else:
            wq[TOK:TOK + N_VOCAB, cols] = MATCH_GAP * root_dh * eye
            wk[PREV:PREV + N_VOCAB, cols] = eye
            wk[TOK:TOK + N_VOCAB, cols] = (fallback_gap / MATCH_GAP) * eye
            wv[TOK:TOK + N_VOCAB, cols] = eye
            wo[cols, OUT:OUT + N_VOCAB] = eye
        if bos_head and layer == BOS_HEAD[0]:
            c = BOS_HEAD[1] * D_HEAD  # one dimension of the head does everything
            wq[:, c:c + D_HEAD] = 0.0
            wk[:, c:c + D_HEAD] = 0.0
            wq[TOK:TOK + N_VOCAB, c] = BOS_GAP * root_dh  # every position has one TOK feature
            wk[POS, c] = 1.0  # position 0 only
            wv[TOK + BOS_ID, c] = 1.0
            wo[c, OUT + BOS_ID] = BOS_WRITE
        # LayerNorm maps a sum of k centred unit features to norm sqrt(D_MODEL): undo it
        n_features = 2 if layer == 0 else 3
        p = f"transformer.h.{layer}."
        sd.update({
            p + "ln_1.weight": torch.full((D_MODEL,), math.sqrt(n_features / D_MODEL)),
            p + "ln_1.bias": torch.zeros(D_MODEL),
            p + "attn.c_attn.weight": torch.cat([wq, wk, wv], 1),
            p + "attn.c_attn.bias": torch.zeros(3 * D_MODEL),
            p + "attn.c_proj.weight": wo @ centre,
            p + "attn.c_proj.bias": torch.zeros(D_MODEL),
            p + "ln_2.weight": torch.ones(D_MODEL),
            p + "ln_2.bias": torch.zeros(D_MODEL),
            p + "mlp.c_fc.weight": torch.zeros(D_MODEL, D_MLP),
            p + "mlp.c_fc.bias": torch.zeros(D_MLP),
            p + "mlp.c_proj.weight": torch.zeros(D_MLP, D_MODEL),
            p + "mlp.c_proj.bias": torch.zeros(D_MODEL),
        })
    return sd


def build_planted(folder: str | Path, seed: int = 0, *, fallback_gap: float = FALLBACK_GAP,
                  bos_head: bool = False) -> Path:
    """Write the planted model (HF GPT2LMHeadModel + word-level tokenizer) into ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_word_tokenizer(folder)
    config = GPT2Config(vocab_size=N_VOCAB, n_positions=N_CTX, n_embd=D_MODEL, n_layer=2, n_head=N_HEADS, n_inner=D_MLP,
                        bos_token_id=0, eos_token_id=0, pad_token_id=2, tie_word_embeddings=False,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    missing, unexpected = model.load_state_dict(planted_weights(seed, fallback_gap=fallback_gap, bos_head=bos_head), strict=False)
    if unexpected or any(not k.endswith(("attn.bias", "attn.masked_bias")) for k in missing):
        raise RuntimeError(f"planted weights do not fit GPT-2: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(str(folder))
    return folder


def write_copy_task(path, *, n: int = 24, n_choices: int = 4, seed: int = 0):
    """A JSONL task file of lines `t.. t.. ... A` whose gold continuation is the token that
    followed A earlier; the distractors are other tokens of the same context, so only
    copying can tell (the README's planted-model example and its tests)."""
    import json
    from pathlib import Path

    import numpy as np

    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        seq = rng.choice(np.arange(3, 160), size=10, replace=False)
        i = int(rng.integers(1, 8))  # query seq[i], answer seq[i + 1] (position 0 has no previous token)
        context = " ".join(f"t{t}" for t in seq) + f" t{seq[i]}"
        others = [t for j, t in enumerate(seq) if j != i + 1]
        wrong = rng.choice(others, size=n_choices - 1, replace=False)
        choices = [f" t{seq[i + 1]}"] + [f" t{t}" for t in wrong]
        order = rng.permutation(n_choices)
        lines.append({"context": context, "choices": [choices[j] for j in order],
                      "gold": int(np.argmax(order == 0))})
    path = Path(path)
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path
