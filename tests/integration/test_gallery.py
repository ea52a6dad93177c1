"""The README gallery (``python -m tools.gallery``): plotly's static export, and names the demo writes.

The PNG tests need kaleido and a system Chromium (skipped without them, naming what to
install; required when CI is set). The names test needs neither: the gallery's
``MAIN_FIGURES`` must be figures the demo saves, or ``--main`` would fail on the demo's output.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tools.gallery import INSTALL_CHROMIUM, MAIN_FIGURES, find_chromium


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def needs_export() -> None:
    """Skip (fail under CI) without kaleido or Chromium, naming what to install."""
    missing = None
    if find_chromium() is None:
        missing = f"no Chromium for the gallery: {INSTALL_CHROMIUM}"
    else:
        try:
            import kaleido  # noqa: F401
        except ImportError:
            missing = 'kaleido is not installed: pip install -e ".[gallery]"'
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {missing}", pytrace=False)
        pytest.skip(f"{missing}; required when CI is set")


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    from headlens.model.loading import load_model
    from tests.builders import build_tiny
    from tests.figures import save_tiny_figures

    root = tmp_path_factory.mktemp("gallery")
    model = load_model(str(build_tiny("gpt2", root / "gpt2", n_layers=3)), device="cpu")
    return save_tiny_figures(model, root / "results")


def test_gallery_main_figures_are_figures_the_demo_writes(demo_out):
    from headlens.report.html import collect_figures

    saved = {meta["name"] for _, meta in collect_figures(demo_out.parent)}
    assert len(set(MAIN_FIGURES)) == len(MAIN_FIGURES)
    assert set(MAIN_FIGURES) <= saved, f"not saved by the demo: {sorted(set(MAIN_FIGURES) - saved)}"


def test_gallery_writes_small_pngs(figures, tmp_path):
    from tools.gallery import HEIGHT, WIDTH, gallery, main
    from tests.figures import FIGURES

    needs_export()
    paths = gallery(figures, tmp_path / "gallery")
    assert [p.parent for p in paths] == [tmp_path / "gallery"] * len(FIGURES)
    assert sorted(p.stem for p in paths) == sorted(FIGURES)
    for p in paths:
        assert png_size(p) == (WIDTH, HEIGHT)
        assert 3_000 < p.stat().st_size < 250_000, (p, p.stat().st_size)
    assert main([str(figures), str(tmp_path / "two"), "--only", "prune-grid,accuracy"]) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["accuracy.png", "prune-grid.png"]


def test_gallery_errors_are_one_line(figures, tmp_path, capsys, monkeypatch):
    from tools.gallery import main

    assert main(["--help"]) == 0
    cases = [([str(tmp_path / "not-there"), str(tmp_path / "g")], "is not a folder"),
             ([str(tmp_path), str(tmp_path / "g")], "no saved figures"),
             ([str(figures), str(tmp_path / "g"), "--only", "accuracy,nope"], "no figure named nope")]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    assert main([str(figures), str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: gallery: no Chromium found (kaleido draws the PNGs in it): "
                          f"BROWSER_PATH={tmp_path / 'no-chromium'} is not an executable; ") and err.count("\n") == 1, err
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main([str(figures), str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "none of chromium, chromium-browser" in err and "apt-get install chromium" in err, err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "g").exists()
