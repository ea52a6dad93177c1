"""The report assembles saved figures into one self-contained page."""

from __future__ import annotations

import numpy as np
import pytest

from headlens.errors import HeadlensError
from headlens.report.figures import head_heatmap, load_figure, save_figure
from headlens.report.html import build_report, collect_figures
from headlens.results.scores import Scores


def test_report_embeds_every_figure_with_captions_offline(tmp_path):
    s = Scores(np.arange(6.0).reshape(2, 3), metric="prefix_matching", model="m")
    save_figure(head_heatmap(s), tmp_path, "b", caption="Second <thing>", section="Overlap")
    save_figure(head_heatmap(s), tmp_path / "sub", "a", caption="First", section="Induction heads")
    assert [m["caption"] for _, m in collect_figures(tmp_path)] == ["First", "Second <thing>"]
    assert load_figure(tmp_path / "b.plotly.json").layout.meta["section"] == "Overlap"
    page = build_report(tmp_path).read_text()
    assert page.count('class="hl-figure"') == 2
    assert "Second &lt;thing&gt;" in page
    assert "cdn.plot.ly" not in page.split("<body>")[1] and "https://cdn" not in page[:2000]
    assert len(page) > 3_000_000  # plotly.js itself is embedded


def test_report_errors(tmp_path):
    with pytest.raises(HeadlensError, match="no saved figures"):
        build_report(tmp_path)
    with pytest.raises(HeadlensError, match="not a folder"):
        build_report(tmp_path / "missing")
