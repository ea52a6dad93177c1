"""Smoke test of the shipped model's training script: a few steps of a tiny model, then headlens
loads and evaluates what it saved."""

from __future__ import annotations

import json
import math

from headlens.model.loading import load_model


def test_train_tiny_a_few_steps(tmp_path, capsys):
    from tools import train_tiny

    out = tmp_path / "tiny"
    train_tiny.main(["--out", str(out), "--steps", "3", "--arch", "gpt2", "--d-model", "16", "--layers", "1",
                     "--heads", "2", "--tokens-per-batch", "256", "--repeat-warmup", "1",
                     "--eval-n", "0"])
    record = json.loads((out / "training_record.json").read_text())
    assert record["steps"] == 3 and record["n_layers"] == 1 and record["arch"] == "gpt2"
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert logged and all(math.isfinite(v) for r in logged for k, v in r.items() if k.startswith("loss"))
    model = load_model(str(out), device="cpu")
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_model) == (1, 2, 16)
    from headlens.analyses.scoring import evaluate

    res = evaluate(model, "letter_first", 1, limit=4, progress=False)  # the word-level tokenizer covers the suite
    assert res.metrics["n"] == 4 and 0.0 <= res.metrics["acc"] <= 1.0
