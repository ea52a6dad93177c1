from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")
# tiny models: intra-op threads cost far more than they save (70x slower on a loaded
# 2-core machine, measured), so tests run single-threaded
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Folder of random-weight tiny checkpoints, one per architecture: tiny_dir / arch."""
    from tests.builders import ARCHS, build_tiny

    root = tmp_path_factory.mktemp("tiny")
    for arch in ARCHS:
        build_tiny(arch, root / arch)
    return root


@pytest.fixture(scope="session")
def tiny_models(tiny_dir):
    """Loaded bridges keyed by architecture (cached for the session)."""
    from headlens.model.loading import load_model
    from tests.builders import ARCHS

    return {arch: load_model(str(tiny_dir / arch), device="cpu") for arch in ARCHS}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own result cache."""
    monkeypatch.setenv("HEADLENS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def planted_dir(tmp_path_factory):
    """The hand-weighted induction model of tests/planted.py, saved as a checkpoint folder."""
    from tests.planted import build_planted

    return build_planted(tmp_path_factory.mktemp("planted") / "planted")


@pytest.fixture(scope="session")
def planted(planted_dir):
    from headlens.model.loading import load_model

    return load_model(str(planted_dir), device="cpu")


DEMO_SMALL = dict(importance_limit=8, eval_limit=16, prune_limit=8, induction_seeds=2, head_percents=(0, 25, 50, 75),
                  prune_tasks="letter_first,number_larger,recall_value",
                  causal_ks=(1,), layer_texts=16, heal_steps=4)


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory):
    """The demo on the shipped model with small limits (skipped when tiny-icl is absent)."""
    from headlens.model.loading import shipped_models

    if "tiny-icl" not in shipped_models():
        pytest.skip("the shipped model data/models/tiny-icl is not installed")
    from headlens.runs.demo import DemoConfig, run_demo

    root = tmp_path_factory.mktemp("demo")
    previous = os.environ.get("HEADLENS_CACHE")
    os.environ["HEADLENS_CACHE"] = str(root / "cache")
    try:
        report = run_demo(root / "out", DemoConfig(**DEMO_SMALL), log=lambda m: None, progress=False)
    finally:
        if previous is None:
            os.environ.pop("HEADLENS_CACHE", None)
        else:
            os.environ["HEADLENS_CACHE"] = previous
    return report
