"""The induction figure: two or three panels."""

from __future__ import annotations

import numpy as np

from headlens.results.scores import Scores


def test_induction_panels_two_heatmaps_with_hover_and_std():
    from headlens.report.induction import induction_panels

    prefix = Scores(values=np.arange(6.0).reshape(2, 3) / 6, metric="prefix_matching", model="m",
                    std=np.full((2, 3), 0.1))
    copy = Scores(values=np.zeros((2, 3)), metric="copying", model="m", meta={"variant": "eigen"})
    fig = induction_panels(prefix, copy)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert np.array_equal(np.asarray(fig.data[0].z), prefix.values)
    assert list(fig.data[0].y) == [0, 1]  # layer 0 first, i.e. at the bottom of an increasing axis
    assert "copying (eigen)" in [a.text for a in fig.layout.annotations]
    custom = np.asarray(fig.data[0].customdata)
    assert custom.shape == (2, 3, 3) and np.allclose(custom[..., 2], 0.1)
    assert "L%{customdata[0]}H%{customdata[1]}" in fig.data[0].hovertemplate


def test_induction_panels_third_panel_is_attention_concentration():
    from headlens.report.induction import induction_panels

    prefix = Scores(values=np.zeros((2, 3)), metric="prefix_matching", model="m")
    copy = Scores(values=np.zeros((2, 3)), metric="copying", model="m", meta={"variant": "corrected"})
    conc = Scores(values=np.full((2, 3), 0.5), metric="attention_concentration", model="m")
    fig = induction_panels(prefix, copy, conc)
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    assert [a.text for a in fig.layout.annotations] == ["prefix matching", "copying (corrected)",
                                                        "attention concentration"]
    assert np.array_equal(np.asarray(fig.data[2].z), conc.values)
    bars = [t.colorbar.x for t in fig.data]
    assert bars == sorted(bars) and bars[-1] > 1  # one colour bar right of each panel
