"""Disjoint calibration / healing / evaluation texts (split_texts, check_disjoint, split_heldout)."""

from __future__ import annotations

import pytest

from headlens.errors import HeadlensError
from headlens.tasks.texts import (
    TextSplits,
    check_disjoint,
    content_key,
    dedupe,
    split_heldout,
    split_texts,
)

SEP = "\n\n"


def _items(texts) -> set[str]:
    return {content_key(p) for t in texts for p in t.split(SEP) if p.strip()}


def _queries(texts) -> set[str]:
    """Few-shot items without their answers: a query must not be in two parts under any task."""
    return {p.rsplit("->", 1)[0].strip() for t in texts for p in t.split(SEP) if p.strip()}


def test_the_old_demo_texts_overlap_and_the_check_says_so():
    """What the demo did (two corpus draws) shares most items; split_texts shares none."""
    from headlens.tasks.synthetic import corpus

    evaluation, healing = corpus(64, 0), corpus(256, 1)
    shared = [p for t in evaluation for p in t.split(SEP) if content_key(p) in _items(healing)]
    assert len(shared) / sum(len(t.split(SEP)) for t in evaluation) > 0.4
    with pytest.raises(HeadlensError, match=r"evaluation paragraphs also appear among the healing"):
        check_disjoint({"healing": healing, "evaluation": evaluation}, by="paragraph")
    check_disjoint({"healing": healing, "evaluation": evaluation}, by="text")  # whole texts differ

    splits = split_texts(None, n_calibration=16, n_heal=64, n_eval=16, seed=0)
    assert splits.sizes() == {"calibration": 16, "heal": 64, "eval": 16}
    assert splits.disjoint_by == "paragraph"
    parts = [splits.calibration, splits.heal, splits.eval]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not _items(parts[i]) & _items(parts[j])
            assert not _queries(parts[i]) & _queries(parts[j])
    assert split_texts(None, n_calibration=16, n_heal=64, n_eval=16, seed=0) == splits
    assert split_texts(None, n_calibration=16, n_heal=64, n_eval=16, seed=1).eval != splits.eval


def test_a_list_is_deduplicated_shuffled_and_cut():
    texts = [f"text number {i}" for i in range(30)] + ["text  number 3", " text number 4 "]  # two repeats
    splits = split_texts(texts, n_calibration=5, n_heal=10, n_eval=5, seed=3)
    got = splits.calibration + splits.heal + splits.eval
    assert splits.sizes() == {"calibration": 5, "heal": 10, "eval": 5}
    assert len({content_key(t) for t in got}) == 20 and {content_key(t) for t in got} <= {content_key(t) for t in texts}
    assert split_texts(texts, n_calibration=5, n_heal=10, n_eval=5, seed=3) == splits
    small = split_texts(texts, n_calibration=64, n_heal=256, n_eval=64, seed=0)  # 30 distinct: shrink
    assert sum(small.sizes().values()) == 30 and min(small.sizes().values()) >= 1
    assert small.sizes()["heal"] > small.sizes()["eval"]


def test_split_errors():
    with pytest.raises(HeadlensError, match="at least 3 distinct texts"):
        split_texts(["a b", "a  b", "c d"])
    with pytest.raises(HeadlensError, match=">= 1"):
        split_texts(["a", "b", "c"], n_eval=0)
    with pytest.raises(HeadlensError, match="1 of the 2 eval texts also appear among the heal texts"):
        TextSplits(calibration=("x",), heal=("y", "z"), eval=("z ", "w"))
    with pytest.raises(HeadlensError, match="by must be one of"):
        check_disjoint({"a": ["x"]}, by="word")


def test_split_heldout_never_holds_out_a_training_text():
    texts = ["same text"] * 8 + ["other one", "third text", "fourth"]
    train, held = split_heldout(texts, 0.5, seed=0)
    assert not {content_key(t) for t in train} & {content_key(t) for t in held}
    assert len(train) + len(held) == 4
    assert dedupe(["a", " a", "b"]) == ["a", "b"]
    with pytest.raises(HeadlensError, match="2 distinct texts"):
        split_heldout(["x", "x "], 0.5)
    with pytest.raises(HeadlensError, match=r"in \(0, 1\)"):
        split_heldout(["x", "y"], 1.0)
