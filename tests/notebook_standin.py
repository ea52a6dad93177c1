"""A stand-in for the shipped model and offline tasks, to run the notebooks without them.

``build_standin(folder)`` writes ``folder/data/models/tiny-icl`` (a random-weight 4-layer
GPT-2, 256 positions, built with :mod:`tests.builders`), three two-choice task files (80 lines each), and a
text file; it returns the environment variables that point the notebooks at them::

    python -c "from tests.notebook_standin import build_standin; print(build_standin('/tmp/standin'))"
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_TEXTS = Path(__file__).parent.parent / "data" / "layers_sample.txt"


def build_standin(folder: str | Path, tasks=("first", "second", "longer")) -> dict[str, str]:
    import torch
    from transformers import AutoModelForCausalLM

    import numpy as np

    from tests.builders import CORPUS, build_tokenizer, tiny_config

    folder = Path(folder)
    model_dir = folder / "data" / "models" / "tiny-icl"
    tok = build_tokenizer(model_dir)
    torch.manual_seed(0)
    # 256 positions: the notebooks' induction sequences (5 seeds) need up to 141 tokens.
    AutoModelForCausalLM.from_config(tiny_config("gpt2", len(tok), n_layers=4, n_ctx=256)).save_pretrained(model_dir)
    words = sorted(set(" ".join(CORPUS).split()))
    rng = np.random.default_rng(0)
    files = []
    for name in tasks:  # three rules over the same word pairs: only demonstrations tell them apart
        lines = []
        for i in range(80):
            a, b = rng.choice(words, 2, replace=False)
            gold = {"first": 0, "second": 1, "longer": int(len(b) > len(a))}[name]
            lines.append(json.dumps({"context": f"{a} {b} ->", "choices": [f" {a}", f" {b}"], "gold": gold,
                                     "split": "train" if i < 40 else "test"}))
        path = folder / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        files.append(str(path))
    return {"HEADLENS_DATA_DIR": str(folder / "data"), "HEADLENS_TASKS": ",".join(files),
            "HEADLENS_TEXTS": str(SAMPLE_TEXTS)}
