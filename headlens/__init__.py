"""headlens: interpretability of attention heads across layers x heads.

Task importance by gradient gates, induction-head scores, overlap between head sets, and
layer pruning by angular distance. Import submodules for the details; this namespace keeps
only the most used entry points, imported lazily so ``headlens --help`` stays instant.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "HeadlensError": "headlens.errors",
    "Gates": "headlens.model.gates",
    "gated": "headlens.model.gates",
    "load_model": "headlens.model.loading",
    "Scores": "headlens.results.scores",
    "evaluate": "headlens.analyses.scoring",
    "get_task": "headlens.tasks",
    "task_importance": "headlens.analyses.importance",
    "layer_distances": "headlens.analyses.layers",
}

__all__ = ["HeadlensError", "Gates", "Scores", "__version__", "evaluate", "gated", "get_task",
           "layer_distances", "load_model", "task_importance"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'headlens' has no attribute {name!r}")
