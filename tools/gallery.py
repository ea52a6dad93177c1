"""Screenshots of saved figures for the README gallery: ``python -m tools.gallery RESULTS OUT``.

Every figure saved with :func:`headlens.plots.common.save_figure` (``*.plotly.json``) under
RESULTS is drawn at a fixed size in headless Chromium (plotly.js loaded from a local file,
no network) and written to ``OUT/<name>.png``. Dropdown figures show their first view.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from headlens.errors import HeadlensError

WIDTH, HEIGHT = 900, 560

_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><script src="plotly.min.js"></script>
<style>html, body {{ margin: 0; background: white; overflow: hidden; }}</style></head>
<body><div id="plot" class="plotly-graph-div" style="width:{w}px;height:{h}px"></div><script>
const fig = {fig};
Plotly.newPlot("plot", fig.data, fig.layout, {{staticPlot: false, displayModeBar: false}})
  .then(() => {{ document.body.dataset.done = "1"; }});
</script></body></html>"""


def gallery(results: str | os.PathLike, out: str | os.PathLike, *, width: int = WIDTH,
            height: int = HEIGHT, names: list[str] | None = None) -> list[Path]:
    """Write one ``width`` x ``height`` PNG per saved figure under ``results`` into ``out``.

    Args:
        results: a results folder (the demo's ``--out`` or any folder of saved figures).
        out: folder for the PNGs (created), named after each figure (``layout.meta.name``).
        names: only these figures (default: all).

    Returns:
        The PNG paths, in report order.

    Raises:
        HeadlensError: no saved figures, no chromium, a figure that does not render or
            raises a JavaScript error.
    """
    from tools.browser import Browser, check_plots
    from headlens.report.figures import load_figure, plotly_js
    from headlens.report.html import collect_figures

    if not Path(results).is_dir():
        raise HeadlensError(f"gallery: {results} is not a folder; pass the --out folder of `headlens demo`")
    figures = collect_figures(results)
    if names is not None:
        wanted = set(names)
        figures = [(p, m) for p, m in figures if m.get("name", _stem(p)) in wanted]
    if not figures:
        raise HeadlensError(f"gallery: no saved figures (*.plotly.json) under {results}; run "
                            f"`headlens demo --out {results}` first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="headlens-gallery-") as tmp, Browser() as browser:
        (Path(tmp) / "plotly.min.js").write_text(plotly_js(), encoding="utf-8")
        page = browser.new_page(width, height)
        for path, meta in figures:
            name = meta.get("name") or _stem(path)
            fig = load_figure(path)
            # Fixed canvas: the figure's own size would crop or leave margins.
            fig.update_layout(width=width, height=height, autosize=False)
            html_path = Path(tmp) / f"{name}.html"
            html_path.write_text(_PAGE.format(w=width, h=height, fig=fig.to_json()), encoding="utf-8")
            page.goto(html_path.as_uri())
            page.wait_for("document.body.dataset.done === '1'")
            check_plots(page, expected=1)
            written.append(page.screenshot(out / f"{name}.png"))
    return written


def _stem(path: Path) -> str:
    return path.name[: -len(".plotly.json")]


MAIN_FIGURES = ("accuracy", "induction-prefix_matching", "importance-heads", "prune-heads", "prune-grid",
                "overlap-tasks", "overlap-induction", "overlap-causal", "layers-distance", "layers-loss")
"""The demo's main figures (names given to ``save_figure`` in :mod:`headlens.runs.demo`): the README gallery."""

USAGE = """usage: python -m tools.gallery RESULTS_DIR OUT_DIR [--only NAME,NAME,... | --main]
  one PNG per saved figure (*.plotly.json) under RESULTS_DIR, drawn in headless chromium;
  --main: only the README gallery's figures (""" + ", ".join(MAIN_FIGURES) + ")"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    names = None
    if "--main" in args:
        args.remove("--main")
        names = list(MAIN_FIGURES)
    if "--only" in args:
        i = args.index("--only")
        if i + 1 >= len(args):
            print(USAGE, file=sys.stderr)
            return 2
        names = [n for n in args.pop(i + 1).split(",") if n]
        args.pop(i)
    if len(args) != 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        paths = gallery(args[0], args[1], names=names)
    except HeadlensError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"{p}  {p.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
