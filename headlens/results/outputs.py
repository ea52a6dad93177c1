"""Output paths checked before the work and written so a finished result is never lost.

Every command that writes (``--out`` folders, ``-o``/``--html`` files, a sweep's
``output:``) calls :func:`check_out_dir` or :func:`check_out_file` before it loads a model,
so a path that is a file, lies under a file, or cannot be written stops the run at once with
one line instead of a traceback after minutes of work. The checks create nothing: they probe
the nearest existing folder with a temporary file and remove it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from headlens.errors import HeadlensError


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _probe_writable(folder: Path, what: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".headlens-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise HeadlensError(f"{what}: cannot write in {folder} ({err.strerror or type(err).__name__}); "
                            f"choose a folder you can write to") from None


def check_out_dir(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """Raise unless ``path`` is (or can become) a writable folder; return it as a Path.

    Args:
        path: the output folder; it need not exist (nothing is created here).
        option: how the user named it, for the message (``--out``, ``output:`` ...).
    """
    path = Path(path).expanduser()
    what = f"{option} {path}"
    if path.exists() and not path.is_dir():
        raise HeadlensError(f"{what} is a file, not a folder; give a folder path (it is created if missing)")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise HeadlensError(f"{what}: {base} is a file, so no folder can be made below it; give another path")
    _probe_writable(base, what)
    return path


def check_out_file(path: str | os.PathLike, *, option: str = "-o", example: str = "report.html") -> Path:
    """Raise unless ``path`` names a file that can be written (not a folder); return it."""
    path = Path(path).expanduser()
    what = f"{option} {path}"
    if path.is_dir():
        raise HeadlensError(f"{what} is a folder; give a file name, e.g. {path / example}")
    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise HeadlensError(f"{what}: {base} is a file, so no file can be written below it; give another path")
    _probe_writable(base, what)
    return path
