"""The offline few-shot suite: 14 synthetic multiple-choice tasks the shipped model solves in context.

The 14 tasks come in four *families*. The tasks of one family read the same input, written
the same way, and differ only in the answer they give, so a query on its own does not say
which task it belongs to: the task can only be identified from the demonstrations.

===========  ================================  ==============================================
family       query context (example)           tasks and their answer for that input
===========  ================================  ==============================================
letter       ``q d m ->``                      letter_first q (copy), letter_upper M (the last
                                               letter in upper case), letter_index 17 (the
                                               first letter's alphabet position), letter_half
                                               early (the middle letter is in a..m) / late
number       ``17 24 ->``                      number_larger 24, number_smaller 17,
                                               number_order up (first < second) / down,
                                               number_parity odd (of the first); 1..28
label        ``17 ->``                         label_parity odd, label_flipped even (the
                                               parity labels swapped: an in-context label
                                               mapping), label_size big (small is < 15)
recall       ``c 13 f 22 a 5 q 9 ; f ->``      recall_value 22 (the value stored under the
                                               key), recall_next_key a, recall_size big (the
                                               stored value is >= 15)
===========  ================================  ==============================================

Within a family most tasks answer in a different kind of token (a letter, a number, a word),
so one demonstration shows which task is asked; two pairs answer in the same kind and must be
told apart by how the answer relates to the input (number_larger / number_smaller and
label_parity / label_flipped, the classic flipped-label test of in-context learning).

Every example's choices are the answers of *all* tasks of its family for that input (the
inputs are drawn so that these answers differ), in an order drawn once per input. So for a
given split, seed and index, every task of a family has the same context and the same choice
tuple; only ``gold`` differs. Any rule that does not see demonstrations therefore scores
exactly ``1 / n_choices`` on average over a family's tasks (0-shot is at chance by
construction), and no choice can be ruled out as "an answer no task gives".

A prompt is ``k`` demonstrations (``context + target``) and the query context, joined by a
blank line (``"\\n\\n"``); :func:`prompt` builds it and the shipped model is trained on exactly
this layout (:func:`episode_text`).

Splits draw from separate random streams; for the letter, number and recall families the
input space is also partitioned (a CRC-32 of the context: 80% train, 10% validation, 10% test),
so test queries never occur in train. The label family's input is one number 0..29 and its
answers are fixed functions of it, so its splits share inputs (documented, not hidden).
"""

from __future__ import annotations

import functools
import string
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from headlens.errors import HeadlensError, closest
from headlens.tasks.schema import Example

SPLITS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}
DEFAULT_N: dict[str, int] = {"train": 2500, "validation": 500, "test": 500}
SEPARATOR = "\n\n"
LETTERS = tuple(string.ascii_lowercase)
UPPER = tuple(string.ascii_uppercase)
N_NUMBERS = 30
NUMBERS = tuple(str(i) for i in range(N_NUMBERS))
# Tokens that occur only in the repeated random-token training sequences, so the vocabulary is
# large enough for induction probes of length >= 223 (Bansal et al.: L = 2 * seed + 25).
FILLER = tuple(str(i) for i in range(N_NUMBERS, 320))
WORDS = ("->", ";", "even", "odd", "small", "big", "early", "late", "up", "down")

_Input = tuple


@dataclass(frozen=True)
class Family:
    """Tasks that share one input format: a sampler, a context writer and one answer per task."""

    name: str
    tasks: tuple[str, ...]
    sample: Callable[[np.random.Generator], _Input]
    context: Callable[[_Input], str]
    answers: Callable[[_Input], tuple[str, ...]]
    partitioned: bool

    @property
    def n_choices(self) -> int:
        return len(self.tasks)


def _letters_sample(rng: np.random.Generator) -> _Input:
    return tuple(int(i) for i in rng.choice(26, size=3, replace=False))


def _letters_answers(x: _Input) -> tuple[str, ...]:
    a, b, c = x
    return LETTERS[a], UPPER[c], str(a + 1), "early" if b < 13 else "late"


def _numbers_sample(rng: np.random.Generator) -> _Input:
    return tuple(int(i) for i in rng.integers(1, N_NUMBERS - 1, size=2))


def _numbers_answers(x: _Input) -> tuple[str, ...]:
    a, b = x
    return str(max(a, b)), str(min(a, b)), "up" if a < b else "down", "even" if a % 2 == 0 else "odd"


def _label_sample(rng: np.random.Generator) -> _Input:
    return (int(rng.integers(0, N_NUMBERS)),)


def _label_answers(x: _Input) -> tuple[str, ...]:
    (n,) = x
    parity, flipped = ("even", "odd") if n % 2 == 0 else ("odd", "even")
    return parity, flipped, "small" if n < N_NUMBERS // 2 else "big"


def _recall_sample(rng: np.random.Generator) -> _Input:
    keys = rng.choice(26, size=4, replace=False)
    values = rng.choice(N_NUMBERS, size=4, replace=False)
    j = int(rng.integers(0, 3))  # not the last pair, so the next key exists
    return tuple(int(k) for k in keys) + tuple(int(v) for v in values) + (j,)


def _recall_context(x: _Input) -> str:
    keys, values, j = x[:4], x[4:8], x[8]
    pairs = " ".join(f"{LETTERS[k]} {v}" for k, v in zip(keys, values))
    return f"{pairs} ; {LETTERS[keys[j]]} ->"


def _recall_answers(x: _Input) -> tuple[str, ...]:
    keys, values, j = x[:4], x[4:8], x[8]
    return str(values[j]), LETTERS[keys[j + 1]], "small" if values[j] < N_NUMBERS // 2 else "big"


FAMILIES: tuple[Family, ...] = (
    Family("letter", ("letter_first", "letter_upper", "letter_index", "letter_half"),
           _letters_sample, lambda x: " ".join(LETTERS[i] for i in x) + " ->", _letters_answers, True),
    Family("number", ("number_larger", "number_smaller", "number_order", "number_parity"),
           _numbers_sample, lambda x: f"{x[0]} {x[1]} ->", _numbers_answers, True),
    Family("label", ("label_parity", "label_flipped", "label_size"),
           _label_sample, lambda x: f"{x[0]} ->", _label_answers, False),
    Family("recall", ("recall_value", "recall_next_key", "recall_size"),
           _recall_sample, _recall_context, _recall_answers, True),
)
TASKS: tuple[str, ...] = tuple(t for f in FAMILIES for t in f.tasks)
_FAMILY_OF: dict[str, tuple[int, Family]] = {t: (fi, f) for fi, f in enumerate(FAMILIES) for t in f.tasks}


def family(task: str) -> Family:
    """The :class:`Family` of ``task`` (raises with the valid names if unknown)."""
    if task not in _FAMILY_OF:
        raise HeadlensError(f"synthetic: unknown offline task {task!r}; {closest(task, TASKS)}")
    return _FAMILY_OF[task][1]


def chance(task: str) -> float:
    """Accuracy of a uniform guess: ``1 / n_choices`` (3 or 4 choices)."""
    return 1.0 / family(task).n_choices


def split_of(context: str) -> str:
    """The split a partitioned family's input belongs to: CRC-32 of the context mod 10."""
    r = zlib.crc32(context.encode()) % 10
    return "train" if r < 8 else ("validation" if r == 8 else "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise HeadlensError(f"synthetic: unknown split {split!r}; {closest(split, SPLITS)}")


def family_examples(fam: Family, split: str = "train", seed: int = 0,
                    n: int | None = None) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """The inputs of a family: ``(context, choices, gold index per task)`` for ``n`` draws.

    The random stream depends on (family, split, seed) only, never on the task, which is what
    makes the contexts and choice tuples identical across a family's tasks.
    """
    _check_split(split)
    n = DEFAULT_N[split] if n is None else n
    if n < 0:
        raise HeadlensError(f"synthetic: n must be >= 0, got {n}")
    # the tasks of a family share this draw: generate it once per (family, split, seed, n)
    return list(_family_draw(FAMILIES.index(fam), split, int(seed), n))


@functools.lru_cache(maxsize=64)
def _family_draw(fi: int, split: str, seed: int, n: int) -> tuple[tuple[str, tuple[str, ...], tuple[int, ...]], ...]:
    fam = FAMILIES[fi]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, SPLITS[split], fi, 0x5E1F])
    out = []
    while len(out) < n:
        x = fam.sample(rng)
        answers = fam.answers(x)
        if len(set(answers)) != len(answers) or "?" in answers:
            continue  # the tasks must disagree, or a choice would be right for two tasks
        ctx = fam.context(x)
        if fam.partitioned and split_of(ctx) != split:
            continue
        order = rng.permutation(len(answers))
        choices = tuple(" " + answers[i] for i in order)
        gold = tuple(int(np.flatnonzero(order == t)[0]) for t in range(len(answers)))
        out.append((ctx, choices, gold))
    return tuple(out)


def examples(task: str, split: str = "train", seed: int = 0, n: int | None = None) -> list[Example]:
    """``n`` examples of ``task`` (default 2,500 train / 500 validation / 500 test).

    Deterministic: the same (task, split, seed, n) always gives the same list, and a larger
    ``n`` extends a smaller one. Choices carry their leading space, exactly as scored.
    """
    fam = family(task)
    t = fam.tasks.index(task)
    return [Example(context=ctx, choices=choices, gold=gold[t], doc_id=i)
            for i, (ctx, choices, gold) in enumerate(family_examples(fam, split, seed, n))]


def prompt(demos: Sequence[Example], query: Example) -> str:
    """Demonstrations (``context + target``) and the query context, joined by a blank line."""
    return SEPARATOR.join([d.demo_text for d in demos] + [query.context])


def episode(task: str, shots: int, *, split: str = "test", seed: int = 0, index: int = 0,
            pool: Sequence[Example] | None = None) -> tuple[str, Example]:
    """A ``shots``-shot prompt for query ``index`` of ``split``: ``(prompt text, query)``.

    Demonstrations are drawn without replacement from the train split (``pool`` if given)
    with a generator seeded by (seed, index), never the query itself.
    """
    query = examples(task, split, seed, n=index + 1)[index]
    pool = list(pool) if pool is not None else examples(task, "train", seed)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, index, 0xDE30])
    candidates = [e for e in pool if e.context != query.context]
    if shots > len(candidates):
        raise HeadlensError(f"synthetic: {shots} shots need more than {len(candidates)} demonstrations")
    demos = [candidates[i] for i in rng.choice(len(candidates), size=shots, replace=False)]
    return prompt(demos, query), query


def episode_text(items: Sequence[Example]) -> str:
    """A training episode: every item as a demonstration, joined by blank lines.

    Item ``k`` is then a ``k``-shot query whose answer follows its context, exactly as in
    :func:`prompt`; the model is trained on the answers of every item.
    """
    return SEPARATOR.join(e.demo_text for e in items)


def training_episode(rng: np.random.Generator, pools: dict[str, Sequence[Example]],
                     max_items: int = 8, min_items: int = 1) -> tuple[str, list[Example]]:
    """A random task and min..max_items of its examples (0..max_items-1 shots): ``(task, items)``."""
    task = TASKS[int(rng.integers(len(TASKS)))]
    pool = pools[task]
    m = int(rng.integers(min_items, max_items + 1))
    return task, [pool[i] for i in rng.choice(len(pool), size=m, replace=False)]


def corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` texts from the shipped model's training distribution (few-shot episodes).

    Drawn from the validation split (inputs the model was not trained on), a random task and
    2..8 items each, for the layer-similarity analysis' offline text source.
    """
    if n < 0:
        raise HeadlensError(f"synthetic.corpus: n must be >= 0, got {n}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xC0B5])
    pools = {t: examples(t, "validation", seed=0, n=200) for t in TASKS}
    out = []
    for _ in range(n):
        _, items = training_episode(rng, pools, min_items=2)
        out.append(episode_text(items))
    return out


def vocabulary() -> tuple[str, ...]:
    """Every word the suite and the training sequences use (order: not by frequency)."""
    return ("\n",) + WORDS + LETTERS + UPPER + NUMBERS + FILLER
