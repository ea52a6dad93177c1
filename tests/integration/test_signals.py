"""Signals through the console entry point: a sweep's workers die with it (SIGKILL), a local
Ray is shut down (SIGTERM and errors), and Ctrl-C prints one line and exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[2])
FIXTURES = str(Path(REPO) / "tests" / "fixtures" / "tasks")

# A python-sourced task whose examples take minutes to generate inside a sweep worker (and
# are instant elsewhere), after writing the worker's pid: a job that is surely still running.
SLOW_TASK = '''
import multiprocessing, os, time
from pathlib import Path
from headlens.tasks import Example

def examples(split, seed, marker, anywhere=False):
    if anywhere or multiprocessing.parent_process() is not None:
        Path(marker, f"{os.getpid()}.pid").write_text(split)
        time.sleep(300)
    return [Example(context=f"w{i} ->", choices=(f" w{i}", " x"), gold=0) for i in range(4)]
'''


def _env(tmp_path: Path, extra: str = "") -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, extra, env.get("PYTHONPATH", "")) if p)
    env["HEADLENS_CACHE"] = str(tmp_path / "cache")
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    from tests.builders import build_tiny

    return build_tiny("gpt2", tmp_path_factory.mktemp("signals") / "gpt2")


def _slow_tasks(tmp_path: Path, names, anywhere: bool = False) -> tuple[Path, Path, list[str]]:
    """(package folder for PYTHONPATH, marker folder, task files) of slow python-sourced tasks."""
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "slowtask.py").write_text(SLOW_TASK)
    marker = tmp_path / "running"
    marker.mkdir(exist_ok=True)
    tasks = []
    for name in names:
        f = tmp_path / f"{name}.yaml"
        f.write_text(textwrap.dedent(f"""\
            name: {name}
            version: 1
            metric: acc
            source: {{kind: python, function: 'slowtask:examples', args: {{marker: '{marker}', anywhere: {str(anywhere).lower()}}}}}
            splits: {{train: train, eval: test}}
            """))
        tasks.append(str(f))
    return pkg, marker, tasks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sweep_workers_die_when_the_sweep_is_killed(gpt2, tmp_path):
    pkg, marker, tasks = _slow_tasks(tmp_path, ("slow_a", "slow_b"))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(textwrap.dedent(f"""\
        name: killed
        models: [{gpt2}]
        tasks: [{tasks[0]}, {tasks[1]}]
        shots: [0]
        limit: 2
        output: {tmp_path / 'out'}
        analyses:
          importance: {{variants: [bansal]}}
        """))
    proc = subprocess.Popen(["headlens", "sweep", str(sweep), "--workers", "2"], env=_env(tmp_path, str(pkg)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        busy = _wait_for(lambda: len(list(marker.glob("*.pid"))) == 2 or proc.poll() is not None, 120)
        assert busy and proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        workers = [int(p.stem) for p in marker.glob("*.pid")]
        helpers = [c for c in _children(proc.pid) if c not in workers]  # the resource tracker
        assert all(_alive(w) for w in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        gone = _wait_for(lambda: not any(_alive(p) for p in workers + helpers), 5)
        assert gone, f"still running 5 s after the sweep was killed: " \
                     f"{[p for p in workers + helpers if _alive(p)]}"
    finally:
        for pid in [proc.pid] + [int(p.stem) for p in marker.glob("*.pid")]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_ctrl_c_prints_one_line_and_exits_130(gpt2, tmp_path):
    pkg, marker, tasks = _slow_tasks(tmp_path, ("slow_c",), anywhere=True)
    proc = subprocess.Popen(["headlens", "eval", "--model", str(gpt2), "--task", tasks[0], "--limit", "2"],
                            env=_env(tmp_path, str(pkg)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: any(marker.glob("*.pid")) or proc.poll() is not None, 120), "never started"
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 130, err[-2000:]
    assert lines == ["headlens: interrupted; finished work is cached, run the same command to resume"], err[-2000:]


# ----------------------------------------------------------------------------- Ray is shut down


class FakeRay:
    """Just enough of ``ray`` for the sweep's backend; records init/cancel/shutdown."""

    def __init__(self, on_wait):
        self.calls: list[str] = []
        self.on_wait = on_wait
        self.up = False

    def is_initialized(self):
        return self.up

    def init(self, **kwargs):
        self.up = True
        self.calls.append("init")

    def remote(self, **kwargs):
        from types import SimpleNamespace

        return lambda fn: SimpleNamespace(options=lambda **r: SimpleNamespace(remote=lambda *a: object()))

    def cluster_resources(self):
        return {"CPU": 1}

    def wait(self, refs, num_returns=1):
        return self.on_wait(refs)

    def get(self, ref):
        raise AssertionError("not reached")

    def cancel(self, ref, force=False):
        self.calls.append("cancel")

    def shutdown(self):
        self.up = False
        self.calls.append("shutdown")


class _Signalled(Exception):
    pass


def _spec(tmp_path: Path):
    from headlens.runs.sweep import parse_sweep

    return parse_sweep({"name": "r", "models": ["tiny-icl"], "tasks": ["copa"], "shots": [0], "limit": 2,
                        "data_dir": FIXTURES, "output": str(tmp_path / "out"), "cache": str(tmp_path / "cache"),
                        "analyses": {"importance": None}})


def test_local_ray_is_shut_down_on_sigterm_and_on_errors(tmp_path, monkeypatch):
    from headlens.runs.execute import run_sweep

    def terminated(refs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal handler raises before this ends
        raise AssertionError("SIGTERM was not handled")

    def raised(refs):
        raise RuntimeError("lost the cluster")

    def outer(signum, frame):  # stands in for the default action (which would end pytest)
        raise _Signalled()

    previous = signal.signal(signal.SIGTERM, outer)
    try:
        fake = FakeRay(terminated)
        monkeypatch.setitem(sys.modules, "ray", fake)
        with pytest.raises(SystemExit) as ex:
            run_sweep(_spec(tmp_path), ray_address="local")
        assert ex.value.code == 128 + signal.SIGTERM
        assert fake.calls == ["init", "cancel", "shutdown"] and not fake.up
        assert signal.getsignal(signal.SIGTERM) is outer  # the caller's handler is back
        fake = FakeRay(raised)
        monkeypatch.setitem(sys.modules, "ray", fake)
        with pytest.raises(RuntimeError, match="lost the cluster"):
            run_sweep(_spec(tmp_path), ray_address="local")
        assert fake.calls[-1] == "shutdown" and not fake.up
    finally:
        signal.signal(signal.SIGTERM, previous)
