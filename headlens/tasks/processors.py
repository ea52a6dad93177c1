"""Document processors: one hub/local document (a dict of columns) -> :class:`Example` s.

``template`` is the generic processor driven by a task's ``template`` entry; the others are
named processors for the tasks whose documents need more than filling a format string.
They are looked up by name in :data:`PROCESSORS` (a plain dict: never ``eval``). The
templates are the classic lm-evaluation-harness ones the study used (REFERENCE.md §1).

Every processor takes ``(doc, task)`` and returns one Example, a list of them, or ``None``
(document dropped). ``doc_id`` is filled in by the caller.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import Any

from headlens.errors import HeadlensError
from headlens.tasks.schema import Example


class MissingColumn(KeyError):
    """A document lacks a column the task needs (turned into a HeadlensError by the loader)."""


def column(doc: Mapping, path: str) -> Any:
    """Value at a dotted column path, e.g. ``choices.text`` -> ``doc["choices"]["text"]``."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise MissingColumn(path)
        value = value[part]
    return value


class _Columns(dict):
    def __missing__(self, key):
        raise MissingColumn(key)


def fill(template: str, doc: Mapping) -> str:
    """``template.format_map(doc)`` with a MissingColumn error naming the absent column."""
    return template.format_map(_Columns(doc))


def _gold_index(doc: Mapping, spec: Mapping, n_choices: int, task) -> int:
    value = column(doc, spec["gold"])
    if "gold_index_in" in spec:
        labels = [str(x).strip() for x in column(doc, spec["gold_index_in"])]
        key = str(value).strip()
        if key not in labels:
            raise HeadlensError(f"task {task.name}: answer {key!r} is not one of the labels {labels}")
        return labels.index(key)
    if "gold_map" in spec:
        mapping = {str(k): int(v) for k, v in spec["gold_map"].items()}
        if str(value) not in mapping:
            raise HeadlensError(f"task {task.name}: answer {value!r} not in gold_map {sorted(mapping)}")
        return mapping[str(value)]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HeadlensError(f"task {task.name}: column {spec['gold']!r} holds {value!r}, "
                            f"expected an integer choice index (use gold_map or gold_index_in)") from None


def template(doc: Mapping, task) -> Example:
    """Fill ``task.template``: context format string, choices (list or column), gold column."""
    spec = task.template
    context = fill(spec["context"], doc)
    if "choices" in spec:
        choices = [fill(c, doc) for c in spec["choices"]]
    else:
        fmt = spec.get("choice_format", " {}")
        choices = [fmt.replace("{}", str(c)) for c in column(doc, spec["choices_field"])]
    gold = _gold_index(doc, spec, len(choices), task)
    target = fill(spec["target"], doc) if "target" in spec else None
    return Example(context=context, choices=tuple(choices), gold=gold, target=target)


def _hellaswag_clean(text: str) -> str:
    # WikiHow rows carry markup like "[title]" and "[step]"; the harness drops it
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag(doc: Mapping, task) -> Example:
    """``{activity_label}: {ctx_a} {ctx_b capitalised}``; endings scored with a leading space."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    context = _hellaswag_clean(doc["activity_label"] + ": " + ctx)
    choices = tuple(" " + _hellaswag_clean(e) for e in doc["endings"])
    label = str(doc["label"]).strip()
    return Example(context=context, choices=choices, gold=int(label) if label else -1)  # test: unlabelled


def copa(doc: Mapping, task) -> Example:
    """Premise without its final period + " because" / " therefore"; lower-cased alternative."""
    connector = {"cause": " because", "effect": " therefore"}[doc["question"]]
    context = doc["premise"].strip()[:-1] + connector

    def lower_first(text: str) -> str:
        return " " + text[:1].lower() + text[1:]

    return Example(context=context, choices=(lower_first(doc["choice1"]), lower_first(doc["choice2"])),
                   gold=int(doc["label"]))


def winogrande(doc: Mapping, task) -> Example:
    """Partial scoring: each option fills the blank as *context*; the rest is the continuation.

    ``contexts[i]`` is the sentence up to the blank with option i; every choice is the same
    text after the blank, so the score compares how well each filled-in context predicts it.
    """
    sentence = doc["sentence"]
    cut = sentence.index("_")
    rest = " " + sentence[cut + 1:].strip()
    contexts = tuple(sentence[:cut] + doc[key] for key in ("option1", "option2"))
    gold = {"1": 0, "2": 1}.get(str(doc["answer"]).strip(), -1)  # test split: no answer
    return Example(context=contexts[gold], choices=(rest, rest), gold=gold, contexts=contexts)


def wic(doc: Mapping, task) -> Example:
    """Two sentences and the word as it appears in sentence 1; " no" / " yes"."""
    word = doc["sentence1"][doc["start1"]:doc["end1"]]
    context = (f"Sentence 1: {doc['sentence1']}\nSentence 2: {doc['sentence2']}\nQuestion: Is the "
               f"word '{word}' used in the same way in the two sentences above?\nAnswer:")
    return Example(context=context, choices=(" no", " yes"), gold=int(doc["label"]))


def _detokenize(text: str) -> str:
    # WSC texts are whitespace-tokenised; glue punctuation and contractions back on
    for a, b in ((" n't", "n't"), (" )", ")"), ("( ", "("), ('" ', '"'), (' "', '"')):
        text = text.replace(a, b)
    return re.sub(r" ([.,'])", r"\1", text)


def wsc(doc: Mapping, task) -> Example:
    """The passage with the pronoun starred; asks whether it refers to the noun; " no"/" yes"."""
    text = doc["text"]
    pre = " ".join(text.split()[: doc["span2_index"]])
    post = text[len(pre) + len(doc["span2_text"]) + 1:]
    passage = _detokenize(pre + f" *{doc['span2_text']}*" + post)
    context = (f"Passage: {passage}\nQuestion: In the passage above, does the pronoun "
               f"\"*{doc['span2_text']}*\" refer to \"*{doc['span1_text']}*\"?\nAnswer:")
    return Example(context=context, choices=(" no", " yes"), gold=int(doc["label"]))


def multirc(doc: Mapping, task) -> Example:
    """One candidate answer: " {answer}\\nIs the answer correct? no|yes"; grouped by question."""
    context = f"{doc['paragraph']}\nQuestion: {doc['question']}\nAnswer:"
    choices = tuple(f" {doc['answer']}\nIs the answer correct? {yn}" for yn in ("no", "yes"))
    idx = doc["idx"]
    return Example(context=context, choices=choices, gold=int(doc["label"]),
                   group=f"{idx['paragraph']}-{idx['question']}")


def _normalise_answer(text: str) -> str:
    # SQuAD-style normalisation used by ReCoRD exact match
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def record(doc: Mapping, task) -> Example | None:
    """Passage with its highlights as bullets; each candidate entity fills the query.

    As lm-evaluation-harness v0.3: entities and answers are de-duplicated and sorted; a
    demonstration's target fills the query with the first sorted answer. ``gold_set`` holds
    every entity whose normalised text equals a normalised answer, so "prediction in
    gold_set" is ReCoRD's max-over-answers exact match. A document whose answers match no
    entity is kept with an empty ``gold_set`` (always scored wrong, as the harness scores
    it; ``gold`` 0 is a placeholder). A document without answers (the unlabelled test
    split) gets gold -1; one without entities cannot be scored and is dropped.
    """
    initial, *highlights = doc["passage"].strip().split("\n@highlight\n")
    context = initial + "\n\n" + "".join(f"  - {h}.\n" for h in highlights)
    entities = sorted(set(doc["entities"]))
    answers = sorted(set(doc["answers"]))
    if not entities:
        return None
    choices = tuple(f"  - {doc['query']}".replace("@placeholder", e) for e in entities)
    if not answers:
        return Example(context=context, choices=choices, gold=-1)
    normal = {_normalise_answer(a) for a in answers}
    gold_set = tuple(i for i, e in enumerate(entities) if _normalise_answer(e) in normal)
    target = f"  - {doc['query']}".replace("@placeholder", answers[0])
    return Example(context=context, choices=choices, gold=gold_set[0] if gold_set else 0, target=target,
                   gold_set=gold_set)


PROCESSORS: dict[str, Callable[[Mapping, Any], Example | list[Example] | None]] = {
    "template": template,
    "hellaswag": hellaswag,
    "copa": copa,
    "winogrande": winogrande,
    "wic": wic,
    "wsc": wsc,
    "multirc": multirc,
    "record": record,
}
