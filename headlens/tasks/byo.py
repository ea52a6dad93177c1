"""Bring your own task: a JSONL file of examples, one JSON object per line.

Each line: ``{"context": str, "choices": [str, ...], "gold": int}`` and optionally
``"split": "train" | "validation" | "test"`` (lines without one are test lines), ``"group"``
and ``"id"``. Demonstrations come from the train lines; when no line names a split, from the
other lines of the file (never the query). A demonstration is its context followed by its
gold choice. Defaults: demonstrations separated by a blank line (``separator="\\n\\n"``),
choices scored exactly as written (``delimiter=""``: a leading space is the file's choice).

The whole file is validated before anything is computed: the first bad line raises an
error naming the file, the line number and the problem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from headlens.errors import HeadlensError
from headlens.tasks.schema import Example

SPLITS = ("train", "validation", "test")
KEYS = {"context", "choices", "gold", "split", "group", "id"}
_PARSED: dict[tuple, tuple[list[tuple[str, Example]], str]] = {}


def decode_utf8(data: bytes, path: str | Path) -> str:
    """``data`` decoded as UTF-8, or a one-line error naming the file and the first bad byte
    (a Latin-1 or binary file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = data[err.start]
        raise HeadlensError(f"{path}: not UTF-8 text (byte 0x{bad:02x} at offset {err.start}); task files "
                            f"must be UTF-8: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file (see :func:`decode_utf8`)."""
    return decode_utf8(Path(path).read_bytes(), path)


def _check_line(obj, where: str) -> tuple[str, Example]:
    if not isinstance(obj, dict):
        raise HeadlensError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("context", "choices", "gold"):
        if key not in obj:
            raise HeadlensError(f"{where}: missing key {key!r} (each line needs context, choices, gold)")
    unknown = set(obj) - KEYS
    if unknown:
        raise HeadlensError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(KEYS))}")
    context, choices, gold = obj["context"], obj["choices"], obj["gold"]
    if not isinstance(context, str) or not context.strip():
        raise HeadlensError(f"{where}: empty context (context must be a non-empty string)")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise HeadlensError(f"{where}: choices must be a list of strings")
    if len(choices) < 2:
        raise HeadlensError(f"{where}: fewer than two choices ({len(choices)}); a multiple-choice example needs >= 2")
    if any(not c for c in choices):
        raise HeadlensError(f"{where}: choice {[i for i, c in enumerate(choices) if not c][0]} is empty")
    if isinstance(gold, bool) or not isinstance(gold, int):
        raise HeadlensError(f"{where}: gold must be an integer index into choices, got {gold!r}")
    if not 0 <= gold < len(choices):
        raise HeadlensError(f"{where}: gold {gold} out of range for {len(choices)} choices (0..{len(choices) - 1})")
    split = obj.get("split", "test")
    if split not in SPLITS:
        raise HeadlensError(f"{where}: split {split!r} unknown; use one of {', '.join(SPLITS)}")
    group = obj.get("group")
    return split, Example(context=context, choices=tuple(choices), gold=gold,
                          group=None if group is None else str(group))


def parse_jsonl(path: str | Path) -> tuple[list[tuple[str, Example]], str]:
    """Validated (split, Example) pairs of every line, and the file's content hash."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadlensError(f"task file {path} does not exist")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _PARSED:
        return _PARSED[key]
    data = path.read_bytes()
    rows: list[tuple[str, Example]] = []
    for number, line in enumerate(decode_utf8(data, path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise HeadlensError(f"{where}: not valid JSON ({err.msg}); one JSON object per line") from None
        rows.append(_check_line(obj, where))
    if not rows:
        raise HeadlensError(f"task file {path} has no examples; write one JSON object per line")
    _PARSED[key] = (rows, hashlib.sha256(data).hexdigest())
    return _PARSED[key]


def split_examples(task, split: str) -> list[Example]:
    """The examples of ``split`` in file order (``doc_id`` = position within the split)."""
    from dataclasses import replace

    rows, _ = parse_jsonl(task.source["path"])
    delimiter = task.source.get("delimiter", "")
    chosen = [ex for s, ex in rows if s == split]
    return [replace(ex, doc_id=i, choices=tuple(delimiter + c for c in ex.choices)) for i, ex in enumerate(chosen)]
