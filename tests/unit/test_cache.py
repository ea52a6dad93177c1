"""The result cache's storage: atomic 0644 entries, anything unreadable is a miss, validation
on load, an unwritable root warns once and continues, `headlens cache ls|clear`."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from headlens.errors import HeadlensError
from headlens.results.cache import CacheKey, ResultCache, finite_array, parse_age, valid_scores
from headlens.results.scores import Scores, check_same_model


def _key(**extra):
    return CacheKey.make("importance", shape=(2, 4), model={"fingerprint": "abc", "dtype": "float32"}, **extra)


def test_entries_are_written_with_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        cache = ResultCache(tmp_path)
        cache.put(_key(), {"x": 1})
        mode = stat.S_IMODE(cache.path(_key()).stat().st_mode)
        saved = Scores(np.ones((2, 2)), metric="m").save(tmp_path / "s.json")
    finally:
        os.umask(old)
    assert mode == 0o644  # mkstemp alone leaves 0600: other users of a shared cache could not read it
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644
    assert not list(tmp_path.rglob("*.tmp"))  # written through a temporary file and a rename


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage \x80", b"{}", b"[1, 2]", b"null", b'"text"',
                                     b'{"schema": 99, "value": 1}', b"{\"schema\": 1, \"kind\": \"importance\""])
def test_any_unreadable_entry_is_a_miss_and_recomputed(tmp_path, content):
    cache, key = ResultCache(tmp_path), _key()
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_bytes(content)
    calls = []
    value = cache.get_or_compute(key, lambda: calls.append(1) or {"x": 1})
    assert value == {"x": 1} and calls == [1] and cache.invalid == 1
    assert cache.get(key) == {"x": 1}  # the bad entry was replaced


def test_entry_of_other_parts_or_failing_validation_is_a_miss(tmp_path):
    cache, key = ResultCache(tmp_path), _key()
    cache.put(key, {"values": [[1.0]]})
    entry = json.loads(cache.path(key).read_text())
    entry["parts"]["model"]["fingerprint"] = "another-model"  # a file moved under the wrong name
    cache.path(key).write_text(json.dumps(entry))
    assert cache.get(key) is None
    cache.put(key, {"values": [[1.0]]})
    assert cache.get(key) == {"values": [[1.0]]}
    shape_ok = lambda v, k: finite_array(v["values"], k.shape)  # noqa: E731
    assert cache.get(key, shape_ok) is None  # 1x1 stored, the key's model is 2x4
    assert cache.get(key, lambda v, k: 1 / 0) is None  # a validator that raises: a miss, never a crash


def test_validators_reject_nulls_nans_ragged_and_wrong_models():
    good = Scores(np.ones((2, 4)), metric="m", meta={"model_fingerprint": "abc"}).to_dict()
    assert valid_scores(good, (2, 4), "abc")
    assert not valid_scores(good, (2, 4), "other")
    assert not valid_scores(good, (1, 1), "abc")
    for values in ([[1.0, None, 1, 1], [1, 1, 1, 1]], [[1.0, float("nan"), 1, 1], [1] * 4], [[1.0], [1, 2]],
                   "text", None):
        assert not valid_scores({**good, "values": values}, (2, 4), "abc")
    assert not valid_scores({**good, "std": [[None] * 4] * 2}, (2, 4), "abc")
    assert not valid_scores([], None) and not valid_scores({}, None)


def test_unwritable_root_warns_once_and_continues(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = blocker / "cache"  # unwritable for any user, root included
    cache = ResultCache(root)
    again = ResultCache(root)
    calls = []
    assert cache.get_or_compute(_key(), lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    assert again.get_or_compute(_key(), lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(calls) == 2 and len(err) == 1
    assert err[0].startswith("headlens: warning: cannot write the result cache") and str(root) in err[0]


def test_key_kind_must_be_a_folder_name():
    with pytest.raises(HeadlensError, match="plain folder name"):
        CacheKey.make("../escape", x=1)


def test_ls_and_clear_by_kind_and_age(tmp_path, monkeypatch):
    from headlens.cli.app import app

    monkeypatch.setenv("HEADLENS_CACHE", str(tmp_path / "c"))
    cache = ResultCache()
    for i in range(3):
        cache.put(_key(i=i), {"x": i})
    cache.put(CacheKey.make("induction", i=0), {"y": 1})
    (tmp_path / "c" / "models").mkdir()
    sidecar = tmp_path / "c" / "models" / "gguf-hashes.json"  # converted checkpoints: not results
    sidecar.write_text("{}")
    old = cache.path(_key(i=0))
    os.utime(old, (old.stat().st_atime - 10 * 86400, old.stat().st_mtime - 10 * 86400))
    runner = CliRunner()
    res = runner.invoke(app, ["cache", "ls", "--format", "json"])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert {r["kind"]: r["entries"] for r in obj["kinds"]} == {"importance": 3, "induction": 1}
    assert obj["entries"] == 4 and obj["bytes"] > 0 and obj["root"] == str(tmp_path / "c")
    text = runner.invoke(app, ["cache", "ls"]).stdout
    assert "importance" in text and "total" in text
    res = runner.invoke(app, ["cache", "clear", "--kind", "importance", "--older-than", "7d"])
    assert res.exit_code == 0 and "removed 1 entry" in res.stdout
    assert not old.exists() and cache.path(_key(i=1)).exists()
    res = runner.invoke(app, ["cache", "clear"])
    assert "removed 3 entries" in res.stdout and cache.summary() == [] and sidecar.exists()


def test_cache_clear_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from headlens.cli.app import main

    monkeypatch.setenv("HEADLENS_CACHE", str(tmp_path / "c"))
    ResultCache().put(_key(), {"x": 1})
    for argv, expected in ((["--older-than", "7 days"], "--older-than '7 days' is not an age"),
                           (["--kind", "importanse"], "did you mean importance")):
        monkeypatch.setattr(sys, "argv", ["headlens", "cache", "clear", *argv])
        with pytest.raises(SystemExit) as ex:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert ex.value.code == 2 and len(err) == 1 and expected in err[0], err
    assert parse_age("2w") == 14 * 86400 and parse_age("90s") == 90


def test_scores_of_two_models_are_refused_unless_allowed():
    a = Scores(np.ones((2, 2)), metric="m", model="x", meta={"model_fingerprint": "f1"})
    b = Scores(np.ones((2, 2)), metric="m", model="x", meta={"model_fingerprint": "f2"})
    check_same_model([a, a], "overlap")
    with pytest.raises(HeadlensError, match="another model") as err:
        check_same_model([a, b], "overlap", labels=["a.json", "b.json"])
    assert "b.json" in str(err.value) and "--allow-other-model" in str(err.value)
    check_same_model([a, b], "overlap", allow_other_model=True)
    old = Scores(np.ones((2, 2)), metric="m", model="y")  # no fingerprint: names compared
    with pytest.raises(HeadlensError):
        check_same_model([a, old], "overlap")
