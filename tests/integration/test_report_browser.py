"""The HTML report and the gallery in a real browser (headless Chromium over the DevTools pipe).

A report is built from one figure of every kind (computed on a tiny random model), opened in
Chromium, and every figure must draw its SVG without a JavaScript error; a screenshot of the
page is saved under the test's temp dir (``report.png``, a CI artifact). When the shipped
``tiny-icl`` model and the offline tasks are installed, the demo's own report is checked too.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tools.browser import Browser, check_plots, find_chromium
from headlens.errors import HeadlensError

CHROMIUM = find_chromium()
if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("CI is set but no chromium is installed (.ci/system-deps installs Debian's chromium)",
                    pytrace=False)
    pytest.skip("no chromium installed (apt-get install chromium); required when CI is set",
                allow_module_level=True)

# Press the first dropdown of every figure that has one: the view must change without errors.
DROPDOWN_JS = """(() => {
  const out = [];
  for (const d of document.querySelectorAll('.plotly-graph-div')) {
    const menus = (d.layout && d.layout.updatemenus) || [];
    if (!menus.length || menus[0].buttons.length < 2) continue;
    const b = menus[0].buttons[menus[0].buttons.length - 1];
    Plotly.update(d, b.args[0], b.args[1] || {});
    out.push({id: d.id, visible: d.data.map(t => t.visible), svg: d.querySelectorAll('.main-svg').length});
  }
  return out;
})()"""


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    from headlens.model.loading import load_model
    from tests.builders import build_tiny
    from tests.figures import save_tiny_figures

    root = tmp_path_factory.mktemp("browser")
    model = load_model(str(build_tiny("gpt2", root / "gpt2", n_layers=3)), device="cpu")
    return save_tiny_figures(model, root / "results")


def open_report(report: Path, shot: Path, expected: int) -> list[dict]:
    with Browser() as browser:
        page = browser.new_page(1200, 900)
        page.goto(report.resolve().as_uri())
        status = check_plots(page, expected=expected)
        switched = page.evaluate(DROPDOWN_JS)
        assert switched, "no figure with a dropdown in the report"
        for s in switched:
            assert s["visible"].count(True) == 1 and s["visible"][0] is not True, s
            assert s["svg"] > 0
        assert page.errors == []
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(shot, full_page=True)
    return status


def test_report_renders_every_figure(figures, tmp_path):
    from headlens.report.html import build_report, collect_figures
    from tests.figures import FIGURES

    n = len(collect_figures(figures))
    assert n == len(FIGURES)
    report = build_report(figures, tmp_path / "report.html", title="tiny report")
    status = open_report(report, tmp_path / "report.png", n)
    assert [s["id"] for s in status] == [f"plot-{i}" for i in range(n)]
    assert all(s["svg"] >= 1 and s["traces"] >= 1 and s["width"] > 100 for s in status), status
    w, h = png_size(tmp_path / "report.png")
    assert w == 1200 and h > 900 * 3, (w, h)  # the whole page, not just the first screen
    print(f"screenshot: {tmp_path / 'report.png'}")


def test_browser_check_catches_broken_pages(tmp_path):
    from headlens.report.figures import figure_div
    import plotly.graph_objects as go

    # plotly.js missing: the div stays empty and the inline call throws.
    page_html = f"<html><body>{figure_div(go.Figure(go.Bar(y=[1, 2])), 'plot-0')}</body></html>"
    (tmp_path / "broken.html").write_text(page_html)
    (tmp_path / "error.html").write_text("<html><body><div class='plotly-graph-div' id='x'>"
                                         "<svg class='main-svg'></svg></div>"
                                         "<script>console.error('bad figure')</script></body></html>")
    with Browser() as browser:
        page = browser.new_page(800, 600)
        page.goto((tmp_path / "broken.html").as_uri())
        with pytest.raises(HeadlensError, match="no SVG drawn for 1 plot"):
            check_plots(page, expected=1, timeout=2)
        assert any("Plotly is not defined" in e for e in page.errors), page.errors
        page = browser.new_page(800, 600)
        page.goto((tmp_path / "error.html").as_uri())
        with pytest.raises(HeadlensError, match="console.error: bad figure"):
            check_plots(page, expected=1, timeout=2)
        with pytest.raises(HeadlensError, match="expected 2"):
            check_plots(page, expected=2, timeout=0)


def test_gallery_writes_small_pngs(figures, tmp_path):
    from tools.gallery import HEIGHT, WIDTH, gallery, main
    from tests.figures import FIGURES

    paths = gallery(figures, tmp_path / "gallery")
    assert sorted(p.stem for p in paths) == sorted(FIGURES)
    for p in paths:
        assert png_size(p) == (WIDTH, HEIGHT)
        assert 3_000 < p.stat().st_size < 150_000, (p, p.stat().st_size)
    assert main(["--help"]) == 0
    assert main([str(figures), str(tmp_path / "two"), "--only", "prune-grid,accuracy"]) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["accuracy.png", "prune-grid.png"]
    assert main([str(tmp_path / "empty-not-there"), str(tmp_path / "g3")]) == 2


@pytest.mark.slow
def test_demo_report_renders(tmp_path, monkeypatch):
    """The demo's report on the shipped model (small limits), when tiny-icl is installed."""
    from headlens.model.loading import shipped_models

    if "tiny-icl" not in shipped_models():
        pytest.skip("the shipped model tiny-icl is not installed (data/models/tiny-icl)")
    pytest.importorskip("headlens.tasks.synthetic", reason="the offline tasks (headlens.tasks.synthetic) are not installed")
    from headlens.runs.demo import DemoConfig, run_demo
    from headlens.report.html import collect_figures
    from headlens.tasks import task_names

    monkeypatch.setenv("HEADLENS_CACHE", str(tmp_path / "cache"))
    tasks = ",".join(task_names("offline")[:3])
    cfg = DemoConfig(tasks=tasks, shots=(0, 1), importance_limit=4, eval_limit=8, prune_limit=8,
                     induction_seeds=2, prune_shots=1, causal_ks=(1,), layer_texts=8, heal_steps=2)
    report = run_demo(tmp_path / "demo", cfg, log=lambda s: None, progress=False)
    n = len(collect_figures(tmp_path / "demo"))
    assert n >= 12
    open_report(report, tmp_path / "demo-report.png", n)
