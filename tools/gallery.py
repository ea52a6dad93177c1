"""PNGs of saved figures for the README gallery: ``python -m tools.gallery RESULTS OUT``.

Every figure saved with :func:`headlens.report.figures.save_figure` (``*.plotly.json``)
under RESULTS is exported by plotly's own static export (:func:`plotly.io.write_images`,
the batch form of ``fig.write_image``) at a fixed size into ``OUT/<name>.png``. plotly
hands the figures to kaleido (>= 1), which draws them in the system Chromium (one headless
browser for all of them; plotly.js comes from the installed plotly, no download); dropdown
figures show their first view. Chromium is found by :func:`find_chromium`; kaleido never
downloads one here.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from headlens.errors import HeadlensError

WIDTH, HEIGHT = 900, 560

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

INSTALL_CHROMIUM = ("install Chromium (Debian/Ubuntu: apt-get install chromium; CI: .ci/system-deps) "
                    "or set BROWSER_PATH to a Chromium or Chrome executable")

MAIN_FIGURES = ("accuracy", "induction-prefix_matching", "importance-heads", "prune-heads", "prune-grid",
                "overlap-tasks", "overlap-induction", "overlap-causal", "layers-distance", "layers-loss")
"""The demo's main figures (names given to ``save_figure`` in :mod:`headlens.runs.demo`): the README gallery."""


def find_chromium() -> str | None:
    """The system Chromium/Chrome executable: ``$BROWSER_PATH``, else the first of
    :data:`CHROMIUM_NAMES` on ``PATH`` (Debian: ``/usr/bin/chromium``); None if neither.

    ``BROWSER_PATH`` is the variable kaleido's browser finder (choreographer) reads, so one
    setting points the gallery and the browser tests at the same executable.
    """
    env = os.environ.get("BROWSER_PATH")
    if env:
        found = env if os.path.isfile(env) else shutil.which(env)
        return found if found and os.access(found, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def gallery(results: str | os.PathLike, out: str | os.PathLike, *, width: int = WIDTH,
            height: int = HEIGHT, names: list[str] | None = None) -> list[Path]:
    """Write one ``width`` x ``height`` PNG per saved figure under ``results`` into ``out``.

    Args:
        results: a results folder (the demo's ``--out`` or any folder of saved figures).
        out: folder for the PNGs (created), named after each figure (``layout.meta.name``).
        names: only these figures (default: all); a name that is not there is an error.

    Returns:
        The PNG paths, in report order.

    Raises:
        HeadlensError: not a folder, no saved figures, an unknown name, no Chromium, kaleido
            missing, or a figure that did not export.
    """
    from headlens.report.figures import load_figure
    from headlens.report.html import collect_figures

    if not Path(results).is_dir():
        raise HeadlensError(f"gallery: {results} is not a folder; pass the --out folder of `headlens demo`")
    figures = [(meta.get("name") or _stem(p), p) for p, meta in collect_figures(results)]
    if names is not None:
        missing = sorted(set(names) - {n for n, _ in figures})
        if missing:
            raise HeadlensError(f"gallery: no figure named {', '.join(missing)} under {results}; "
                                f"saved: {', '.join(n for n, _ in figures) or 'none'}")
        figures = [(n, p) for n, p in figures if n in set(names)]
    if not figures:
        raise HeadlensError(f"gallery: no saved figures (*.plotly.json) under {results}; run "
                            f"`headlens demo --out {results}` first")
    chromium = find_chromium()
    if chromium is None:
        where = (f"BROWSER_PATH={os.environ['BROWSER_PATH']} is not an executable" if os.environ.get("BROWSER_PATH")
                 else f"none of {', '.join(CHROMIUM_NAMES)} on PATH")
        raise HeadlensError(f"gallery: no Chromium found (kaleido draws the PNGs in it): {where}; {INSTALL_CHROMIUM}")
    try:
        import kaleido  # noqa: F401  (plotly's write_image needs it)
        import plotly.io as pio
    except ImportError:
        raise HeadlensError('gallery: kaleido is not installed; pip install -e ".[gallery]"') from None

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs, paths = [], []
    for name, path in figures:
        fig = load_figure(path)
        # fixed canvas: the figure's own size would crop it or leave margins
        fig.update_layout(width=width, height=height, autosize=False)
        figs.append(fig)
        paths.append(out / f"{name}.png")
        paths[-1].unlink(missing_ok=True)  # kaleido reports a failed figure only by not writing it
    previous = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = chromium
    try:
        pio.write_images(figs, paths, format="png", width=width, height=height, scale=1)
    except (RuntimeError, OSError) as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise HeadlensError(f"gallery: plotly/kaleido could not export with {chromium}: {first.strip()}") from err
    finally:
        if previous is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = previous
    failed = [p.stem for p in paths if not p.is_file()]
    if failed:
        raise HeadlensError(f"gallery: kaleido wrote no PNG for {', '.join(failed)}; "
                            f"check that {chromium} runs headless")
    return paths


def _stem(path: Path) -> str:
    return path.name[: -len(".plotly.json")]


USAGE = """usage: python -m tools.gallery RESULTS_DIR OUT_DIR [--only NAME,NAME,... | --main]
  one PNG per saved figure (*.plotly.json) under RESULTS_DIR, exported by plotly's
  write_image (kaleido, system Chromium; $BROWSER_PATH to choose one);
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
