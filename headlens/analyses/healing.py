"""Heal a pruned model with LoRA on its FFN projections (Gromov et al., 2024, section 3).

LoRA (Hu et al., 2021, arXiv:2106.09685) adds W + (alpha / r) B A to each FFN projection,
with alpha = r (so the scale is 1), dropout 0.05 on the LoRA input, B = 0 at the start (the
healed model starts exactly at the pruned one), AdamW with a cosine schedule after a linear
warm-up. With CUDA and ``bitsandbytes`` the frozen base is loaded in 4-bit NF4 (QLoRA,
Dettmers et al., 2023, arXiv:2305.14314) and the trained adapter is merged into the
full-precision weights; otherwise plain LoRA in the model's dtype. Only LoRA parameters get
gradients. The merged model is wrapped again as a frozen TransformerBridge.

Training and held-out texts never share a text (duplicates are dropped before the split;
given ``heldout`` texts are checked). A loss or a weight that becomes NaN or infinite (a
learning rate far too large) stops healing with an error instead of returning a broken model.

Reference: A. Gromov et al., "The Unreasonable Ineffectiveness of the Deeper Layers",
arXiv:2403.17887 (2024).
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from headlens.errors import HeadlensError
from headlens.model.lm import freeze, nll_sum
from headlens.model.surgery import clean_hf_copy, inherit_source, wrap_hf
from headlens.tasks.texts import (
    TextSource,
    batches,
    check_disjoint,
    load_texts,
    split_heldout,
)

_FFN = {
    "gpt2": r".*\.mlp\.(c_fc|c_proj)",
    "gpt_neo": r".*\.mlp\.(c_fc|c_proj)",
    "gptj": r".*\.mlp\.(fc_in|fc_out)",
    "opt": r".*\.(fc1|fc2)",
    "gpt_neox": r".*\.mlp\.(dense_h_to_4h|dense_4h_to_h)",
    "llama": r".*\.mlp\.(gate_proj|up_proj|down_proj)",
    "mistral": r".*\.mlp\.(gate_proj|up_proj|down_proj)",
    "qwen2": r".*\.mlp\.(gate_proj|up_proj|down_proj)",
    "qwen3": r".*\.mlp\.(gate_proj|up_proj|down_proj)",
    "gemma": r".*\.mlp\.(gate_proj|up_proj|down_proj)",
    "gemma2": r".*\.mlp\.(gate_proj|up_proj|down_proj)",
}


def ffn_targets(model_type: str) -> str:
    """peft ``target_modules`` regex matching the FFN projections of ``model_type``."""
    if model_type not in _FFN:
        raise HeadlensError(f"healing: no FFN module names known for model type {model_type!r}; "
                            f"supported: {', '.join(sorted(_FFN))}")
    return _FFN[model_type]


@dataclass(frozen=True)
class HealResult:
    """The healed bridge and its next-token loss (nats/token) before and after healing."""

    model: object
    train_loss_before: float
    train_loss_after: float
    heldout_loss_before: float
    heldout_loss_after: float
    steps: int
    rank: int
    quantized: bool
    n_train: int
    n_heldout: int
    seconds: float

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in (
            "train_loss_before", "train_loss_after", "heldout_loss_before", "heldout_loss_after",
            "steps", "rank", "quantized", "n_train", "n_heldout", "seconds")}


def _hf_loss(hf: nn.Module, tokenizer, texts: Sequence[str], *, batch_size: int, max_len: int,
             prepend_bos: bool, what: str = "held-out") -> float:
    device = next(hf.parameters()).device
    was_training = hf.training
    hf.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches(tokenizer, texts, batch_size=batch_size, max_len=max_len,
                         prepend_bos=prepend_bos, device=device):
            s, c = nll_sum(hf(input_ids=b.tokens, attention_mask=b.mask).logits, b.tokens, b.mask)
            total += float(s)
            count += c
    hf.train(was_training)
    loss = total / max(count, 1)
    if not math.isfinite(loss):
        raise HeadlensError(f"healing: the {what} loss is {loss} (NaN or inf): the model's outputs are "
                            f"not finite; check the model (load it and run headlens eval) or lower --lr")
    return loss


def _use_4bit(quantize: Literal["auto", "never", "always"]) -> bool:
    if quantize == "never":
        return False
    try:
        import bitsandbytes  # noqa: F401  (optional dependency)
        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if quantize == "always" and not available:
        raise HeadlensError("healing: quantize='always' needs CUDA and bitsandbytes; install "
                            "bitsandbytes on a GPU machine or use quantize='auto'")
    return available


def _load_4bit(hf: nn.Module, tokenizer) -> nn.Module:
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_compute_dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        q = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=bnb, device_map={"": 0},
                                                 attn_implementation="eager")
    return prepare_model_for_kbit_training(q, use_gradient_checkpointing=False)


def check_options(*, steps: int, rank: int, lr: float, batch_size: int, max_len: int,
                  heldout_fraction: float, warmup_steps: int | None) -> None:
    """Raise one HeadlensError listing every invalid healing option (before any work)."""
    problems = []
    if not isinstance(steps, int) or steps < 1:
        problems.append(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(rank, int) or rank < 1:
        problems.append(f"rank must be an integer >= 1, got {rank!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        problems.append(f"lr must be a finite number > 0 (e.g. 1e-3), got {lr!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(max_len, int) or max_len < 2:
        problems.append(f"max_len must be an integer >= 2, got {max_len!r}")
    if not 0.0 < heldout_fraction < 1.0:
        problems.append(f"heldout fraction must be in (0, 1), got {heldout_fraction!r}")
    if warmup_steps is not None and not 0 <= warmup_steps <= steps:
        problems.append(f"warmup_steps must be in [0, steps], got {warmup_steps!r}")
    if problems:
        raise HeadlensError("healing: " + "; ".join(problems))


def heal(model, texts: TextSource | Sequence[str], *, heldout: Sequence[str] | None = None,
         heldout_fraction: float = 0.2, steps: int = 100, rank: int = 8, lr: float = 1e-3,
         batch_size: int = 8, warmup_steps: int | None = None, max_len: int = 128, seed: int = 0,
         quantize: Literal["auto", "never", "always"] = "auto") -> HealResult:
    """LoRA-heal ``model`` on ``texts``; return the merged bridge and losses before/after.

    Args:
        model: a TransformerBridge (e.g. from :func:`headlens.model.surgery.remove_layers`); unchanged.
        texts: training text source; ``heldout_fraction`` of it is held out (seeded) unless
            ``heldout`` texts are given.
        steps: optimiser steps of ``batch_size`` texts each (texts cycled in seeded order).
        rank: LoRA rank r (alpha = r, dropout 0.05).
        lr: peak AdamW learning rate; linear warm-up over ``warmup_steps`` (default 10% of
            steps), then cosine decay to 0.
        max_len: tokens kept per text (start kept).
        seed: seeds the split, the batch order, LoRA init and dropout.
        quantize: 4-bit base when CUDA and bitsandbytes are present ("auto"), never, or always.

    Raises:
        HeadlensError: an invalid option (:func:`check_options`), ``heldout`` texts that are
            also training texts, or a loss or merged weight that is NaN or infinite.
    """
    from peft import (
        LoraConfig,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )
    from transformers import get_cosine_schedule_with_warmup

    check_options(steps=steps, rank=rank, lr=lr, batch_size=batch_size, max_len=max_len,
                   heldout_fraction=heldout_fraction, warmup_steps=warmup_steps)
    texts = load_texts(list(texts) if isinstance(texts, (list, tuple)) else texts)
    if heldout is None:
        train, held = split_heldout(texts, heldout_fraction, seed=seed)
    else:
        train, held = texts, load_texts(list(heldout))
        check_disjoint({"training": train, "held-out": held}, what="heal")
    max_len = min(max_len, int(getattr(model.cfg, "n_ctx", max_len)))
    tok = model.tokenizer
    bos = bool(getattr(model.cfg, "default_prepend_bos", True))
    warmup = warmup_steps if warmup_steps is not None else max(1, steps // 10)
    t0 = time.perf_counter()

    base = clean_hf_copy(model)
    base.requires_grad_(False)  # only the LoRA adapters train
    loss_kw = dict(tokenizer=tok, batch_size=batch_size, max_len=max_len, prepend_bos=bos)
    train_before = _hf_loss(base, texts=train, what="training (before healing)", **loss_kw)
    held_before = _hf_loss(base, texts=held, what="held-out (before healing)", **loss_kw)

    model_type = base.config.model_type
    lora = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.05, bias="none",
                      target_modules=ffn_targets(model_type), fan_in_fan_out=model_type in {"gpt2", "gpt_neo"},
                      task_type="CAUSAL_LM")
    quantized = _use_4bit(quantize)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = get_peft_model(_load_4bit(base, tok) if quantized else base, lora)
    params = [p for n, p in trained.named_parameters() if "lora_" in n]
    for n, p in trained.named_parameters():
        p.requires_grad_("lora_" in n)
    if not params:
        raise HeadlensError(f"healing: no FFN projection matched for {model_type!r}")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, warmup, steps)
    device = next(p for p in trained.parameters()).device
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    trained.train()
    for step in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(train), generator=g).tolist() * math.ceil(batch_size / len(train))
        chosen, order = order[:batch_size], order[batch_size:]
        b = next(batches(tok, [train[i] for i in chosen], batch_size=batch_size, max_len=max_len,
                         prepend_bos=bos, device=device))
        s, c = nll_sum(trained(input_ids=b.tokens, attention_mask=b.mask).logits, b.tokens, b.mask)
        loss = s / max(c, 1)
        if not bool(torch.isfinite(loss)):
            raise HeadlensError(f"healing: the training loss became {float(loss.detach())} (NaN or inf) at step "
                                f"{step + 1} of {steps} with lr={lr:g}; nothing was saved; lower --lr "
                                f"(e.g. 1e-3)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    trained.eval()

    if quantized:  # merge the adapter into the full-precision base, not the 4-bit one
        adapter = get_peft_model_state_dict(trained)
        full = get_peft_model(base, lora)
        set_peft_model_state_dict(full, adapter)
        merged = full.merge_and_unload()
    else:
        merged = trained.merge_and_unload()
    freeze(merged)
    bad = [n for n, p in merged.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise HeadlensError(f"healing: {len(bad)} merged weight tensors hold NaN or inf (e.g. {bad[0]}) "
                            f"after {steps} steps with lr={lr:g}; nothing was saved; lower --lr")
    train_after = _hf_loss(merged, texts=train, what="training (after healing)", **loss_kw)
    held_after = _hf_loss(merged, texts=held, what="held-out (after healing)", **loss_kw)

    from headlens.model.loading import model_info

    name = model_info(model).name
    bridge = wrap_hf(merged, tok, name=f"{name}-healed",
                     parent_name=getattr(model.cfg, "model_name", name))
    bridge.headlens_removed = getattr(model, "headlens_removed", None)
    inherit_source(bridge, model)
    return HealResult(model=bridge, train_loss_before=train_before, train_loss_after=train_after,
                      heldout_loss_before=held_before, heldout_loss_after=held_after, steps=steps,
                      rank=rank, quantized=quantized, n_train=len(train), n_heldout=len(held),
                      seconds=time.perf_counter() - t0)

