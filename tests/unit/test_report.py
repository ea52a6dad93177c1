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


def test_figures_in_one_folder_share_one_plotly_js(tmp_path):
    from headlens.report.figures import plotly_js, write_html

    s = Scores(np.arange(6.0).reshape(2, 3), metric="prefix_matching", model="m")
    for name in ("a", "b", "c"):
        save_figure(head_heatmap(s), tmp_path, name, caption=name)
    write_html(head_heatmap(s), tmp_path / "d.html")
    js = tmp_path / "plotly.min.js"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".plotly.json")) == [
        "a.html", "b.html", "c.html", "d.html", "plotly.min.js"]
    assert js.read_bytes() == plotly_js().encode()
    for name in "abcd":
        page = (tmp_path / f"{name}.html").read_text()
        assert 'src="plotly.min.js"' in page and len(page) < 100_000, len(page)
    # the report stays one self-contained page: plotly.js inside, nothing loaded from beside it
    report = build_report(tmp_path).read_text()
    assert report.count(plotly_js()) == 1 and "plotly.min.js" not in report
    # a stale bundle (another plotly's) is replaced; "embed" is one self-contained file
    js.write_text("/* plotly.js 1.0 */")
    write_html(head_heatmap(s), tmp_path / "e.html")
    assert js.read_bytes() == plotly_js().encode()
    write_html(head_heatmap(s), tmp_path / "alone" / "f.html", plotlyjs="embed")
    assert [p.name for p in (tmp_path / "alone").iterdir()] == ["f.html"]
    assert len((tmp_path / "alone" / "f.html").read_text()) > 3_000_000
    with pytest.raises(HeadlensError, match="plotlyjs must be one of beside, embed, got 'cdn'"):
        write_html(head_heatmap(s), tmp_path / "g.html", plotlyjs="cdn")


def test_pruning_band_is_the_interval_of_the_random_draws():
    import pandas as pd

    from headlens.report.importance import pruning_curves

    df = pd.DataFrame({"percent": [0, 50], "acc": [1.0, 0.9], "acc_random_mean": [1.0, 0.6],
                       "acc_random_std": [0.0, 0.1], "acc_random_low": [1.0, 0.2],
                       "acc_random_high": [1.0, 0.95], "n_random": [1, 70], "random_exact": [True, True]})
    band = pruning_curves({"heads": df}).data[0]
    assert list(band.y) == [1.0, 0.95, 0.2, 1.0]  # high forward, low backward: not mean +/- sd
    assert "2.5-97.5%" in band.name
