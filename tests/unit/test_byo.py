"""Bring-your-own tasks: JSONL example files (validation, splits, options) and task files."""

from __future__ import annotations

import json

import pytest

from headlens.errors import HeadlensError
from headlens.tasks.prompts import prepare
from headlens.tasks import get_task

LINES = [
    {"context": "Copy: apple ->", "choices": [" apple", " pear"], "gold": 0},
    {"context": "Copy: stone ->", "choices": [" river", " stone"], "gold": 1},
    {"context": "Copy: cloud ->", "choices": [" cloud", " tree"], "gold": 0},
    {"context": "Copy: glass ->", "choices": [" paper", " glass"], "gold": 1},
    {"context": "Copy: horse ->", "choices": [" horse", " mouse"], "gold": 0},
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from tests.builders import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok"))


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_without_splits_draws_demos_from_other_lines(tmp_path, tok):
    path = write(tmp_path / "copy.jsonl", LINES)
    task = get_task(str(path))
    assert task.name == "copy" and task.train_split == task.eval_split == "test"
    prep = prepare(tok, task, 2, seed=1)
    assert len(prep.items) == 5 and prep.truncated == prep.skipped == 0
    demo_texts = {r["context"] + r["choices"][r["gold"]] for r in LINES}
    for item, row in zip(prep.items, LINES):
        *demos, query = item.prompt.split("\n\n")
        assert query == row["context"] and len(demos) == 2
        assert set(demos) <= demo_texts - {row["context"] + row["choices"][row["gold"]]}
    assert [i.prompt for i in prepare(tok, task, 2, seed=1).items] == [i.prompt for i in prep.items]
    with pytest.raises(HeadlensError, match="5 shots need 6 train documents"):
        prepare(tok, task, 5)


def test_jsonl_split_field_separator_and_delimiter(tmp_path, tok):
    rows = [dict(r, split="train") for r in LINES[:3]] + [
        {"context": "Copy: lemon ->", "choices": ["lemon", "melon"], "gold": 0, "split": "test"}]
    path = write(tmp_path / "split.jsonl", rows)
    task = get_task(str(path), separator="\n", delimiter=" ")
    assert (task.train_split, task.eval_split, task.importance_split) == ("train", "test", "train")
    (ex,) = task.examples("test")
    assert ex.choices == (" lemon", " melon")
    (item,) = prepare(tok, task, 3, seed=0).items
    lines = item.prompt.split("\n")
    assert lines[-1] == "Copy: lemon ->" and sorted(lines[:3]) == sorted(
        r["context"] + " " + r["choices"][r["gold"]] for r in rows[:3])  # train choices get the delimiter too
    assert len(task.importance_examples()) == 3


@pytest.mark.parametrize("bad, problem", [
    ({"choices": [" a", " b"], "gold": 0}, "missing key 'context'"),
    ({"context": "c", "choices": [" a", " b"], "gold": 2}, "gold 2 out of range"),
    ({"context": "c", "choices": [" a"], "gold": 0}, "fewer than two choices"),
    ({"context": "  ", "choices": [" a", " b"], "gold": 0}, "empty context"),
    ({"context": "c", "choices": [" a", " b"], "gold": "0"}, "gold must be an integer"),
    ({"context": "c", "choices": [" a", " b"], "gold": 0, "split": "dev"}, "split 'dev' unknown"),
    ({"context": "c", "choice": [" a", " b"], "gold": 0}, "missing key 'choices'"),
    ('{"context": "c", ', "not valid JSON"),
])
def test_malformed_line_is_named_and_nothing_is_computed(bad, problem, tmp_path):
    path = write(tmp_path / "bad.jsonl", LINES[:2] + [bad] + LINES[2:])
    with pytest.raises(HeadlensError) as err:
        get_task(str(path))
    assert str(err.value).startswith(f"{path}:3: ") and problem in str(err.value)


def test_missing_or_unknown_task_file(tmp_path):
    with pytest.raises(HeadlensError, match="does not exist"):
        get_task(str(tmp_path / "nope.jsonl"))
    write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(HeadlensError, match="no examples"):
        get_task(str(tmp_path / "empty.jsonl"))


def test_yaml_task_pointing_at_an_examples_file(tmp_path, tok):
    write(tmp_path / "ex.jsonl", LINES)
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nversion: 3\nmetric: acc\nsource: {kind: examples, path: ex.jsonl, delimiter: ''}\n"
        "splits: {train: test, eval: test}\nseparator: \"\\n---\\n\"\n")
    task = get_task(str(tmp_path / "mine.yaml"))
    assert task.name == "mine" and task.version == 3
    item = prepare(tok, task, 1, limit=1).items[0]
    assert item.prompt.count("\n---\n") == 1 and item.prompt.endswith(LINES[0]["context"])


def test_editing_the_file_changes_the_version(tmp_path):
    path = write(tmp_path / "v.jsonl", LINES)
    v1 = get_task(str(path)).version
    write(path, LINES[:4])
    task = get_task(str(path))
    assert task.version != v1 and len(task.examples("test")) == 4


@pytest.mark.parametrize("data, problem", [
    ('{"context": "Caf\u00e9 ->", "choices": [" a", " b"], "gold": 0}\n'.encode("latin-1"),
     "not UTF-8 text (byte 0xe9 at offset 16)"),
    (bytes(range(128, 256)) * 8, "not UTF-8 text (byte 0x80 at offset 0)"),
])
def test_latin1_or_binary_file_is_one_line_error(data, problem, tmp_path):
    path = tmp_path / "enc.jsonl"
    path.write_bytes(data)
    with pytest.raises(HeadlensError) as err:
        get_task(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message
    assert "re-save it as UTF-8" in message


def test_a_line_repeating_another_input_is_never_its_demonstration(tmp_path, tok):
    rows = LINES + [dict(LINES[0], choices=[" pear", " apple"], gold=1)]  # the same input, other doc_id
    task = get_task(str(write(tmp_path / "dup.jsonl", rows)))
    prep = prepare(tok, task, 4, seed=0)
    for item in prep.items:
        *demos, query = item.prompt.split("\n\n")
        assert all(not d.startswith(query) for d in demos)
    with pytest.raises(HeadlensError, match="document 0 of split 'test' has 4 demonstration candidates"):
        prepare(tok, task, 5)
