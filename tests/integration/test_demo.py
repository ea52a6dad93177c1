"""`headlens demo` on the shipped model: every section present, and a rerun is all cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headlens.report.html import collect_figures
from tests.conftest import DEMO_SMALL


def test_demo_writes_every_section_and_figure(demo_out):
    out = demo_out.parent
    sections = {meta["section"] for _, meta in collect_figures(out)}
    assert sections == {"Overview", "Induction heads", "Task importance", "Pruning", "Overlap", "Layer pruning"}
    assert len(collect_figures(out)) >= 17
    page = demo_out.read_text()
    assert page.count('class="hl-figure"') == len(collect_figures(out))
    pm = json.loads((out / "induction" / "prefix_matching.json").read_text())
    vals = np.array(pm["values"])
    assert vals.max() > 3 * np.median(vals)  # a trained model has clear induction heads
    import pandas as pd

    curve = pd.read_csv(out / "layers" / "curve.csv")
    assert curve["healed"].any() and (~curve["healed"]).any()  # healed blocks next to unhealed ones


def test_demo_heals_blocks_that_are_not_loss_curve_points(demo_out, tmp_path, monkeypatch):
    """A block size in heal_ns but not in layer_ns is measured, unhealed and healed."""
    import pandas as pd

    from headlens.runs.demo import DemoConfig, run_demo

    monkeypatch.setenv("HEADLENS_CACHE", str(demo_out.parent.parent / "cache"))  # other sections: cached
    run_demo(tmp_path / "out", DemoConfig(**{**DEMO_SMALL, "layer_ns": (0,), "heal_ns": (1,)}),
             log=lambda m: None, progress=False)
    curve = pd.read_csv(tmp_path / "out" / "layers" / "curve.csv")
    assert set(curve.loc[curve["n"] == 1, "healed"]) == {True, False}


def test_demo_rerun_recomputes_nothing(demo_out, monkeypatch):
    import headlens.analyses.healing
    import headlens.analyses.importance
    import headlens.analyses.scoring
    from headlens.runs.demo import DemoConfig, run_demo

    def boom(*a, **k):
        raise AssertionError("recomputed on a cached rerun")

    for mod, name in [(headlens.analyses.importance, "head_importance"), (headlens.analyses.scoring, "evaluate_prepared"),
                      (headlens.analyses.healing, "heal")]:
        monkeypatch.setattr(mod, name, boom)
    monkeypatch.setenv("HEADLENS_CACHE", str(demo_out.parent.parent / "cache"))
    again = run_demo(demo_out.parent, DemoConfig(**DEMO_SMALL), log=lambda m: None, progress=False)
    assert again == demo_out


def test_demo_cli_help_is_instant_and_lists_out():
    from typer.testing import CliRunner

    from headlens.cli.app import app

    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0 and "--out" in res.output
