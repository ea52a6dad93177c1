"""The offline suite's generators: determinism, splits, and 0-shot at chance by construction."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from headlens.tasks import synthetic
from headlens.errors import HeadlensError
from headlens.tasks import Example

N = 400


def test_fourteen_tasks_in_four_families():
    assert len(synthetic.TASKS) == 14 == len(set(synthetic.TASKS))
    assert sum(len(f.tasks) for f in synthetic.FAMILIES) == 14
    study = {"hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa", "winogrande", "boolq",
             "cb", "copa", "wic", "wsc", "multirc", "rte", "record"}
    assert not study & set(synthetic.TASKS)


@pytest.mark.parametrize("task", synthetic.TASKS)
def test_deterministic_and_seeded(task):
    a = synthetic.examples(task, "train", seed=3, n=50)
    assert a == synthetic.examples(task, "train", seed=3, n=50)
    assert a[:20] == synthetic.examples(task, "train", seed=3, n=20)  # a prefix of a longer draw
    b = synthetic.examples(task, "train", seed=4, n=50)
    assert sum(x.context != y.context for x, y in zip(a, b)) > 25
    assert all(isinstance(e, Example) and e.doc_id == i for i, e in enumerate(a))


@pytest.mark.parametrize("task", synthetic.TASKS)
def test_examples_are_well_formed(task):
    exs = synthetic.examples(task, "test", n=N)
    k = round(1 / synthetic.chance(task))
    for e in exs:
        assert len(e.choices) == k == len(set(e.choices))
        assert all(c.startswith(" ") and len(c.split()) == 1 for c in e.choices)
        assert e.context.endswith(" ->") and "\n" not in e.context
        assert e.demo_text == e.context + e.choices[e.gold]
    assert synthetic.chance(task) == pytest.approx(1 / k)


def test_answers_match_the_rules():
    """Every task's gold answer, recomputed from the context by an independent rule."""
    rules = {
        "letter_first": lambda w: w[0],
        "letter_upper": lambda w: w[2].upper(),
        "letter_index": lambda w: str("abcdefghijklmnopqrstuvwxyz".index(w[0]) + 1),
        "letter_half": lambda w: "early" if w[1] <= "m" else "late",
        "number_larger": lambda w: str(max(int(w[0]), int(w[1]))),
        "number_smaller": lambda w: str(min(int(w[0]), int(w[1]))),
        "number_order": lambda w: "up" if int(w[0]) < int(w[1]) else "down",
        "number_parity": lambda w: ["even", "odd"][int(w[0]) % 2],
        "label_parity": lambda w: ["even", "odd"][int(w[0]) % 2],
        "label_flipped": lambda w: ["odd", "even"][int(w[0]) % 2],
        "label_size": lambda w: "small" if int(w[0]) < 15 else "big",
        "recall_value": lambda w: w[w.index(w[9]) + 1],
        "recall_next_key": lambda w: w[w.index(w[9]) + 2],
        "recall_size": lambda w: "small" if int(w[w.index(w[9]) + 1]) < 15 else "big",
    }
    assert set(rules) == set(synthetic.TASKS)
    for task, rule in rules.items():
        for e in synthetic.examples(task, "test", n=60):
            assert e.choices[e.gold] == " " + rule(e.context.split()), (task, e)


def test_splits_disjoint():
    for fam in synthetic.FAMILIES:
        ctx = {s: [c for c, _, _ in synthetic.family_examples(fam, s, n=300)]
               for s in ("train", "validation", "test")}
        if fam.partitioned:  # inputs partitioned by a hash: no test query occurs in train
            assert not set(ctx["train"]) & set(ctx["test"])
            assert not set(ctx["train"]) & set(ctx["validation"])
            assert not set(ctx["validation"]) & set(ctx["test"])
            assert all(synthetic.split_of(c) == "test" for c in ctx["test"])
        else:  # the label family's 100 inputs are shared; the streams still differ
            assert ctx["train"] != ctx["test"]


@pytest.mark.parametrize("fam", synthetic.FAMILIES, ids=lambda f: f.name)
def test_zero_shot_at_chance_by_construction(fam):
    per_task = {t: synthetic.examples(t, "test", n=N) for t in fam.tasks}
    k = fam.n_choices
    # 1. Within a family, the query and the choice tuple are identical for every task, so
    #    nothing in a 0-shot prompt says which task is asked; only the gold index differs.
    for i in range(N):
        row = [per_task[t][i] for t in fam.tasks]
        assert len({(e.context, e.choices) for e in row}) == 1
        assert sorted(e.gold for e in row) == list(range(k))  # each task owns one choice
    # 2. Any demonstration-free rule scores exactly 1/k averaged over the family: e.g. the
    #    "most frequent answer across tasks" (a tie: each choice is gold for exactly one task),
    #    always the first position, or a random guess.
    rng = np.random.default_rng(0)
    guesses = {"first": [0] * N, "last": [k - 1] * N, "random": rng.integers(0, k, N).tolist()}
    for name, g in guesses.items():
        acc = np.mean([[per_task[t][i].gold == g[i] for i in range(N)] for t in fam.tasks])
        assert acc == pytest.approx(1 / k), name
    # 3. The gold position is uniform for every task (binomial sd at N=400 is <= 0.025).
    for t, exs in per_task.items():
        freq = np.bincount([e.gold for e in exs], minlength=k) / N
        assert np.abs(freq - 1 / k).max() < 0.08, (t, freq)
    # 4. A model that knows every rule but not the task, and prefers answers by how often
    #    they are right across the whole suite's train split, is still at chance on average.
    train = {t: synthetic.examples(t, "train", n=N) for t in fam.tasks}
    popular = Counter(e.choices[e.gold] for exs in train.values() for e in exs)
    picks = [max(range(k), key=lambda j: (popular[per_task[fam.tasks[0]][i].choices[j]], -j))
             for i in range(N)]
    acc = np.mean([[per_task[t][i].gold == picks[i] for i in range(N)] for t in fam.tasks])
    assert acc == pytest.approx(1 / k)


def test_prompt_layout_and_episode():
    text, query = synthetic.episode("letter_first", 3, split="test", index=2)
    parts = text.split("\n\n")
    assert len(parts) == 4 and parts[-1] == query.context
    assert query == synthetic.examples("letter_first", "test", n=3)[2]
    for demo in parts[:3]:
        assert demo.split(" -> ")[1] == demo.split()[0]  # letter_first demonstrations
    assert text == synthetic.episode("letter_first", 3, split="test", index=2)[0]
    assert synthetic.episode("letter_first", 0, split="test", index=2)[0] == query.context


def test_corpus_is_deterministic_training_text():
    a = synthetic.corpus(5, seed=1)
    assert a == synthetic.corpus(5, seed=1) and a != synthetic.corpus(5, seed=2)
    assert all("\n\n" in t and " -> " in t for t in a)
    vocab = set(synthetic.vocabulary())
    assert all(w in vocab for t in a for w in t.replace("\n", " \n ").split(" ") if w)


def test_bad_input():
    with pytest.raises(HeadlensError, match="did you mean"):
        synthetic.examples("letter_frist")
    with pytest.raises(HeadlensError, match="split"):
        synthetic.examples("letter_first", split="dev")
