"""The HTML report and the figure pages in a real browser: playwright driving the system Chromium.

A report is built from one figure of every kind (computed on a tiny random model), opened in
headless Chromium (the system's, launched with ``executable_path``; playwright downloads no
browser), and every figure must draw its SVG with no JavaScript error and no request leaving
the disk; the first dropdown of every figure is switched, and a full-page screenshot is
saved under the test's temp dir (``report.png``, a CI artifact). The figure pages written
beside the report must draw from their one shared ``plotly.min.js``. When the shipped
``tiny-icl`` model and the offline tasks are installed, the demo's own report is checked too.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tools.gallery import INSTALL_CHROMIUM, find_chromium

CHROMIUM = find_chromium()
MISSING = None
if CHROMIUM is None:
    MISSING = f"no Chromium for the browser tests: {INSTALL_CHROMIUM}"
else:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        MISSING = ('playwright is not installed: pip install -e ".[test]" (it drives the system '
                   "Chromium; never run `playwright install`)")
if MISSING:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {MISSING}", pytrace=False)
    pytest.skip(f"{MISSING}; required when CI is set", allow_module_level=True)

# Per plot div: whether plotly drew it (its .main-svg exists).
PLOT_STATUS_JS = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
  id: d.id, svg: d.querySelectorAll('.main-svg').length,
  traces: (d.data || []).length, width: d.getBoundingClientRect().width}))"""

ALL_DRAWN_JS = """n => { const d = document.querySelectorAll('.plotly-graph-div');
  return d.length >= n && Array.from(d).every(x => x.querySelector('.main-svg')); }"""

# Press the last button of the first dropdown of every figure that has one: the view must change.
DROPDOWN_JS = """() => {
  const out = [];
  for (const d of document.querySelectorAll('.plotly-graph-div')) {
    const menus = (d.layout && d.layout.updatemenus) || [];
    if (!menus.length || menus[0].buttons.length < 2) continue;
    const b = menus[0].buttons[menus[0].buttons.length - 1];
    Plotly.update(d, b.args[0], b.args[1] || {});
    out.push({id: d.id, visible: d.data.map(t => t.visible), svg: d.querySelectorAll('.main-svg').length});
  }
  return out;
}"""

NewPage = Callable[[int, int], tuple["playwright.sync_api.Page", list[str]]]


@contextmanager
def chromium() -> Iterator[NewPage]:
    """The system Chromium under playwright; yields ``new_page(width, height) -> (page, errors)``.

    ``errors`` collects uncaught exceptions, ``console.error``/``assert`` messages (Chromium
    logs a resource that fails to load there too) and every request that is not a local
    file (aborted: the pages must work offline).
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            def new_page(width: int, height: int):
                page = browser.new_page(viewport={"width": width, "height": height})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(f"exception: {exc}"))
                page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
                        if msg.type in ("error", "assert") else None)

                def offline(route):
                    if route.request.url.startswith(("file:", "data:", "about:")):
                        route.continue_()
                    else:
                        errors.append(f"network request: {route.request.url}")
                        route.abort()

                page.route("**/*", offline)
                return page, errors

            yield new_page
        finally:
            browser.close()


def check_plots(page, errors: list[str], *, expected: int, timeout: float = 60.0) -> list[dict]:
    """Wait until ``expected`` plotly divs drew their SVG; one status dict per div.

    Raises:
        AssertionError: a different number of divs, a div without SVG after ``timeout``
            seconds, or anything in ``errors``.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(ALL_DRAWN_JS, arg=expected, timeout=timeout * 1000)
    except PlaywrightTimeout:
        pass  # the assertions below say what is missing
    status = page.evaluate(PLOT_STATUS_JS)
    assert len(status) == expected, f"{len(status)} plot divs on the page, expected {expected}"
    missing = [s["id"] for s in status if s["svg"] == 0]
    assert not missing, f"no SVG drawn for {len(missing)} plot(s): {', '.join(missing)}; errors: {errors}"
    assert not errors, "JavaScript errors: " + " | ".join(errors)
    return status


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
    """Open ``report``, check every figure and switch every dropdown, save a full-page ``shot``."""
    with chromium() as new_page:
        page, errors = new_page(1200, 900)
        page.goto(report.resolve().as_uri())
        status = check_plots(page, errors, expected=expected)
        switched = page.evaluate(DROPDOWN_JS)
        assert switched, "no figure with a dropdown in the report"
        for s in switched:
            assert s["visible"].count(True) == 1 and s["visible"][0] is not True, s
            assert s["svg"] > 0
        assert errors == []
        page.screenshot(path=shot, full_page=True)
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


def test_figure_pages_draw_from_the_shared_plotly_js(figures):
    from tests.figures import FIGURES

    pages = sorted(figures.glob("*.html"))
    assert sorted(p.stem for p in pages) == sorted(FIGURES)
    assert [p.name for p in figures.glob("*.js")] == ["plotly.min.js"]
    with chromium() as new_page:
        page, errors = new_page(900, 600)
        for p in pages:
            page.goto(p.resolve().as_uri())
            check_plots(page, errors, expected=1)


def test_browser_check_catches_broken_pages(tmp_path):
    import plotly.graph_objects as go

    from headlens.report.figures import figure_div, write_html

    # plotly.js missing: the div stays empty and the inline call throws.
    page_html = f"<html><body>{figure_div(go.Figure(go.Bar(y=[1, 2])), 'plot-0')}</body></html>"
    (tmp_path / "broken.html").write_text(page_html)
    (tmp_path / "error.html").write_text("<html><body><div class='plotly-graph-div' id='x'>"
                                         "<svg class='main-svg'></svg></div>"
                                         "<script>console.error('bad figure')</script></body></html>")
    write_html(go.Figure(go.Bar(y=[1, 2])), tmp_path / "moved" / "page.html")
    (tmp_path / "moved" / "plotly.min.js").unlink()  # a figure page moved without its plotly.js
    (tmp_path / "online.html").write_text("<html><body><div class='plotly-graph-div' id='x'>"
                                          "<svg class='main-svg'></svg></div>"
                                          "<script src='https://cdn.plot.ly/plotly-2.0.0.min.js'></script>"
                                          "</body></html>")
    with chromium() as new_page:
        page, errors = new_page(800, 600)
        page.goto((tmp_path / "broken.html").as_uri())
        with pytest.raises(AssertionError, match="no SVG drawn for 1 plot"):
            check_plots(page, errors, expected=1, timeout=2)
        assert any("Plotly is not defined" in e for e in errors), errors
        page, errors = new_page(800, 600)
        page.goto((tmp_path / "moved" / "page.html").as_uri())
        with pytest.raises(AssertionError, match="no SVG drawn for 1 plot"):
            check_plots(page, errors, expected=1, timeout=2)
        page, errors = new_page(800, 600)
        page.goto((tmp_path / "error.html").as_uri())
        with pytest.raises(AssertionError, match="console.error: bad figure"):
            check_plots(page, errors, expected=1, timeout=2)
        with pytest.raises(AssertionError, match="expected 2"):
            check_plots(page, errors, expected=2, timeout=0.1)
        page, errors = new_page(800, 600)
        page.goto((tmp_path / "online.html").as_uri())
        with pytest.raises(AssertionError, match="network request: https://cdn.plot.ly"):
            check_plots(page, errors, expected=1, timeout=2)


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
