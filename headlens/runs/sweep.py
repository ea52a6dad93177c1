"""Sweeps: models x tasks x shots x analyses from one YAML file, as resumable cached jobs.

A sweep file declares models (with the resources a cluster should reserve for them),
tasks, shot counts, seeds and analyses. :func:`load_sweep` validates it into frozen
dataclasses, :func:`expand` turns it into :class:`Job` records whose ``entry`` is the
job's :class:`~headlens.results.cache.CacheKey`, built by the analysis's own key function
(``importance_key``, ``curve_key``, ``induction_key``, ``distances_key``): the same entry the
CLI, the demo and notebooks read and write, so a sweep's result is a hit for them and the
other way round. :func:`run_job` computes one job in any process. A job whose entry is in
the cache (and valid) is skipped, so a killed sweep resumes where it stopped: entries are
written atomically and only after the job finished.

Executing a whole sweep (local process pool or Ray, retries, live table):
:func:`headlens.sweep_exec.run_sweep`.

Keys of a sweep file (unknown keys are an error that names the closest valid one):
    ``name``; ``models`` (each a string, or ``{name, num_gpus, num_cpus, memory, dtype,
    device, revision, label}``); ``tasks`` (registered names, groups ``study``/``all``/
    ``offline``, or task files); ``shots``; ``seeds`` (demonstration draws); ``limit``
    (importance queries per task); ``data_dir``; ``output``; ``cache``; ``retries`` (default
    1); ``dtype``/``device`` (defaults for every model); ``analyses``, a mapping (or list) of:
    ``importance: {variants, batch_size}``, ``pruning: {what, variant, ffn_ranking, limit,
    random_draws, batch_size}`` (``limit``: evaluation queries; ``random_draws``: random
    subsets per point when C(n, k) > 2,000, old name ``random_seeds``; ``ffn_ranking``: the
    FFN curves, ``oracle`` and/or ``gradient``), ``induction: {scores, copying, seeds}``
    (``seeds``: how many token sequences), ``layer_distances: {n_texts, text_file, dataset,
    seed, batch_size, max_len}``.

Example sweep file::

    name: study
    models:
      - name: facebook/opt-1.3b
        num_gpus: 1
        memory: 16GB
    tasks: [study]            # group names, registered task names, or task files
    shots: [0, 1, 5]
    seeds: [0]
    limit: 2500               # importance queries per task (default: the task's own)
    output: results/study
    analyses:
      importance: {variants: [bansal]}
      pruning: {what: [heads, ffn], random_draws: 50}   # FFNs: oracle and gradient curves
"""

from __future__ import annotations

import gc
import os
import re
import shlex
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from headlens.analyses.importance import VARIANTS as IMPORTANCE_VARIANTS
from headlens.analyses.induction import COPYING_VARIANTS
from headlens.analyses.induction import SCORES as INDUCTION_SCORES
from headlens.analyses.pruning import RANDOM_DRAWS
from headlens.analyses.pruning import WHAT as PRUNE_WHAT
from headlens.errors import HeadlensError, closest
from headlens.results.cache import CacheKey, ModelKey
from headlens.tasks.registry import GROUPS

ANALYSES: tuple[str, ...] = ("importance", "pruning", "induction", "layer_distances")
# How a sweep ranks FFN blocks for their pruning curves: ``oracle`` (the study's: accuracy drop
# when one FFN alone is removed, on the importance queries; equal drops by the gradient
# ranking) and ``gradient`` (the gradient-gate FFN importance). CLI: ``--ranking oracle|self``.
FfnRanking = Literal["oracle", "gradient"]
FFN_RANKINGS: tuple[str, ...] = get_args(FfnRanking)
TASK_GROUPS: tuple[str, ...] = GROUPS
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "fp32", "fp16", "bf16")
_TASK_FILE_SUFFIXES = (".jsonl", ".yaml", ".yml", ".toml")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


# ----------------------------------------------------------------------------- spec


def _fail(where: str, message: str) -> HeadlensError:
    return HeadlensError(f"{where}: {message}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(value: Any, where: str, *, minimum: int = 0) -> tuple[int, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(_is_int(x) and x >= minimum for x in items):
        raise _fail(where, f"must be an integer >= {minimum} or a non-empty list of them, got {value!r}")
    return tuple(dict.fromkeys(items))


def _str_tuple(value: Any, where: str, options: tuple[str, ...]) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise _fail(where, f"must not be empty; available: {', '.join(options)}")
    for x in items:
        if x not in options:
            raise _fail(where, f"unknown value {x!r}; {closest(str(x), options)}")
    return tuple(dict.fromkeys(items))


def _opt_int(value: Any, where: str, *, minimum: int = 1) -> int | None:
    if value is not None and not (_is_int(value) and value >= minimum):
        raise _fail(where, f"must be an integer >= {minimum} or null, got {value!r}")
    return value


def parse_memory(value: Any, where: str = "memory") -> int | None:
    """``16GB`` (10^9), ``16GiB`` (2^30), ``512MB`` or a byte count -> bytes (None stays None)."""
    if value is None:
        return None
    if _is_int(value) and value > 0:
        return value
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS or float(m.group(1)) <= 0:
        raise _fail(where, f"memory {value!r} is not a size; write e.g. 16GB, 16GiB, 512MB or a byte count")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _check_keys(raw: Any, where: str, allowed: tuple[str, ...] | list[str]) -> dict:
    if not isinstance(raw, dict):
        raise _fail(where, f"must be a mapping with keys among {', '.join(allowed)}, got {raw!r:.80}")
    for key in raw:
        if key not in allowed:
            raise _fail(where, f"unknown key {key!r}; {closest(str(key), allowed)}")
    return dict(raw)


@dataclass(frozen=True)
class ModelSpec:
    """One model of a sweep and what a cluster must reserve to run one of its jobs.

    Attributes:
        name: shipped model name, local checkpoint folder (made absolute) or hub id.
        num_gpus, num_cpus: Ray resources per job (fractions allowed).
        memory: Ray memory reservation in bytes (``None``: none declared).
        dtype, device, revision: passed to :func:`headlens.loading.load_model`.
        label: folder name for this model's outputs (default from ``name``).
    """

    name: str
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    memory: int | None = None
    dtype: str = "float32"
    device: str | None = None
    revision: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise HeadlensError(f"model name must be a non-empty string, got {self.name!r}")
        for attr, lo in (("num_gpus", 0.0), ("num_cpus", 0.0)):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo:
                raise HeadlensError(f"model {self.name}: {attr} must be a number >= {lo:g}, got {v!r}")
        if self.dtype not in DTYPES:
            raise HeadlensError(f"model {self.name}: dtype {self.dtype!r} unknown; {closest(str(self.dtype), DTYPES)}")
        if not self.label:
            base = Path(self.name).name if os.path.isabs(self.name) else self.name
            object.__setattr__(self, "label", re.sub(r"[^A-Za-z0-9._-]+", "__", base))

    def resources(self) -> dict[str, Any]:
        """Ray ``.options(...)`` for one job of this model."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            opts["memory"] = self.memory
        return opts


@dataclass(frozen=True)
class ImportanceSpec:
    """Head/FFN importance by gradient gates (see :mod:`headlens.analyses.importance`)."""

    variants: tuple[str, ...] = ("bansal",)
    batch_size: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", _str_tuple(self.variants, "importance.variants", IMPORTANCE_VARIANTS))
        _opt_int(self.batch_size, "importance.batch_size")


@dataclass(frozen=True)
class PruningSpec:
    """Accuracy vs % of heads/FFNs removed by the task's own ranking, against random removal.

    Attributes:
        what: ``heads`` and/or ``ffn``.
        variant: the gradient importance variant (head ranking, FFN gradient ranking, and
            the FFN oracle's tie-break).
        ffn_ranking: one FFN curve per entry, in this order: ``oracle`` (removal oracle, the
            study's ranking, default first) and/or ``gradient``.
        limit: evaluation queries per point (None: the whole evaluation split).
        random_draws: random subsets per point when C(n, k) > 2,000 (else every subset);
            the sweep file's old name ``random_seeds`` means the same.
        batch_size: evaluation batch size.
    """

    what: tuple[str, ...] = ("heads",)
    variant: str = "bansal"
    ffn_ranking: tuple[str, ...] = FFN_RANKINGS
    limit: int | None = None
    random_draws: int = RANDOM_DRAWS
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "what", _str_tuple(self.what, "pruning.what", PRUNE_WHAT))
        object.__setattr__(self, "ffn_ranking", _str_tuple(self.ffn_ranking, "pruning.ffn_ranking", FFN_RANKINGS))
        _str_tuple(self.variant, "pruning.variant", IMPORTANCE_VARIANTS)
        _opt_int(self.limit, "pruning.limit")
        if not (_is_int(self.random_draws) and self.random_draws >= 1):
            raise _fail("pruning.random_draws", f"must be an integer >= 1 (random subsets per point), "
                                                f"got {self.random_draws!r}; the default is {RANDOM_DRAWS}")
        _opt_int(self.batch_size, "pruning.batch_size")

    def curves(self) -> list[tuple[str, str]]:
        """(what, ranking) of every curve: heads by ``gradient``, FFNs by each ``ffn_ranking``."""
        return [(w, r) for w in self.what for r in (("gradient",) if w == "heads" else self.ffn_ranking)]


@dataclass(frozen=True)
class InductionSpec:
    """Prefix-matching and copying scores (see :mod:`headlens.analyses.induction`)."""

    scores: tuple[str, ...] = ("prefix_matching", "copying")
    copying: tuple[str, ...] = ("corrected",)
    seeds: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", _str_tuple(self.scores, "induction.scores", INDUCTION_SCORES))
        object.__setattr__(self, "copying", _str_tuple(self.copying, "induction.copying", COPYING_VARIANTS))
        _opt_int(self.seeds, "induction.seeds")


@dataclass(frozen=True)
class LayerDistancesSpec:
    """Angular distances between residual streams (see :func:`headlens.layers.layer_distances`)."""

    n_texts: int = 64
    text_file: str | None = None
    dataset: str | None = None
    seed: int = 0
    batch_size: int = 8
    max_len: int | None = None

    def __post_init__(self) -> None:
        _opt_int(self.n_texts, "layer_distances.n_texts")
        _opt_int(self.seed, "layer_distances.seed", minimum=0)
        _opt_int(self.batch_size, "layer_distances.batch_size")
        _opt_int(self.max_len, "layer_distances.max_len")
        if self.text_file is not None and self.dataset is not None:
            raise HeadlensError("layer_distances: give text_file or dataset, not both")
        if self.text_file is not None and not Path(self.text_file).is_file():
            raise HeadlensError(f"layer_distances.text_file {self.text_file} does not exist")


_ANALYSIS_SPECS = {"importance": ImportanceSpec, "pruning": PruningSpec, "induction": InductionSpec,
                   "layer_distances": LayerDistancesSpec}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file: what to compute for which models, tasks, shots and seeds.

    Attributes:
        tasks: registered task names or absolute task-file paths, groups already expanded.
        limit: importance queries per task (``None``: each task's ``importance_limit``).
        data_dir: local task data (``<data_dir>/<task>/<split>.jsonl``), absolute.
        output: folder for saved scores, curves and the summary, absolute.
        cache: result-cache root (``None``: ``$HEADLENS_CACHE`` or ``~/.cache/headlens``).
        retries: how often a failed job is tried again before it is recorded as failed.
    """

    name: str
    models: tuple[ModelSpec, ...]
    tasks: tuple[str, ...] = ()
    shots: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    limit: int | None = None
    data_dir: str | None = None
    output: str = "sweep-results"
    cache: str | None = None
    retries: int = 1
    importance: ImportanceSpec | None = None
    pruning: PruningSpec | None = None
    induction: InductionSpec | None = None
    layer_distances: LayerDistancesSpec | None = None

    def __post_init__(self) -> None:
        where = f"sweep {self.name!r}"
        if not self.models:
            raise _fail(where, "models must list at least one model")
        labels = [m.label for m in self.models]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise _fail(where, f"models {dup} write to the same output folder; give each a distinct 'label'")
        if not any(getattr(self, a) is not None for a in ANALYSES):
            raise _fail(where, f"analyses is empty; add at least one of {', '.join(ANALYSES)}")
        if (self.importance or self.pruning) and not self.tasks:
            raise _fail(where, "importance and pruning need tasks; add a 'tasks' list")
        if not _is_int(self.retries) or self.retries < 0:
            raise _fail(where, f"retries must be an integer >= 0, got {self.retries!r}")

    @property
    def analyses(self) -> tuple[str, ...]:
        return tuple(a for a in ANALYSES if getattr(self, a) is not None)


def _abs(path: Any, base: Path) -> str:
    p = Path(str(path)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _model_spec(raw: Any, where: str, defaults: dict, base: Path) -> ModelSpec:
    allowed = [f.name for f in fields(ModelSpec)]
    entry = {"name": raw} if isinstance(raw, str) else _check_keys(raw, where, allowed)
    if "name" not in entry:
        raise _fail(where, "every model entry needs a 'name' (hub id, local folder or shipped model)")
    entry = {**defaults, **entry}
    name = str(entry["name"])
    local = Path(name).expanduser()
    if name.startswith((".", "/", "~")) or (not local.is_absolute() and (base / local).is_dir()):
        entry["name"] = _abs(name, base)
    entry["memory"] = parse_memory(entry.get("memory"), f"{where}.memory")
    try:
        spec = ModelSpec(**entry)
    except HeadlensError as err:
        raise _fail(where, str(err)) from None
    from headlens.model.loading import resolve

    resolve(spec.name)  # a missing folder or a misspelt shipped model fails here, before any job
    return spec


def _resolve_tasks(raw: Any, where: str, base: Path) -> tuple[str, ...]:
    from headlens.tasks import get_task, task_names

    items = raw if isinstance(raw, (list, tuple)) else [raw]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise _fail(where, f"each task must be a name, a group ({', '.join(TASK_GROUPS)}) or a task file, got {item!r}")
        if item in TASK_GROUPS:
            names = task_names(item)
            if not names:
                raise _fail(where, f"task group {item!r} has no tasks in this headlens version")
            out.extend(names)
        elif item.endswith(_TASK_FILE_SUFFIXES):
            path = _abs(item, base)
            get_task(path)  # parse errors and missing files fail here, with the file named
            out.append(path)
        else:
            get_task(item)  # unknown names fail with "did you mean"
            out.append(item)
    return tuple(dict.fromkeys(out))


TOP_KEYS: tuple[str, ...] = ("name", "models", "tasks", "shots", "seeds", "limit", "data_dir", "output",
                             "cache", "retries", "analyses", "dtype", "device")


def parse_sweep(data: Any, *, origin: str = "<sweep>", base: str | os.PathLike | None = None) -> SweepSpec:
    """Validate a sweep mapping (a parsed YAML file) into a :class:`SweepSpec`.

    Relative paths (local models, task files, data_dir, output, cache, text_file) are taken
    relative to ``base`` (default: the current folder) and stored absolute, so workers in
    other folders or processes see the same files.
    """
    base = Path(base) if base is not None else Path.cwd()
    raw = _check_keys(data, origin, TOP_KEYS)
    if "models" not in raw:
        raise _fail(origin, "a sweep file needs 'models' (a list of hub ids, folders or shipped names)")
    defaults = {k: raw[k] for k in ("dtype", "device") if raw.get(k) is not None}
    models_raw = raw["models"] if isinstance(raw["models"], list) else [raw["models"]]
    models = tuple(_model_spec(m, f"{origin}: models[{i}]", defaults, base) for i, m in enumerate(models_raw))
    analyses_raw = raw.get("analyses")
    if analyses_raw is None:
        raise _fail(origin, f"a sweep file needs 'analyses' (any of {', '.join(ANALYSES)})")
    if isinstance(analyses_raw, (list, tuple)):
        analyses_raw = {a: None for a in analyses_raw}
    analyses_raw = _check_keys(analyses_raw, f"{origin}: analyses", ANALYSES)
    analyses: dict[str, Any] = {}
    for name, opts in analyses_raw.items():
        cls = _ANALYSIS_SPECS[name]
        allowed = [f.name for f in fields(cls)] + (["random_seeds"] if name == "pruning" else [])
        opts = {} if opts in (None, True) else _check_keys(opts, f"{origin}: analyses.{name}", allowed)
        if "random_seeds" in opts:  # the old name of random_draws, same meaning
            if "random_draws" in opts:
                raise _fail(origin, "analyses.pruning: give random_draws or its old name random_seeds, not both")
            opts["random_draws"] = opts.pop("random_seeds")
        if name == "layer_distances" and opts.get("text_file"):
            opts["text_file"] = _abs(opts["text_file"], base)
        if name == "pruning" and "variant" not in opts and "importance" in analyses_raw:
            imp = analyses_raw["importance"] or {}
            first = imp.get("variants", ["bansal"]) if isinstance(imp, dict) else ["bansal"]
            opts["variant"] = first[0] if isinstance(first, list) and first else first
        try:
            analyses[name] = cls(**opts)
        except HeadlensError as err:
            raise _fail(origin, str(err)) from None
        except TypeError as err:
            raise _fail(origin, f"analyses.{name}: {err}") from None
    kw: dict[str, Any] = {"name": str(raw.get("name") or Path(origin).stem), "models": models, **analyses}
    if "tasks" in raw and raw["tasks"] is not None:
        kw["tasks"] = _resolve_tasks(raw["tasks"], f"{origin}: tasks", base)
    if "shots" in raw:
        kw["shots"] = _int_tuple(raw["shots"], f"{origin}: shots")
    if "seeds" in raw:
        kw["seeds"] = _int_tuple(raw["seeds"], f"{origin}: seeds")
    kw["limit"] = _opt_int(raw.get("limit"), f"{origin}: limit")
    for key in ("data_dir", "cache"):
        if raw.get(key) is not None:
            kw[key] = _abs(raw[key], base)
    if kw.get("data_dir") and not Path(kw["data_dir"]).is_dir():
        raise _fail(origin, f"data_dir {kw['data_dir']} is not a folder")
    kw["output"] = _abs(raw.get("output") or f"sweep-results/{kw['name']}", base)
    if "retries" in raw:
        kw["retries"] = raw["retries"]
    try:
        return SweepSpec(**kw)
    except HeadlensError as err:
        raise _fail(origin, str(err).split(": ", 1)[-1]) from None


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a YAML sweep file (relative paths: relative to the current folder)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise HeadlensError(f"sweep file {path} does not exist; see data/sweeps/ for examples")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise HeadlensError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_sweep(data, origin=str(path))


# ----------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One unit of a sweep: one analysis of one model (and task, shot count, variant, seed).

    ``entry`` is the cache key of the job's result, built by the analysis's own key function
    (so it is the entry the CLI and the library use); ``key`` is its digest, ``kind`` its
    folder. A job whose valid entry exists is skipped. ``settings`` is the analysis's options
    dataclass (:class:`~headlens.analyses.importance.ImportanceOptions`, ...) the job runs with.
    """

    analysis: str
    model: ModelSpec
    entry: CacheKey
    task: str | None = None
    task_name: str | None = None
    shots: int | None = None
    seed: int = 0
    variant: str | None = None
    limit: int | None = None
    data_dir: str | None = None
    output: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    settings: Any = None
    depends: tuple[str, ...] = ()
    version: str = ""
    cache: str | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return self.entry.digest

    @property
    def kind(self) -> str:
        return self.entry.kind

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    @property
    def label(self) -> str:
        parts = [self.analysis, self.model.label]
        if self.task_name is not None:
            parts += [self.task_name, f"{self.shots}-shot"]
        if self.analysis == "induction":
            parts.append(str(self.option("score")))
        if self.variant:
            parts.append(self.variant)
        if self.analysis == "pruning":
            parts.append(str(self.option("what")))
            if self.option("what") == "ffn":
                parts.append(str(self.option("ranking")))
        if self.analysis in ("importance", "pruning"):
            parts.append(f"seed {self.seed}")
        return " ".join(parts)

    @property
    def command(self) -> str:
        """The ``headlens ...`` command that computes the same result on its own."""
        return reproduce_command(self)


def model_identity(spec: ModelSpec):
    """The :class:`headlens.loading.ModelInfo` ``load_model`` will attach, without loading."""
    from headlens.model.loading import identify

    return identify(spec.name, revision=spec.revision)


def model_key(spec: ModelSpec) -> ModelKey:
    """The :class:`~headlens.results.cache.ModelKey` of ``spec``'s model, without loading it
    (its (n_layers, n_heads) read from config.json when it is a local folder)."""
    from headlens.model.fingerprint import config_shape, dtype_name
    from headlens.model.loading import resolve

    info = model_identity(spec)
    target, source = resolve(spec.name)
    return ModelKey(fingerprint=info.fingerprint, dtype=dtype_name(spec.dtype), name=info.name,
                    shape=config_shape(target) if source != "hub" else None)


def expand(spec: SweepSpec) -> list[Job]:
    """All jobs of a sweep, model by model (model-level analyses first, then task x shots x seed).

    Every job's ``entry`` comes from the analysis's key function, exactly as the library
    computes it. Pruning jobs depend on the importance job of the same task, shots, seed and
    variant when the sweep has one; the runner schedules them after it (the ranking is then
    a cache hit), and their curve is keyed on that importance entry. An FFN curve by the
    removal oracle is keyed on the oracle's entry (:func:`~headlens.analyses.pruning.ffn_oracle_key`
    on the importance queries) and that importance entry (its tie-break), as
    ``headlens prune --what ffn --ranking oracle`` keys it.
    """
    from headlens.analyses.importance import ImportanceOptions, importance_key
    from headlens.analyses.induction import InductionOptions, induction_key
    from headlens.analyses.layers import DistancesOptions, distances_key
    from headlens.analyses.pruning import (
        CurveOptions,
        curve_key,
        ffn_oracle_key,
        importance_ref,
        oracle_ref,
    )
    from headlens.results.scores import version
    from headlens.tasks import get_task
    from headlens.tasks.texts import DatasetTexts

    tasks = {t: get_task(t) for t in spec.tasks}
    jobs: list[Job] = []
    for m in spec.models:
        mk = model_key(m)
        common = dict(model=m, data_dir=spec.data_dir, output=spec.output, version=version(), cache=spec.cache)
        if spec.induction is not None:
            ind = spec.induction
            variants = [(score, None) for score in ("prefix_matching", "attention_concentration")
                        if score in ind.scores] + \
                       ([("copying", v) for v in ind.copying] if "copying" in ind.scores else [])
            settings = InductionOptions(seeds=ind.seeds)
            for score, variant in variants:
                jobs.append(Job("induction", entry=induction_key(mk, score, variant, settings), variant=variant,
                                options=(("score", score), ("seeds", ind.seeds)), settings=settings, **common))
        if spec.layer_distances is not None:
            ld = spec.layer_distances
            source = ld.text_file or (DatasetTexts.parse(ld.dataset) if ld.dataset else None)
            settings = DistancesOptions(n_texts=ld.n_texts, seed=ld.seed, max_len=ld.max_len, batch_size=ld.batch_size)
            opts = tuple((k, getattr(ld, k)) for k in ("n_texts", "text_file", "dataset", "batch_size", "max_len"))
            jobs.append(Job("layer_distances", entry=distances_key(mk, source, settings), seed=ld.seed,
                            options=opts, settings=settings, **common))
        for tname, task in tasks.items():
            limit = spec.limit if spec.limit is not None else task.importance_limit
            for shots in spec.shots:
                for seed in spec.seeds:
                    base = dict(task=tname, task_name=task.name, shots=shots, seed=seed, limit=limit, **common)
                    variants = list(spec.importance.variants) if spec.importance else []
                    ranked_by = [spec.pruning.variant] if spec.pruning else []
                    batch = spec.importance.batch_size if spec.importance else 8
                    imp: dict[str, tuple[ImportanceOptions, CacheKey]] = {}
                    for variant in dict.fromkeys(variants + ranked_by):
                        settings = ImportanceOptions(variant=variant, limit=spec.limit, seed=seed, batch_size=batch)
                        imp[variant] = settings, importance_key(mk, task, shots, settings, data_dir=spec.data_dir)
                    for variant in variants:
                        jobs.append(Job("importance", entry=imp[variant][1], variant=variant, settings=imp[variant][0],
                                        options=(("batch_size", batch),), **base))
                    if spec.pruning:
                        p = spec.pruning
                        ranking_settings, ranking_key = imp[p.variant]
                        dep = (ranking_key.digest,) if p.variant in variants else ()
                        for what, ranking in p.curves():
                            curve = CurveOptions(what=what, random_draws=p.random_draws)
                            if ranking == "oracle":  # as resolve_ranking("oracle"): the importance queries
                                q = ranking_settings.resolved(task)
                                oracle = ffn_oracle_key(mk, task, shots, limit=q["limit"], seed=seed, split=q["split"],
                                                        data_dir=spec.data_dir)
                                ref = oracle_ref(oracle.digest, ranking_key.digest)
                            else:
                                ref = importance_ref(ranking_key.digest, "head_importance" if what == "heads"
                                                     else "ffn_importance")
                            entry = curve_key(mk, task, shots, ref, curve, limit=p.limit, seed=seed,
                                              data_dir=spec.data_dir)
                            opts = (("what", what), ("ranking", ranking), ("eval_limit", p.limit),
                                    ("random_draws", p.random_draws), ("batch_size", p.batch_size),
                                    ("importance_batch_size", batch))
                            jobs.append(Job("pruning", entry=entry, variant=p.variant, options=opts,
                                            settings=(ranking_settings, curve), depends=dep, **base))
    return jobs


def reproduce_command(job: Job) -> str:
    """The standalone ``headlens`` command for one job (same cache entries when it shares the cache)."""
    q = shlex.quote
    m = job.model
    prefix = f"HEADLENS_CACHE={q(job.cache)} " if job.cache else ""
    tail = ""
    if job.data_dir and job.analysis in ("importance", "pruning"):
        tail += f" --data-dir {q(job.data_dir)}"
    if m.dtype != "float32":
        tail += f" --dtype {m.dtype}"
    if m.device:
        tail += f" --device {q(m.device)}"
    if job.analysis == "importance":
        cmd = (f"headlens importance --model {q(m.name)} --task {q(job.task)} --shots {job.shots} "
               f"--limit {job.limit} --variant {job.variant} --seed {job.seed}")
    elif job.analysis == "pruning":
        cmd = (f"headlens prune --model {q(m.name)} --task {q(job.task)} --shots {job.shots} "
               f"--what {job.option('what')} --variant {job.variant} --seed {job.seed} "
               f"--importance-limit {job.limit} --random-draws {job.option('random_draws')}")
        if job.option("ranking") == "oracle":
            cmd += " --ranking oracle"
        if job.option("eval_limit") is not None:
            cmd += f" --limit {job.option('eval_limit')}"
    elif job.analysis == "induction":
        cmd = f"headlens induction --model {q(m.name)} --seeds {job.option('seeds')}"
        if job.variant:
            cmd += f" --copying {job.variant}"
    else:
        cmd = f"headlens layers distances --model {q(m.name)} --n-texts {job.option('n_texts')} --seed {job.seed}"
        if job.option("text_file"):
            cmd += f" --text-file {q(job.option('text_file'))}"
        if job.option("dataset"):
            cmd += f" --dataset {q(job.option('dataset'))}"
        if job.option("max_len"):
            cmd += f" --max-len {job.option('max_len')}"
    return prefix + cmd + tail


# ----------------------------------------------------------------------------- running one job

# One model per process: a worker that runs many jobs of the same model loads it once; a job
# of another model replaces it (so a worker never holds two large models).
_LOADED: dict[tuple, Any] = {}
_LOADS = [0]  # models loaded by this process (reported per job, so tests can count them)


def loaded_model(spec: ModelSpec):
    """The process's cached bridge for ``spec`` (loading it, and dropping any other, if needed)."""
    key = (spec.name, spec.revision, spec.dtype, spec.device)
    if key not in _LOADED:
        _LOADED.clear()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        from headlens.model.loading import load_model

        _LOADS[0] += 1
        _LOADED[key] = load_model(spec.name, device=spec.device, dtype=spec.dtype,  # type: ignore[arg-type]
                                  revision=spec.revision)
    return _LOADED[key]


def _run_importance(bridge, job: Job, cache) -> tuple[dict, CacheKey]:
    from headlens.analyses.importance import importance_key, task_importance

    imp = task_importance(bridge, job.task, job.shots, options=job.settings, data_dir=job.data_dir, cache=cache,
                          progress=False)
    return imp.to_dict(), importance_key(bridge, job.task, job.shots, job.settings, data_dir=job.data_dir)


def _run_pruning(bridge, job: Job, cache) -> tuple[dict, CacheKey]:
    from headlens.analyses.pruning import TaskEvaluator, cached_curve, resolve_ranking
    from headlens.tasks import get_task

    ranking_settings, curve = job.settings
    # the CLI's own resolution (prune --ranking self|oracle), so both name the same entry
    ranking = resolve_ranking(bridge, "oracle" if job.option("ranking") == "oracle" else "self",
                              get_task(job.task), job.shots, curve.what, options=ranking_settings,
                              data_dir=job.data_dir, cache=cache)
    evaluator = TaskEvaluator(bridge, job.task, job.shots, limit=job.option("eval_limit"), seed=job.seed,
                              data_dir=job.data_dir, batch_size=job.option("batch_size", 16))
    df = cached_curve(evaluator, ranking, options=curve, cache=cache, progress=False)
    value = {"curve": df.to_dict("records"), "n": len(evaluator.prepared.items), "split": evaluator.prepared.split}
    return value, evaluator.curve_key(ranking, curve)


def _run_induction(bridge, job: Job, cache) -> tuple[dict, CacheKey]:
    from headlens.analyses.induction import induction_key, induction_scores

    score = job.option("score")
    scores = induction_scores(bridge, score, job.variant, job.settings, cache=cache)
    return scores.to_dict(), induction_key(bridge, score, job.variant, job.settings)


def _run_layer_distances(bridge, job: Job, cache) -> tuple[dict, CacheKey]:
    from headlens.analyses.layers import cached_layer_distances, distances_key
    from headlens.tasks.texts import DatasetTexts

    source = job.option("text_file") or (DatasetTexts.parse(job.option("dataset")) if job.option("dataset") else None)
    dist = cached_layer_distances(bridge, source, job.settings, cache=cache)
    return dist.to_cache(), distances_key(bridge, source, job.settings)


RUNNERS = {"importance": _run_importance, "pruning": _run_pruning, "induction": _run_induction,
           "layer_distances": _run_layer_distances}


def validator(job: Job):
    """The analysis's check of a cached value (shape, finiteness, model), for ``ResultCache.get``."""
    from headlens.analyses import importance, induction, layers, pruning

    return {"importance": importance.valid_importance, "pruning": pruning.valid_curve,
            "induction": induction.valid_induction, "layer_distances": layers.valid_distances}[job.analysis]


def output_paths(job: Job) -> list[Path]:
    """Where :func:`write_outputs` puts a job's files (under ``output/<model label>/<analysis>/``)."""
    folder = Path(job.output) / job.model.label / job.analysis
    stem = f"{job.task_name}-{job.shots}shot-{job.variant}-seed{job.seed}" if job.task_name else ""
    if job.analysis == "importance":
        return [folder / f"heads-{stem}.json", folder / f"ffn-{stem}.json"]
    if job.analysis == "pruning":
        what = job.option("what")
        return [folder / (f"{what}-{stem}.csv" if what == "heads" else f"{what}-{job.option('ranking')}-{stem}.csv")]
    if job.analysis == "induction":
        name = job.option("score") + (f"-{job.variant}" if job.variant else "")
        return [folder / f"{name}-seeds{job.option('seeds')}.json"]
    return [folder / f"distances-{job.option('n_texts')}texts-seed{job.seed}.json"]


def write_outputs(job: Job, value: dict, *, only_missing: bool = False) -> list[str]:
    """Save a job's result in the output folder: Scores JSONs, curve CSVs, distance JSONs."""
    import json

    from headlens.results.scores import Scores, _jsonable, atomic_write_text

    paths = output_paths(job)
    if only_missing and all(p.is_file() for p in paths):
        return [str(p) for p in paths]
    if job.analysis == "importance":
        Scores.from_dict(value["heads"]).save(paths[0])
        Scores.from_dict(value["ffn"]).save(paths[1])
    elif job.analysis == "pruning":
        import pandas as pd

        atomic_write_text(paths[0], pd.DataFrame(value["curve"]).to_csv(index=False))
    elif job.analysis == "induction":
        Scores.from_dict(value).save(paths[0])
    else:
        atomic_write_text(paths[0], json.dumps(_jsonable({k: v for k, v in value.items() if k != "pairwise"})))
    return [str(p) for p in paths]


def run_job(job: Job, cache_root: str | os.PathLike | None = None) -> dict:
    """Compute one job (or read it from the cache), store it under ``job.key``, save its files.

    Returns:
        ``{"key", "analysis", "value", "computed", "seconds", "files", "pid", "loaded_model"}``;
        ``value`` is the cached JSON value; ``computed`` is False when the cache already held it;
        ``loaded_model`` is True when this job had to load its model (the process held another).
    """
    from headlens.results.cache import ResultCache
    from headlens.results.scores import version

    if job.version and job.version != version():
        raise HeadlensError(f"sweep: this worker runs headlens {version()} but the sweep was expanded with "
                            f"{job.version}; install the same headlens version on every node")
    cache = ResultCache(cache_root if cache_root is not None else job.cache)
    start, loads = time.perf_counter(), _LOADS[0]
    value = cache.get(job.entry, validator(job))
    computed = value is None
    if computed:
        value, used = RUNNERS[job.analysis](loaded_model(job.model), job, cache)
        if used != job.entry:  # the sweep and the library must name the same entry
            raise HeadlensError(f"sweep: job {job.label} was expanded with cache key {job.entry} but the library "
                                f"computed {used}; the model or data changed since the sweep was expanded")
    files = write_outputs(job, value)
    return {"key": job.key, "analysis": job.analysis, "value": value, "computed": computed,
            "seconds": time.perf_counter() - start, "files": files, "pid": os.getpid(),
            "loaded_model": _LOADS[0] > loads}
