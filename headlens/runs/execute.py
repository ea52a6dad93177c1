"""Running a sweep: skip cached jobs, schedule the rest on a backend, retry, report.

Backends:
    ``local`` with one worker: jobs run one after another in this process.
    ``local`` with ``workers=N``: a spawn-context process pool; each worker keeps the last
        model it loaded (:func:`headlens.sweep.loaded_model`), and jobs are handed out model
        by model so a worker loads each model once.
    ``ray``: one Ray task per job, reserving the model's declared ``num_cpus``, ``num_gpus``
        and ``memory``; Ray's own retries are off (the sweep retries itself).

Whatever ran a job, the driver stores its value in the driver's result cache under the
job's key and writes its files, so results land in one place even when cluster nodes do not
share a filesystem. A failed job is tried ``retries`` more times, then recorded with its
error and the ``headlens ...`` command that reproduces it; the sweep goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headlens.errors import HeadlensError
from headlens.runs.sweep import Job, SweepSpec, expand

STATUSES = ("pending", "running", "done", "cached", "failed")


@dataclass
class JobRecord:
    """What happened to one job: status, attempts, error (one line), seconds, worker pid."""

    job: Job
    status: str = "pending"
    attempts: int = 0
    error: str | None = None
    seconds: float = 0.0
    computed: bool = False
    pid: int | None = None
    loaded_model: bool = False

    def to_dict(self) -> dict:
        j = self.job
        return {"key": j.key, "analysis": j.analysis, "model": j.model.name, "task": j.task_name,
                "shots": j.shots, "variant": j.variant, "seed": j.seed, "limit": j.limit,
                "what": j.option("what"), "ranking": j.option("ranking"), "status": self.status, "attempts": self.attempts, "error": self.error,
                "seconds": round(self.seconds, 3), "command": j.command}


@dataclass(frozen=True)
class SweepReport:
    """The outcome of a sweep: one record per job, in expansion order."""

    name: str
    records: tuple[JobRecord, ...]
    backend: str
    seconds: float
    output: str

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def failures(self) -> list[JobRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"sweep": self.name, "backend": self.backend, "seconds": round(self.seconds, 3),
                "output": self.output, "n_jobs": len(self.records),
                **{s: self.count(s) for s in ("done", "cached", "failed")},
                "jobs": [r.to_dict() for r in self.records],
                "failures": [{"job": r.job.label, "error": r.error, "attempts": r.attempts,
                              "command": r.job.command} for r in self.failures]}

    def summary(self) -> str:
        """Human summary: counts, then each failure with its error and reproduce command."""
        lines = [f"sweep {self.name}: {len(self.records)} jobs, {self.count('done')} done, "
                 f"{self.count('cached')} cached (skipped), {self.count('failed')} failed "
                 f"[{self.backend}, {self.seconds:.1f}s]; results in {self.output}"]
        for r in self.failures:
            lines += [f"FAILED {r.job.label} (attempts: {r.attempts}): {r.error}",
                      f"  reproduce: {r.job.command}"]
        return "\n".join(lines)


def _one_line(err: BaseException) -> str:
    cause = getattr(err, "cause", None)  # Ray wraps the job's exception
    err = cause if isinstance(cause, BaseException) else err
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


# ----------------------------------------------------------------------------- backends


class _Sequential:
    """Run jobs here, one at a time (``headlens.sweep.run_job`` looked up at call time)."""

    name = "local"
    capacity = 1

    def __init__(self, cache_root: str | None):
        self.cache_root, self.queue = cache_root, []

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def wait(self) -> list[tuple[Job, dict | None, BaseException | None]]:
        from headlens.runs import sweep

        job = self.queue.pop(0)
        try:
            return [(job, sweep.run_job(job, self.cache_root), None)]
        except Exception as err:  # noqa: BLE001 - KeyboardInterrupt/SystemExit stop the sweep
            return [(job, None, err)]

    def close(self, cancel: bool = False) -> None:
        self.queue.clear()


def _die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """Make this worker process exit as soon as the sweep process ``parent`` is gone.

    A parent killed by SIGKILL runs no clean-up, so the worker watches for itself: on Linux
    the kernel sends it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and on
    every platform a daemon thread polls ``os.getppid()`` (a worker whose parent died is
    re-parented) and exits the process.
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no libc symbol: the polling thread still works
            pass
    if os.getppid() != parent:  # died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="headlens-parent-watch", daemon=True).start()


def _init_worker(threads: int, parent: int | None = None) -> None:
    import signal

    # Ctrl-C reaches the whole process group; the sweep process handles it and stops the
    # workers, so a worker must not die mid-job with its own traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


class _Pool:
    """A spawn-context process pool of ``workers`` processes."""

    name = "local"

    def __init__(self, cache_root: str | None, workers: int):
        self.cache_root, self.capacity = cache_root, workers
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.futures: dict[Any, Job] = {}
        self.executor = self._make()

    def _make(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.capacity, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads, os.getpid()))

    def submit(self, job: Job) -> None:
        from headlens.runs.sweep import run_job

        self.futures[self.executor.submit(run_job, job, self.cache_root)] = job

    def wait(self):
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as fwait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = fwait(list(self.futures), return_when=FIRST_COMPLETED)
        out, broken = [], False
        for fut in done:
            job = self.futures.pop(fut)
            err = fut.exception()
            broken |= isinstance(err, BrokenProcessPool)
            out.append((job, None if err else fut.result(), err))
        if broken:  # a worker died (killed, out of memory): every job in flight failed with it
            for fut, job in list(self.futures.items()):
                out.append((job, None, RuntimeError("a worker process died")))
            self.futures.clear()
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = self._make()
        return out

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [p.pid for p in list(getattr(self.executor, "_processes", {}).values()) if p.is_alive()]

    def close(self, cancel: bool = False) -> None:
        if not cancel:
            self.executor.shutdown(wait=True)
            return
        # interrupted: drop queued jobs and stop the running ones now, not after they finish
        processes = list(getattr(self.executor, "_processes", {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.join(timeout=5)


def _ray_entry(job: Job, cache_root: str | None) -> dict:
    from headlens.runs.sweep import run_job

    return run_job(job, cache_root)


def import_ray():
    """Import ray or explain how to install it."""
    try:
        import ray
    except ImportError:
        raise HeadlensError("sweep: the ray backend needs Ray; install it with pip install 'headlens[ray]' "
                            "(or run without --ray-address)") from None
    return ray


class _Ray:
    """One Ray task per job with the model's declared resources."""

    name = "ray"

    def __init__(self, cache_root: str | None, address: str | None):
        ray = self.ray = import_ray()
        self.started = False
        if not ray.is_initialized():
            here = str(Path(__file__).resolve().parents[2])
            path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}, "log_to_driver": False}
            if address and address != "local":
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise HeadlensError(f"sweep: cannot connect to Ray at {address!r}: {str(err).splitlines()[0]}; "
                                    f"start one with 'ray start --head' or pass --ray-address local") from None
            self.started = True
        try:
            self.remote = ray.remote(max_retries=0)(_ray_entry)
            cpus = ray.cluster_resources().get("CPU", 1)
        except BaseException:
            self.close()
            raise
        self.capacity = max(1, int(cpus) * 4)  # keep Ray's queue fed without submitting thousands
        self.cache_root = cache_root
        self.refs: dict[Any, Job] = {}

    def submit(self, job: Job) -> None:
        self.refs[self.remote.options(**job.model.resources()).remote(job, self.cache_root)] = job

    def wait(self):
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        out = []
        for ref in ready:
            job = self.refs.pop(ref)
            try:
                out.append((job, self.ray.get(ref), None))
            except Exception as err:  # noqa: BLE001 - RayTaskError wraps the job's exception
                out.append((job, None, err))
        return out

    def close(self, cancel: bool = False) -> None:
        """Cancel what is in flight (when asked) and shut down a Ray instance this sweep started."""
        try:
            if cancel:
                for ref in getattr(self, "refs", {}):
                    self.ray.cancel(ref, force=True)
        finally:
            if self.started:  # a local Ray started here must not outlive the sweep
                self.started = False
                self.ray.shutdown()


# ----------------------------------------------------------------------------- live table


class _Live:
    """A rich live table of done / running / failed / skipped jobs (stderr)."""

    def __init__(self, name: str, records: list[JobRecord], enabled: bool):
        self.name, self.records, self.live = name, records, None
        if enabled:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(get_renderable=self.render, console=Console(stderr=True), refresh_per_second=4,
                             transient=False)

    def render(self):
        from rich.table import Table

        counts = {s: sum(r.status == s for r in self.records) for s in STATUSES}
        table = Table(title=f"sweep {self.name}: {len(self.records)} jobs", title_justify="left")
        for col in ("done", "running", "failed", "skipped (cached)", "pending"):
            table.add_column(col, justify="right")
        table.add_row(*(str(counts[s]) for s in ("done", "running", "failed", "cached", "pending")))
        detail = Table(show_header=True, box=None)
        detail.add_column("status")
        detail.add_column("job")
        detail.add_column("note", overflow="fold")
        for r in [r for r in self.records if r.status == "running"][:10]:
            detail.add_row("[yellow]running", r.job.label, f"attempt {r.attempts}")
        for r in [r for r in self.records if r.status == "failed"][-5:]:
            detail.add_row("[red]failed", r.job.label, r.error or "")
        from rich.console import Group

        return Group(table, detail)

    def __enter__(self):
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()


# ----------------------------------------------------------------------------- the sweep


def plan(spec: SweepSpec, cache_root: str | None = None) -> list[tuple[Job, bool]]:
    """Every job of ``spec`` and whether its result is already cached (what ``--dry-run`` lists)."""
    from headlens.results.cache import ResultCache

    from headlens.runs.sweep import validator

    cache = ResultCache(cache_root if cache_root is not None else spec.cache)
    return [(j, cache.contains(j.entry, validator(j))) for j in expand(spec)]


def run_sweep(spec: SweepSpec, *, workers: int = 1, ray_address: str | None = None, backend: str | None = None,
              cache_root: str | None = None, progress: bool = False,
              on_event: Callable[[JobRecord], None] | None = None) -> SweepReport:
    """Run every job of ``spec`` that is not cached; retry failures; write the summary.

    Args:
        workers: local worker processes (1: run here, one job after another).
        ray_address: ``auto``, ``HOST:PORT`` or ``local`` to use Ray (an already initialised
            Ray session is used as it is).
        backend: ``local`` or ``ray`` (default: ``ray`` when ``ray_address`` is given).
        cache_root: result-cache root (default: the sweep's ``cache`` or ``$HEADLENS_CACHE``).
        progress: show a live table on stderr.
        on_event: called with a job's record whenever its status changes.

    Returns:
        A :class:`SweepReport`; also written to ``<output>/sweep-summary.json``.
    """
    import json

    from headlens.results.cache import ResultCache
    from headlens.results.scores import atomic_write_text
    from headlens.runs.sweep import validator, write_outputs

    if not isinstance(workers, int) or workers < 1:
        raise HeadlensError(f"sweep: --workers must be an integer >= 1, got {workers!r}")
    backend = backend or ("ray" if ray_address else "local")
    if backend not in ("local", "ray"):
        raise HeadlensError(f"sweep: unknown backend {backend!r}; use local or ray")
    from headlens.results.outputs import check_out_dir

    check_out_dir(spec.output, option="sweep output:")  # before any job, not after all of them
    root = cache_root if cache_root is not None else spec.cache
    cache = ResultCache(root)
    start = time.perf_counter()
    records = [JobRecord(job) for job in expand(spec)]
    by_key = {r.job.key: r for r in records}
    notify = on_event or (lambda r: None)
    for r in records:
        hit = cache.get(r.job.entry, validator(r.job))  # wrong shape, NaN, another model: recomputed
        if hit is not None:
            r.status = "cached"
            write_outputs(r.job, hit, only_missing=True)
    pending = [r for r in records if r.status == "pending"]
    runner = None
    with _terminate_as_exit():
        try:
            if pending:
                runner = (_Ray(root, ray_address) if backend == "ray" else
                          _Pool(root, workers) if workers > 1 else _Sequential(root))
            _drive(spec, runner, records, pending, by_key, cache, notify, progress)
        except BaseException:  # Ctrl-C, SIGTERM, a failed write: stop workers, shut Ray down
            if runner is not None:
                runner.close(cancel=True)
            raise
        if runner is not None:
            runner.close()
    report = SweepReport(spec.name, tuple(records), backend if runner is not None else "none (all cached)",
                         time.perf_counter() - start, spec.output)
    atomic_write_text(Path(spec.output) / "sweep-summary.json", json.dumps(report.to_dict(), indent=1))
    return report


class _terminate_as_exit:
    """While a sweep runs in the main thread, SIGTERM raises SystemExit(143) instead of killing
    the process outright, so the runner is closed: workers stopped, a local Ray shut down."""

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise SystemExit(128 + signum)

            self.previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _drive(spec: SweepSpec, runner, records: list[JobRecord], pending: list[JobRecord],
           by_key: dict[str, JobRecord], cache, notify: Callable[[JobRecord], None], progress: bool) -> None:
    """Submit ready jobs, collect results and retry failures until every job is settled."""
    from headlens.runs.sweep import validator, write_outputs

    in_flight = 0

    def finish(r: JobRecord, status: str, error: str | None = None) -> None:
        r.status, r.error = status, error
        notify(r)

    with _Live(spec.name, records, enabled=progress) as live:
        while pending or in_flight:
            for r in list(pending):  # submit what is ready, model by model (expansion order)
                if in_flight >= runner.capacity:
                    break
                deps = [by_key[k] for k in r.job.depends if k in by_key]
                if any(d.status == "failed" for d in deps):
                    pending.remove(r)
                    finish(r, "failed", "not run: the importance job it ranks by failed")
                    continue
                if all(d.status in ("done", "cached") for d in deps):
                    pending.remove(r)
                    r.status, r.attempts = "running", r.attempts + 1
                    runner.submit(r.job)
                    in_flight += 1
                    notify(r)
            live.refresh()
            if not in_flight:
                for r in pending:  # nothing can start: a dependency was never scheduled
                    finish(r, "failed", "not run: its dependency could not be scheduled")
                pending.clear()
                continue
            for job, result, err in runner.wait():
                in_flight -= 1
                r = by_key[job.key]
                if err is None:
                    if cache.get(job.entry, validator(job)) is None:
                        cache.put(job.entry, result["value"])
                    write_outputs(job, result["value"], only_missing=True)
                    r.seconds, r.computed, r.pid = result["seconds"], result["computed"], result["pid"]
                    r.loaded_model = bool(result.get("loaded_model"))
                    finish(r, "done")
                elif r.attempts <= spec.retries:
                    r.status, r.error = "pending", _one_line(err)
                    pending.insert(0, r)
                    notify(r)
                else:
                    finish(r, "failed", _one_line(err))
            live.refresh()
