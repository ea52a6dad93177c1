"""Tasks as data: YAML (or TOML) entries mapped onto the frozen :class:`Task` dataclass.

The built-in registry is every ``*.yaml`` file in this folder (``study.yaml``: the study's 14
tasks; ``offline.yaml``: synthetic tasks, when present). Each file has a ``group`` and a
``tasks`` list. A user's own task is a path: ``get_task("my.yaml")`` (same form, one or more
entries) or ``get_task("my.jsonl")`` (plain examples, see :mod:`headlens.tasks.byo`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from headlens.errors import HeadlensError, closest
from headlens.tasks import byo, sources
from headlens.tasks.processors import PROCESSORS
from headlens.tasks.schema import PROMPT_VERSION, Example

Metric = Literal["acc", "record_em", "multirc"]
METRICS: tuple[str, ...] = get_args(Metric)
SOURCE_KINDS = ("hub", "files", "python", "examples")
# the keys each source kind reads (anything else is a typo, reported with this list)
SOURCE_KEYS = {"hub": ("kind", "path", "name", "revision", "data_files", "splits"),
               "files": ("kind", "path"), "python": ("kind", "function", "args"),
               "examples": ("kind", "path", "delimiter")}
# the keys the ``template`` processor reads (headlens.tasks.processors.template)
TEMPLATE_KEYS = ("context", "choices", "choices_field", "choice_format", "gold", "gold_index_in",
                 "gold_map", "target")
SPLIT_KEYS = ("train", "eval", "importance")
GROUP_ALIASES = {"all": "study"}
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, eq=False)
class Task:
    """One few-shot task, declared as data.

    Attributes:
        name: registry name (``hellaswag``) or the file stem for a user's file.
        version: template version; part of every cache key, so a changed template makes
            cached results stale.
        metric: ``acc`` (argmax = gold), ``record_em`` (argmax in ``gold_set``) or ``multirc``
            (a question is right only when all its answers are).
        source: where documents come from: ``{kind: hub, path, name, revision, data_files,
            splits}`` (read from data files, see :func:`headlens.tasks.sources.hub_arguments`),
            ``{kind: files, path}``, ``{kind: python, function: "module:fn", args}``.
        train_split: demonstrations are drawn from this split.
        eval_split: accuracy is measured here (test when labelled, else validation).
        importance_split: importance is measured here (train), on the first
            ``importance_limit`` documents in dataset order.
        processor: name of the document processor (``template`` by default).
        template: the template entry for the ``template`` processor.
        columns: columns every document must have (checked with a clear error).
        separator: text between demonstrations and before the query (a blank line).
        group: registry group (``study``, ``offline``) or ``file``.
        origin: the file this entry came from.
        description: free text (documentation only; never part of a prompt).
        demo_gold: when set, demonstrations come only from train examples whose gold index
            is this (WSC: 1, the positive examples, as lm-evaluation-harness v0.3 following
            the GPT-3 paper's format).
    """

    name: str
    version: int
    metric: Metric
    source: dict
    train_split: str = "train"
    eval_split: str = "validation"
    importance_split: str = "train"
    importance_limit: int = 2500
    processor: str = "template"
    template: dict = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    separator: str = "\n\n"
    group: str = ""
    origin: str = ""
    description: str = ""
    demo_gold: int | None = None

    def __post_init__(self) -> None:
        where = f"task {self.name!r} ({self.origin or 'in memory'})"
        if not isinstance(self.version, int):
            raise HeadlensError(f"{where}: version must be an integer, got {self.version!r}")
        if self.metric not in METRICS:
            raise HeadlensError(f"{where}: metric {self.metric!r} unknown; {closest(str(self.metric), METRICS)}")
        kind = self.source.get("kind") if isinstance(self.source, dict) else None
        if kind not in SOURCE_KINDS:
            raise HeadlensError(f"{where}: source.kind {kind!r} unknown; {closest(str(kind), SOURCE_KINDS)}")
        unknown = sorted(set(self.source) - set(SOURCE_KEYS[kind]))
        if unknown:
            raise HeadlensError(f"{where}: unknown keys {unknown} under source (kind {kind}); allowed: "
                                f"{', '.join(SOURCE_KEYS[kind])}")
        if kind == "hub":
            files = self.source.get("data_files")
            if not self.source.get("path"):
                raise HeadlensError(f"{where}: source needs a path (the hub id, e.g. aps/super_glue)")
            if files is not None and not (isinstance(files, dict) or "{split}" in str(files)):
                raise HeadlensError(f"{where}: source.data_files must contain '{{split}}' (e.g. "
                                    f"'cb/{{split}}/*.parquet') or map each split to its files, got {files!r}")
        if not isinstance(self.template, dict):
            raise HeadlensError(f"{where}: template must be a mapping of {', '.join(TEMPLATE_KEYS)}, "
                                f"got {self.template!r:.80}")
        unknown = sorted(set(self.template) - set(TEMPLATE_KEYS))
        if unknown:
            raise HeadlensError(f"{where}: unknown keys {unknown} under template; allowed: {', '.join(TEMPLATE_KEYS)}")
        if self.template and self.processor != "template":
            raise HeadlensError(f"{where}: a template is read only by processor 'template', this task uses "
                                f"processor {self.processor!r}; remove the template or the processor")
        if self.demo_gold is not None and (isinstance(self.demo_gold, bool) or not isinstance(self.demo_gold, int)):
            raise HeadlensError(f"{where}: demo_gold must be a choice index (an integer), got {self.demo_gold!r}")
        if self.processor not in PROCESSORS:
            raise HeadlensError(f"{where}: processor {self.processor!r} unknown; {closest(self.processor, PROCESSORS)}")
        if self.processor == "template" and kind in ("hub", "files"):
            missing = [k for k in ("context", "gold") if k not in self.template]
            if "choices" not in self.template and "choices_field" not in self.template:
                missing.append("choices (or choices_field)")
            if missing:
                raise HeadlensError(f"{where}: template needs {', '.join(missing)}")

    @property
    def key(self) -> dict:
        """What identifies this task's data and prompts in a cache key (the prompt format's
        version :data:`~headlens.tasks.schema.PROMPT_VERSION` included)."""
        return {"task": self.name, "task_version": self.version, "prompt_version": PROMPT_VERSION,
                "task_source": json.dumps(self.source, sort_keys=True, default=str)}

    def examples(self, split: str, data_dir: str | Path | None = None, *, seed: int = 0) -> list[Example]:
        """Every example of ``split`` in dataset order (``doc_id`` = document position).

        Args:
            split: ``train``, ``validation``, ``test`` (or any split the source has).
            data_dir: folder with local files (``<data_dir>/<task>/<split>.jsonl|parquet``, or
                ``<data_dir>/<split>.jsonl|parquet``) or a local ``datasets`` cache.
            seed: passed to ``python`` sources (generators); ignored by data sets.
        """
        return sources.load_examples(self, split, data_dir, seed)

    def importance_examples(self, data_dir: str | Path | None = None, *, seed: int = 0) -> list[Example]:
        """The first ``importance_limit`` examples of ``importance_split`` (dataset order)."""
        return self.examples(self.importance_split, data_dir, seed=seed)[: self.importance_limit]


def _mapping_copy(value):
    # a copy of a mapping (entries are not aliased); anything else goes to Task's own check
    return {} if value is None else dict(value) if isinstance(value, dict) else value


def task_from_entry(entry: dict, *, group: str = "", origin: str = "") -> Task:
    """Map one YAML/TOML entry onto :class:`Task` (unknown keys are an error, not ignored)."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise HeadlensError(f"{origin}: every task entry must be a mapping with a name, got {entry!r:.80}")
    entry = dict(entry)
    name = str(entry.pop("name"))
    splits = entry.pop("splits", {}) or {}
    if not isinstance(splits, dict):
        raise HeadlensError(f"{origin}: task {name!r}: splits must be a mapping of {', '.join(SPLIT_KEYS)}, "
                            f"got {splits!r:.80}")
    unknown = sorted(set(splits) - set(SPLIT_KEYS))
    if unknown:
        raise HeadlensError(f"{origin}: task {name!r} has unknown keys {unknown} under splits; allowed: "
                            f"{', '.join(SPLIT_KEYS)}")
    allowed = {f.name for f in fields(Task)} - {"name", "train_split", "eval_split", "importance_split", "group", "origin"}
    unknown = set(entry) - allowed
    if unknown:
        raise HeadlensError(f"{origin}: task {name!r} has unknown keys {sorted(unknown)}; allowed: "
                            f"name, splits, {', '.join(sorted(allowed))}")
    for key in ("version", "metric", "source"):
        if key not in entry:
            raise HeadlensError(f"{origin}: task {name!r} needs a {key!r} entry")
    if not isinstance(entry["source"], dict):
        raise HeadlensError(f"{origin}: task {name!r}: source must be a mapping with a kind "
                            f"({', '.join(SOURCE_KINDS)}), got {entry['source']!r:.80}")
    source = dict(entry.pop("source"))
    if source.get("kind") in ("files", "examples") and origin and "path" in source:
        path = Path(str(source["path"])).expanduser()
        source["path"] = str(path if path.is_absolute() else (Path(origin).parent / path).resolve())
    train = splits.get("train", "train")
    return Task(name=name, source=source, train_split=train,
                eval_split=splits.get("eval", "validation"),
                importance_split=splits.get("importance", train),
                columns=tuple(entry.pop("columns", ()) or ()), template=_mapping_copy(entry.pop("template", None)),
                group=group, origin=origin, **entry)


def _read_mapping(path: Path) -> Any:
    text = byo.read_utf8(path)
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise HeadlensError(f"{path}: TOML task files need Python >= 3.11 or `pip install tomli`; "
                                    f"or write the task as YAML") from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as err:  # parse errors of either library
        raise HeadlensError(f"{path}: not valid {path.suffix[1:].upper()}: {str(err).splitlines()[0]}") from None


def tasks_from_file(path: str | Path, *, group: str | None = None) -> list[Task]:
    """Every task declared in a YAML/TOML file: ``{group, tasks: [...]}`` or one bare entry."""
    path = Path(path).expanduser()
    data = _read_mapping(path)
    if isinstance(data, dict) and "tasks" in data:
        entries, group = data["tasks"], group or data.get("group") or "file"
    elif isinstance(data, dict) and "name" in data:
        entries, group = [data], group or "file"
    else:
        raise HeadlensError(f"{path}: expected a task entry (name, version, metric, source, ...) "
                            f"or a mapping with a 'tasks' list")
    if not isinstance(entries, list) or not entries:
        raise HeadlensError(f"{path}: 'tasks' must be a non-empty list of task entries")
    return [task_from_entry(e, group=group, origin=str(path)) for e in entries]


@functools.lru_cache(maxsize=1)
def _builtin() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for file in sorted(HERE.glob("*.yaml")):
        for task in tasks_from_file(file):
            if task.name in tasks:
                raise HeadlensError(f"{file}: task {task.name!r} is also defined in {tasks[task.name].origin}")
            tasks[task.name] = task
    return tasks


def task_names(group: str | None = None) -> list[str]:
    """Registered task names, in file order; ``group``: ``study`` (alias ``all``), ``offline``."""
    tasks = _builtin()
    if group is None:
        return list(tasks)
    group = GROUP_ALIASES.get(group, group)
    groups = sorted({t.group for t in tasks.values()} | {"study", "offline"})
    if group not in groups:
        raise HeadlensError(f"task_names: unknown group {group!r}; {closest(group, groups)}")
    return [n for n, t in tasks.items() if t.group == group]


def jsonl_task(path: str | Path, *, separator: str = "\n\n", delimiter: str = ""):
    """A :class:`~headlens.tasks.Task` from a JSONL examples file (validated now, fully).

    Args:
        path: the ``.jsonl`` file.
        separator: between demonstrations, and between them and the query.
        delimiter: prepended to every choice (e.g. ``" "`` when the file's choices have no
            leading space but the context ends without one).
    """
    path = Path(path).expanduser()
    rows, digest = byo.parse_jsonl(path)
    splits = {s for s, _ in rows}
    train = "train" if "train" in splits else "test"
    evaluate = "test" if "test" in splits else "validation" if "validation" in splits else "train"
    # the content hash is the version: editing the file makes cached results stale
    return Task(name=path.stem, version=int(digest[:8], 16), metric="acc",
                source={"kind": "examples", "path": str(path.resolve()), "delimiter": delimiter},
                train_split=train, eval_split=evaluate, importance_split=train,
                separator=separator, group="file", origin=str(path))


def load_task_file(path: str | Path, **options) -> Task:
    """A task from a local file: ``.jsonl`` examples (options: separator, delimiter) or a
    ``.yaml``/``.yml``/``.toml`` task definition (exactly one entry)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadlensError(f"task file {path} does not exist")
    if path.suffix == ".jsonl":
        return jsonl_task(path, **options)
    if path.suffix in (".yaml", ".yml", ".toml"):
        tasks = tasks_from_file(path)
        if len(tasks) != 1:
            raise HeadlensError(f"{path}: declares {len(tasks)} tasks ({', '.join(t.name for t in tasks)}); "
                                f"give a file with exactly one")
        task = tasks[0]
        if options:
            from dataclasses import replace

            task = replace(task, **options)
        return task
    raise HeadlensError(f"task file {path}: unknown type {path.suffix!r}; use .jsonl, .yaml or .toml")


def get_task(name_or_path: str | Path | Task, **options) -> Task:
    """A registered task by name, or a task from a ``.jsonl``/``.yaml``/``.toml`` file path.

    ``options`` (``separator``, and ``delimiter`` for JSONL files) override file defaults.
    """
    if isinstance(name_or_path, Task):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".jsonl", ".yaml", ".yml", ".toml")) or isinstance(name_or_path, Path):
        return load_task_file(text, **options)
    tasks = _builtin()
    if text not in tasks:
        raise HeadlensError(f"unknown task {text!r}; {closest(text, tasks)} (or a path to a .jsonl/.yaml task file)")
    task = tasks[text]
    if options:
        from dataclasses import replace

        task = replace(task, **options)
    return task


GROUPS = ("all", "study", "offline")


def expand_tasks(spec: str | list[str] | tuple[str, ...], *, option: str = "tasks") -> list[str]:
    """A task selection -> task names/paths: a comma list (or list) of names, task files and
    groups (``all``/``study``: the 14 study tasks, ``offline``: the synthetic suite)."""
    parts = spec.split(",") if isinstance(spec, str) else [str(p) for p in spec]
    out: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if part in GROUPS:
            group = task_names(part)
            if not group:
                raise HeadlensError(f"{option} {part}: no tasks in group {part!r} "
                                    f"(headlens/tasks/{GROUP_ALIASES.get(part, part)}.yaml is not installed)")
            out.extend(group)
        else:
            out.append(part)
    if not out:
        raise HeadlensError(f"{option} is empty ({spec!r}); give a task name, a comma list, 'all', "
                            f"'offline', or a task file")
    return out
