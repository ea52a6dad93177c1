"""Where a task's documents come from: the hub (``datasets``), local files, or a generator.

Local files override the hub per task: with ``data_dir`` set, ``<data_dir>/<task>/<split>``
or ``<data_dir>/<split>`` with suffix ``.jsonl``, ``.json`` or ``.parquet`` is read directly
(columns as on the hub); when no such file exists, ``data_dir`` is used as a ``datasets``
cache folder. ``HF_DATASETS_OFFLINE=1`` is honoured by ``datasets`` itself. Loaded splits are
kept in memory for the process, so evaluating several shot counts reads them once.

Hub sources are loaded from data files (``revision`` + ``data_files``, see
:func:`hub_arguments`), never through a dataset loading script, which ``datasets`` >= 4
refuses. Every file is read as UTF-8; a Latin-1 or binary file is a one-line error.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from headlens.errors import HeadlensError
from headlens.tasks import byo
from headlens.tasks.processors import PROCESSORS, MissingColumn
from headlens.tasks.schema import PROMPT_VERSION, Example

SUFFIXES = (".jsonl", ".json", ".parquet")
_CACHE: dict[tuple, list[Example]] = {}


def find_local_file(task, split: str, data_dir: str | Path) -> Path | None:
    """The first of ``<data_dir>/<task>/<split>.*`` and ``<data_dir>/<split>.*`` that exists."""
    root = Path(data_dir).expanduser()
    for folder in (root / task.name, root):
        for suffix in SUFFIXES:
            path = folder / f"{split}{suffix}"
            if path.is_file():
                return path
    return None


def read_rows(path: Path) -> list[dict]:
    """Rows of a JSONL/JSON-lines or parquet file as plain dicts (lists, not arrays).

    A file that is not UTF-8 (Latin-1, binary) or not parquet is a one-line error naming it.
    """
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
            first = (str(err).splitlines() or [""])[0][:160]
            raise HeadlensError(f"{path}: not a readable parquet file ({type(err).__name__}: {first}); "
                                f"rewrite it, or give the split as <split>.jsonl") from None
    rows = []
    for number, line in enumerate(byo.read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HeadlensError(f"{path}:{number}: not valid JSON ({err.msg}); one JSON object per line") from None
        if not isinstance(row, dict):
            raise HeadlensError(f"{path}:{number}: expected a JSON object (one document per line), "
                                f"got {type(row).__name__}")
        rows.append(row)
    return rows


def hub_arguments(task, split: str, cache_dir: str | Path | None = None) -> tuple[tuple, dict]:
    """The ``datasets.load_dataset(*args, **kwargs)`` call that loads ``split`` of a hub source.

    ``source: {kind: hub, path, name, splits, revision, data_files}``. With ``data_files`` (a
    pattern with ``{split}``, filled with the hub's split name, or a mapping hub split ->
    pattern), the files are read directly at ``revision`` and no loading script is ever run,
    which is what ``datasets`` >= 4 requires: the study's tasks read the hub's parquet
    conversion (``revision: refs/convert/parquet``, files ``<config>/<split>/*.parquet``).
    ``name`` then only documents the config; without ``data_files`` it selects the config.
    """
    src = task.source
    hub_split = (src.get("splits") or {}).get(split, split)
    kwargs: dict = {"split": hub_split}
    if src.get("revision"):
        kwargs["revision"] = str(src["revision"])
    files = src.get("data_files")
    if files is None:
        args: tuple = (src["path"], src.get("name"))
    else:
        pattern = files.get(hub_split) if isinstance(files, dict) else str(files).replace("{split}", hub_split)
        if pattern is None:
            raise HeadlensError(f"task {task.name}: source.data_files has no entry for split {hub_split!r} "
                                f"(has {', '.join(map(str, files))})")
        args = (src["path"],)
        kwargs["data_files"] = {hub_split: pattern}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    return args, kwargs


def _hub_rows(task, split: str, cache_dir: str | Path | None) -> list[dict]:
    import datasets

    src = task.source
    args, kwargs = hub_arguments(task, split, cache_dir)
    try:
        ds = datasets.load_dataset(*args, **kwargs)
    except Exception as err:  # datasets raises many types: offline, missing split, no repo
        first = (str(err).splitlines() or [""])[0][:200]
        raise HeadlensError(
            f"task {task.name}: cannot load split {split!r} of {src['path']}"
            f"{'/' + src['name'] if src.get('name') else ''} ({type(err).__name__}: {first}); offline, put "
            f"the files at <data-dir>/{task.name}/{split}.jsonl|parquet and pass --data-dir") from None
    return list(ds)


def describe(source: dict) -> str:
    """A source in one line, as ``headlens tasks`` shows it: ``path/name@revision [data_files]``."""
    kind = source.get("kind")
    if kind == "python":
        return str(source.get("function", ""))
    text = str(source.get("path", ""))
    if kind == "hub":
        text += f"/{source['name']}" if source.get("name") else ""
        text += f"@{source['revision']}" if source.get("revision") else ""
        files = source.get("data_files")
        if files is not None:
            text += f" [{files if isinstance(files, str) else ', '.join(f'{k}: {v}' for k, v in files.items())}]"
    return text


def _python_examples(task, split: str, seed: int) -> list[Example]:
    src = task.source
    spec = str(src.get("function", ""))
    module_name, _, fn_name = spec.partition(":")
    if not module_name or not fn_name:
        raise HeadlensError(f"task {task.name}: source.function must be 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as err:
        raise HeadlensError(f"task {task.name}: cannot import {spec!r} ({err})") from None
    out = fn(split=split, seed=seed, **(src.get("args") or {}))
    examples = list(out)
    if not all(isinstance(e, Example) for e in examples):
        raise HeadlensError(f"task {task.name}: {spec} must return a list of headlens.tasks.Example")
    from dataclasses import replace

    # doc_id is the position in the generated split (demonstration exclusion relies on it)
    return [replace(e, doc_id=i) for i, e in enumerate(examples)]


def _process(task, rows: list[dict], where: str) -> list[Example]:
    from dataclasses import replace


    if rows and task.columns:
        missing = [c for c in task.columns if c not in rows[0]]
        if missing:
            raise HeadlensError(f"task {task.name}: {where} has no column {missing[0]!r} (needs "
                                f"{', '.join(task.columns)}; has {', '.join(rows[0])})")
    process = PROCESSORS[task.processor]
    examples: list[Example] = []
    for doc_id, doc in enumerate(rows):
        try:
            out = process(doc, task)
        except MissingColumn as err:
            raise HeadlensError(f"task {task.name}: document {doc_id} of {where} has no column "
                                f"{err.args[0]!r}") from None
        except (KeyError, ValueError, TypeError, IndexError) as err:
            if isinstance(err, HeadlensError):
                raise
            raise HeadlensError(f"task {task.name}: document {doc_id} of {where} is malformed "
                                f"({type(err).__name__}: {err})") from None
        for ex in ([] if out is None else out if isinstance(out, list) else [out]):
            examples.append(replace(ex, doc_id=doc_id))
    return examples


def _check_labels(task, examples: list[Example], split: str, where: str) -> None:
    bad = next((ex for ex in examples if len(ex.choices) < 2 or not 0 <= ex.gold < len(ex.choices)), None)
    if bad is None:
        return
    hint = (f"; unlabelled splits cannot be scored, use --split {task.eval_split}"
            if bad.gold < 0 and split != task.eval_split else "")
    raise HeadlensError(f"task {task.name}: document {bad.doc_id} of {where} has gold {bad.gold} for "
                        f"{len(bad.choices)} choices{hint}")


def load_examples(task, split: str, data_dir: str | Path | None, seed: int = 0) -> list[Example]:
    """Examples of one split (cached in memory per task source, split, data_dir and seed)."""
    key = (task.name, task.version, json.dumps(task.source, sort_keys=True, default=str), task.processor,
           json.dumps(task.template, sort_keys=True), split, str(data_dir), seed, _stamp(task, split, data_dir))
    if key in _CACHE:
        return _CACHE[key]
    kind = task.source["kind"]
    if kind == "python":
        examples, where = _python_examples(task, split, seed), task.source["function"]
    elif kind == "examples":
        examples, where = byo.split_examples(task, split), task.source["path"]
    else:
        local = find_local_file(task, split, data_dir) if data_dir is not None else None
        if kind == "files" and local is None:
            local = find_local_file(task, split, task.source["path"])
            if local is None:
                raise HeadlensError(f"task {task.name}: no file {task.source['path']}/{split}.jsonl|parquet "
                                    f"for split {split!r}")
        if local is not None:
            rows, where = read_rows(local), str(local)
        else:
            rows, where = _hub_rows(task, split, data_dir), f"{task.source['path']} {split}"
        examples = _process(task, rows, where)
    if not examples:
        raise HeadlensError(f"task {task.name}: split {split!r} ({where}) is empty; check the split name "
                            f"(train {task.train_split!r}, eval {task.eval_split!r}) or the file")
    _check_labels(task, examples, split, where)
    _CACHE[key] = examples
    return examples


# ----------------------------------------------------------------------------- content fingerprint


def data_file(task, split: str, data_dir: str | Path | None) -> Path | None:
    """The local file :func:`load_examples` reads for ``split`` (None: hub or generator)."""
    kind = task.source["kind"]
    if kind == "python":
        return None
    if kind == "examples":
        return Path(task.source["path"]).expanduser()
    local = find_local_file(task, split, data_dir) if data_dir is not None else None
    if local is None and kind == "files":
        local = find_local_file(task, split, task.source["path"])
    return local


def _stamp(task, split: str, data_dir) -> tuple | None:
    """(size, mtime) of the file behind a split, so an edited file is read again in-process."""
    try:
        path = data_file(task, split, data_dir)
        st = path.stat() if path is not None else None
    except (OSError, KeyError):
        return None
    return None if st is None else (str(path), st.st_size, st.st_mtime_ns)


# Task fields that do not change a prompt or a score (documentation, bookkeeping, and the
# default query limit, which enters keys resolved, as an option)
_NOT_CONTENT = ("origin", "description", "group", "importance_limit")


def data_fingerprint(task, splits, data_dir: str | Path | None = None) -> dict:
    """What a result computed on ``task``'s ``splits`` depends on, by content, never by path.

    Returns:
        ``{"task": name, "version": v, "prompt_version": the prompt format's
        :data:`~headlens.tasks.schema.PROMPT_VERSION`, "definition": hash of the task's definition
        (template, processor, separator, splits, metric, source minus any path),
        "data": {split: sha256 of the file's bytes | "hub:<path>/<name>" | "generated"}}``.
        A hub split read through ``datasets`` is identified by the source in ``definition``
        (hub id, config, revision); a generator by its function and arguments.
    """
    from dataclasses import fields

    from headlens.results.cache import digest, file_digest

    definition = {f.name: getattr(task, f.name) for f in fields(task) if f.name not in _NOT_CONTENT}
    source = dict(task.source)
    if source.get("kind") in ("files", "examples"):
        source.pop("path", None)
    definition["source"] = source
    data = {}
    for split in sorted(set(splits)):
        path = data_file(task, split, data_dir)
        if path is not None and path.is_file():
            data[split] = file_digest(path)
        elif source.get("kind") == "python":
            data[split] = "generated"
        elif source.get("kind") == "hub":
            data[split] = f"hub:{source.get('path')}/{source.get('name')}"
        else:
            data[split] = "missing"
    return {"task": task.name, "version": task.version, "prompt_version": PROMPT_VERSION,
            "definition": digest(definition), "data": data}
