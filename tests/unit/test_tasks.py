"""Task registry, document processors, local data and pinned 1-shot prompts (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headlens.errors import HeadlensError
from headlens.tasks.prompts import prepare
from headlens.tasks import Example, Task, get_task, task_names

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tasks"
STUDY = ["hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa", "winogrande", "boolq", "cb",
         "copa", "wic", "wsc", "multirc", "rte", "record"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from tests.builders import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok"))


# The exact 1-shot prompt of the first eval example of each fixture (seed 0), written out by
# hand from the classic harness templates (REFERENCE.md section 1), with choices and gold.
EXPECTED = {
    'hellaswag': (
        'Running: A girl ties her shoes. She starts jogging down the road.\n\nWashing dishes: A boy fills the sink. He',
        (' scrubs a plate with a sponge.', ' climbs into the sky.', ' eats the soap.', ' sells the sink.'), 0),
    'piqa': (
        'Question: open a jar\nAnswer: twist the lid\n\nQuestion: sharpen a pencil\nAnswer:',
        (' use a sharpener', ' use a spoon'), 0),
    'arc_easy': (
        'Question: What do plants need?\nAnswer: light\n\nQuestion: What do fish use to breathe?\nAnswer:',
        (' gills', ' lungs', ' fur', ' feet'), 0),
    'arc_challenge': (
        'Question: What is the boiling point of water in C?\nAnswer: 100\n\nQuestion: Which organ pumps blood?\nAnswer:',
        (' lung', ' heart', ' liver', ' skin'), 1),
    'openbookqa': (
        'Rain comes from clouds\n\nIce is water that is',
        (' hot', ' frozen', ' gas', ' red'), 1),
    'winogrande': (
        'The ball broke the window because the window was fragile.\n\nThe dog chased the cat because the dog',
        (' was hungry.', ' was hungry.'), 0),
    'boolq': (
        'Ice -- Ice is frozen water.\nQuestion: is ice cold?\nAnswer: yes\n\nCat -- Cats meow and purr.\nQuestion: do cats bark?\nAnswer:',
        (' no', ' yes'), 0),
    'cb': (  # a period after the hypothesis, also after one that has its own (harness v0.3)
        "She bought a book. I don't know if she liked it.\nQuestion: she read it.. True, False or Neither?\nAnswer: Neither\n\nTom ran home.\nQuestion: Tom moved. True, False or Neither?\nAnswer:",
        (' True', ' False', ' Neither'), 0),
    'copa': (
        'The glass broke because it fell down.\n\nThe child cried because',
        (' she lost her toy.', ' she ate cake.'), 0),
    'wic': (  # the word as inflected in sentence 1, not the lemma column
        "Sentence 1: The lights are on.\nSentence 2: The bag is light.\nQuestion: Is the word 'lights' used in the same way in the two sentences above?\nAnswer: no\n\nSentence 1: Kids played games.\nSentence 2: We saw a play.\nQuestion: Is the word 'played' used in the same way in the two sentences above?\nAnswer:",
        (' no', ' yes'), 0),
    'wsc': (  # demonstrations only from positive training examples
        'Passage: The trophy did not fit in the case because *it* was big.\nQuestion: In the passage above, does the pronoun "*it*" refer to "*trophy*"?\nAnswer: yes\n\nPassage: The dog bit the man because *it* was angry.\nQuestion: In the passage above, does the pronoun "*it*" refer to "*dog*"?\nAnswer:',
        (' no', ' yes'), 1),
    'multirc': (
        'Sam has a red bike. He rides it to school.\nQuestion: Where does Sam ride?\nAnswer: home\nIs the answer correct? no\n\nThe farm has cows and hens. The hens lay eggs.\nQuestion: What lays eggs?\nAnswer:',
        (' hens\nIs the answer correct? no', ' hens\nIs the answer correct? yes'), 1),
    'rte': (
        'Lee won the race.\nQuestion: Lee ran. True or False?\nAnswer: True\n\nThe tea is hot.\nQuestion: The tea is cold. True or False?\nAnswer:',
        (' True', ' False'), 1),
    'record': (  # the demonstration's target fills in the first of the sorted answers
        'Rome and Paris sent bands to the fair.\n\n  - Two cities send bands.\n  - A band came from Paris\n\nLeo flew to Lima with Mia.\n\n  - Leo in Lima.\n',
        ('  - Leo is a city', '  - Lima is a city', '  - Mia is a city'), 1),
}


def test_registry_has_the_14_study_tasks():
    assert task_names("study") == STUDY
    assert task_names("all") == STUDY
    for name in STUDY:
        task = get_task(name)
        assert isinstance(task, Task) and task.version >= 1 and task.importance_split == task.train_split
    assert get_task("arc_easy").eval_split == "test" and get_task("boolq").eval_split == "validation"
    assert get_task("record").metric == "record_em" and get_task("multirc").metric == "multirc"


def test_offline_group_is_empty_or_listed():
    names = task_names("offline")
    assert isinstance(names, list) and not set(names) & set(STUDY)


def test_unknown_task_and_group_suggest_closest():
    with pytest.raises(HeadlensError, match="did you mean hellaswag"):
        get_task("hellaswg")
    with pytest.raises(HeadlensError, match="unknown group"):
        task_names("studdy")


@pytest.mark.parametrize("name", STUDY)
def test_pinned_one_shot_prompt(name, tok):
    prompt, choices, gold = EXPECTED[name]
    prep = prepare(tok, name, 1, data_dir=FIXTURES, limit=1)
    item = prep.items[0]
    assert item.prompt == prompt
    assert item.example.choices == choices and item.gold == gold and item.n_demos == 1
    # continuation tokens = tokenize(context + choice) minus tokenize(context), no BOS added
    ex = item.example
    prefix = prompt[: len(prompt) - len(ex.context)]
    for j, choice in enumerate(choices):
        ctx = prefix + (ex.contexts[j] if ex.contexts is not None else ex.context)
        ctx_ids = tok(ctx.rstrip(), add_special_tokens=False)["input_ids"]
        whole = tok(ctx + choice, add_special_tokens=False)["input_ids"]
        assert item.context_for(j) == ctx_ids
        assert item.choice_ids[j] == whole[len(ctx_ids):]


def test_hellaswag_markup_is_cleaned():
    from headlens.tasks.processors import hellaswag

    doc = {"activity_label": "Home", "ctx_a": "[header] How to x [title] Fill a can.", "ctx_b": "then",
           "endings": ["pour it [step] slowly.", "b"], "label": "0"}
    ex = hellaswag(doc, None)
    assert ex.context == "Home: How to x. Fill a can. Then"
    assert ex.choices == (" pour it slowly.", " b")


def test_record_gold_set_and_multirc_groups():
    ex = get_task("record").examples("validation", FIXTURES)
    assert ex[1].choices == ("  - The car went to Jo", "  - The car went to Kim") and ex[1].gold_set == (0,)
    mrc = get_task("multirc").examples("validation", FIXTURES)
    assert [e.group for e in mrc] == ["0-0", "0-0", "0-0", "0-1", "0-1"]


def test_demonstrations_are_seeded_and_never_the_query(tok):
    task = get_task("piqa")
    a = prepare(tok, task, 2, split="train", data_dir=FIXTURES, seed=3)
    b = prepare(tok, task, 2, split="train", data_dir=FIXTURES, seed=3)
    assert [i.prompt for i in a.items] == [i.prompt for i in b.items]
    for item in a.items:
        demos = item.prompt.split("\n\n")[:-1]
        assert len(demos) == 2 and item.example.context not in demos[0] and item.example.context not in demos[1]
    with pytest.raises(HeadlensError, match="3 shots need 4 train documents"):
        prepare(tok, task, 3, split="train", data_dir=FIXTURES)


def test_truncation_drops_oldest_demo_then_skips(tok):
    full = prepare(tok, "boolq", 2, data_dir=FIXTURES, limit=1)
    item = full.items[0]
    need = max(len(c) for c in item.choice_ids) + len(item.context_ids)
    cut = prepare(tok, "boolq", 2, data_dir=FIXTURES, limit=1, max_len=need - 1)
    assert cut.truncated == 1 and cut.items[0].n_demos == 1
    # the kept demonstration is the newer (second) one
    assert cut.items[0].prompt == item.prompt.split("\n\n", 1)[1]
    # nothing fits even without demonstrations: nothing to score is an error, not acc=nan
    with pytest.raises(HeadlensError, match="all 1 queries of split 'validation' are longer than the context"):
        prepare(tok, "boolq", 2, data_dir=FIXTURES, limit=1, max_len=3)


def test_missing_column_in_local_files_is_named(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "validation.jsonl").write_text('{"goal": "g", "sol1": "a", "label": 0}\n')
    with pytest.raises(HeadlensError, match="no column 'sol2'"):
        get_task("piqa").examples("validation", tmp_path)


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "validation.jsonl").write_text("\n")
    with pytest.raises(HeadlensError, match="is empty"):
        get_task("piqa").examples("validation", tmp_path)


def test_parquet_files_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "x", "question": "q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    (ex,) = get_task("arc_easy").examples("test", tmp_path)
    assert ex.context == "Question: q?\nAnswer:" and ex.choices == (" a", " b") and ex.gold == 1


def tiny_generator(split, seed, n=4, word="cat"):
    """A python source for the test below: copy the word after 'say'."""
    return [Example(context=f"say {word}{i}:", choices=(f" {word}{i}", " dog"), gold=0) for i in range(n + (split == "train"))]


def test_python_source_kind(tmp_path):
    spec = tmp_path / "gen.yaml"
    spec.write_text(
        "name: gen\nversion: 2\nmetric: acc\n"
        "source: {kind: python, function: 'tests.unit.test_tasks:tiny_generator', args: {n: 3, word: cow}}\n"
        "splits: {train: train, eval: test}\n")
    task = get_task(str(spec))
    assert task.name == "gen" and task.version == 2
    ex = task.examples("test")
    assert [e.context for e in ex] == ["say cow0:", "say cow1:", "say cow2:"] and [e.doc_id for e in ex] == [0, 1, 2]
    assert len(task.examples("train")) == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nversion: 1\nmetric: acc\nsource: {kind: python, function: 'nope.mod:fn'}\n")
    with pytest.raises(HeadlensError, match="cannot import"):
        get_task(str(bad)).examples("test")


def test_yaml_task_with_local_files_and_bad_keys(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"q": "1+1", "a": 0}\n{"q": "2+2", "a": 1}\n')
    (tmp_path / "d" / "test.jsonl").write_text('{"q": "3+3", "a": 1}\n')
    spec = tmp_path / "sum.toml"
    spec.write_text('name = "sum"\nversion = 1\nmetric = "acc"\nsource = {kind = "files", path = "d"}\n'
                    'splits = {train = "train", eval = "test"}\n'
                    '[template]\ncontext = "Sum {q} ="\nchoices = [" two", " six"]\ngold = "a"\n')
    task = get_task(str(spec))
    (ex,) = task.examples("test")
    assert ex.context == "Sum 3+3 =" and ex.gold == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nmetric: acc\nsource: {kind: hub, path: a/b}\ntemplte: {}\n")
    with pytest.raises(HeadlensError, match="unknown keys"):
        get_task(str(bad))
    bad.write_text("name: x\nversion: 1\nmetric: accc\nsource: {kind: hub, path: a/b}\n")
    with pytest.raises(HeadlensError, match="did you mean acc"):
        get_task(str(bad))


def test_data_dir_without_files_is_used_as_a_datasets_cache(tmp_path, monkeypatch):
    import datasets

    seen = {}

    def fake_load(path, name=None, split=None, **kwargs):
        seen.update(path=path, name=name, split=split, **kwargs)
        return [{"passage": "p", "question": "q", "label": 1}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (ex,) = get_task("boolq").examples("validation", tmp_path)
    assert seen == {"path": "aps/super_glue", "name": None, "split": "validation", "cache_dir": str(tmp_path),
                    "revision": "refs/convert/parquet", "data_files": {"validation": "boolq/validation/*.parquet"}}
    assert ex.context == "p\nQuestion: q?\nAnswer:" and ex.gold == 1


def test_hub_failure_offline_is_one_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'aps/super_glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HeadlensError, match="cannot load split 'train' of aps/super_glue/cb .*--data-dir"):
        get_task("cb").examples("train")


def test_truncation_keeps_the_largest_fitting_number_of_demos(tok):
    """Against brute force: for every limit, k is the largest count whose exact prompt fits."""
    full = prepare(tok, "piqa", 3, data_dir=FIXTURES)
    for item in full.items:
        demos = item.prompt.split("\n\n")[:-1]
        ex = item.example

        def longest(k):
            ctx = "".join(d + "\n\n" for d in demos[len(demos) - k:]) + ex.context
            n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
            return max(len(tok(ctx + c, add_special_tokens=False)["input_ids"]) for c in ex.choices), n_ctx

        sizes = [longest(k)[0] for k in range(4)]
        for limit in range(sizes[0] - 1, sizes[3] + 2):
            want = max((k for k in range(4) if sizes[k] <= limit), default=None)
            try:
                items = prepare(tok, "piqa", 3, data_dir=FIXTURES, limit=len(full.items), max_len=limit).items
            except HeadlensError as err:  # every query skipped
                assert "nothing to score" in str(err)
                items = []
            got = next((i for i in items if i.example.doc_id == ex.doc_id), None)
            assert (got.n_demos if got else None) == want, limit


def test_unlabelled_split_says_which_split_to_use(tmp_path):
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande" / "test.jsonl").write_text(
        '{"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": ""}\n')
    with pytest.raises(HeadlensError, match="unlabelled splits cannot be scored, use --split validation"):
        get_task("winogrande").examples("test", tmp_path)


class CharTokenizer:
    """A fast stand-in tokenizer (one id per character) for tests that check prompt text only."""

    bos_token_id = eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def demo_inputs(item, separator="\n\n"):
    """The input (context) of each demonstration of an offline-suite prompt: text before the answer."""
    return [d.rsplit(" ", 1)[0] for d in item.prompt.split(separator)[:-1]]


@pytest.mark.parametrize("split", ["test", "train"])
def test_no_offline_prompt_repeats_the_query_input_as_a_demonstration(split):
    """5-shot prompts of every offline task, on the eval split and on the importance split.

    The label family has 30 inputs, so the train split repeats every test input under other
    doc_ids; before exclusion by content, 16% (test) and 20% (train) of its prompts held the
    query's own input as a demonstration.
    """
    names = task_names("offline")
    assert len(names) == 14
    tok = CharTokenizer()
    train_inputs = {e.context for e in get_task("label_parity").examples("train")}
    assert any(e.context in train_inputs for e in get_task("label_parity").examples("test"))  # the trap exists
    for name in names:
        prep = prepare(tok, name, 5, split=split, limit=500)
        assert len(prep.items) == 500 and prep.truncated == 0
        for item in prep.items:
            inputs = demo_inputs(item)
            assert len(inputs) == 5 and item.example.context not in inputs, (name, item.example.doc_id)


def test_demo_draw_excludes_by_content_and_keeps_the_plain_draw_otherwise():
    import numpy as np

    from headlens.tasks.prompts import DemoPool, draw_demos

    pool = [Example(context=f"{i % 4} ->", choices=(" a", " b"), gold=i % 2, doc_id=i) for i in range(12)]
    query = Example(context="1 ->", choices=(" a", " b"), gold=0, doc_id=5)
    other = DemoPool(tuple(pool), same_split=False)
    same = DemoPool(tuple(pool), same_split=True)
    assert other.excluded(query) == {1, 5, 9}
    for seed in range(20):
        demos = draw_demos(other, query, 6, seed)
        assert len(demos) == 6 and len({d.doc_id for d in demos}) == 6 and all(d.context != "1 ->" for d in demos)
    fresh = Example(context="new ->", choices=(" a", " b"), gold=0, doc_id=3)
    assert same.excluded(fresh) == {3} and other.excluded(fresh) == set()
    # nothing to exclude: exactly the plain seeded draw (prompts of such tasks did not change)
    picks = np.random.default_rng((7, 3)).choice(12, size=4, replace=False)
    assert draw_demos(other, fresh, 4, 7) == [pool[i] for i in picks]
    # per-choice contexts (Winogrande): sharing any of them is sharing the input
    wino = Example(context="x A", choices=(" r", " r"), gold=0, contexts=("x A", "x B"))
    twin = Example(context="x B", choices=(" s", " s"), gold=1, contexts=("x A", "x B"), doc_id=1)
    assert DemoPool((twin,), same_split=False).excluded(wino) == {0}


def test_too_few_demonstration_candidates_is_an_error(tmp_path):
    rows = [{"context": "same ->", "choices": [" a", " b"], "gold": 0}] * 3 + [
        {"context": "other ->", "choices": [" a", " b"], "gold": 1}]
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(HeadlensError, match="document 0 of split 'test' has 1 demonstration candidates"):
        prepare(CharTokenizer(), str(path), 2)
    assert prepare(CharTokenizer(), str(path), 1).items[0].prompt == "other -> b\n\nsame ->"


def test_wsc_demonstrations_are_positive_training_examples(tok):
    task = get_task("wsc")
    assert task.demo_gold == 1
    prep = prepare(tok, task, 2, data_dir=FIXTURES)
    for item in prep.items:
        answers = [d.rsplit("\nAnswer:", 1)[1] for d in item.prompt.split("\n\n")[:-1]]
        assert answers == [" yes", " yes"]
    with pytest.raises(HeadlensError, match="3 shots need 3 train documents with gold 1, split 'train' has 2"):
        prepare(tok, task, 3, data_dir=FIXTURES)


def test_record_sorts_answers_and_keeps_documents_no_entity_matches():
    train = get_task("record").examples("train", FIXTURES)
    assert train[3].target == "  - A band came from Paris"  # answers ["Rome", "Paris", "Rome"] sorted
    val = get_task("record").examples("validation", FIXTURES)
    assert len(val) == 3 and val[2].doc_id == 2
    assert val[2].choices == ("  - Dan went to the zoo", "  - Eva went to the zoo") and val[2].gold_set == ()


def test_cb_template_puts_a_period_after_the_hypothesis():
    ex = get_task("cb").examples("validation", FIXTURES)[1]
    assert ex.context == "The box is empty.\nQuestion: the box is full. True, False or Neither?\nAnswer:"
    assert ex.choices == (" True", " False", " Neither") and ex.gold == 1


def test_fixtures_carry_the_real_data_quirks():
    import collections

    assert all(" -- " in e.context.split("\n")[0] for e in get_task("boolq").examples("train", FIXTURES))
    rows = [json.loads(x) for x in (FIXTURES / "wic" / "train.jsonl").read_text().splitlines()]
    inflected = [r for r in rows if r["sentence1"][r["start1"]:r["end1"]] != r["word"]]
    assert inflected and all(f"'{r['sentence1'][r['start1']:r['end1']]}'" in e.context
                             for r, e in zip(rows, get_task("wic").examples("train", FIXTURES)) if r in inflected)
    for split in ("train", "validation"):
        groups = collections.Counter(e.group for e in get_task("multirc").examples(split, FIXTURES))
        assert min(groups.values()) >= 2
    hyps = [json.loads(x)["hypothesis"] for x in (FIXTURES / "cb" / "train.jsonl").read_text().splitlines()]
    assert any(h.endswith(".") for h in hyps) and any(not h.endswith(".") for h in hyps)


# --- hub sources: data files only (datasets >= 4 refuses loading scripts) ---

def config_of(task):
    return task.source.get("name") or "default"


@pytest.mark.parametrize("name", STUDY)
def test_every_study_source_reads_the_parquet_conversion(name):
    from headlens.tasks.sources import hub_arguments

    task = get_task(name)
    for split in (task.train_split, task.eval_split):
        args, kwargs = hub_arguments(task, split)
        # no config name: with data_files, datasets reads the files and never looks for a script
        assert args == (task.source["path"],)
        assert kwargs == {"split": split, "revision": "refs/convert/parquet",
                          "data_files": {split: f"{config_of(task)}/{split}/*.parquet"}}


def test_hub_call_is_what_load_dataset_receives(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"premise": "p.", "hypothesis": "h", "label": 2}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (ex,) = get_task("cb").examples("validation")
    assert calls == [(("aps/super_glue",), {"split": "validation", "revision": "refs/convert/parquet",
                                             "data_files": {"validation": "cb/validation/*.parquet"}})]
    assert ex.context == "p.\nQuestion: h. True, False or Neither?\nAnswer:" and ex.gold == 2


def test_hub_loader_reads_data_files_through_datasets(tmp_path):
    """The real ``datasets`` path on local files laid out like the hub's parquet conversion."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "super_glue"
    rows = {"train": [{"premise": f"P{i}.", "hypothesis": f"h{i}", "idx": i, "label": i % 3} for i in range(3)],
            "validation": [{"premise": "Q.", "hypothesis": "q", "idx": 0, "label": 1}]}
    for split, docs in rows.items():
        (repo / "cb" / split).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(docs), repo / "cb" / split / "0000.parquet")
    task = dataclasses.replace(get_task("cb"), source={
        "kind": "hub", "path": str(repo), "name": "cb", "revision": "refs/convert/parquet",
        "data_files": "cb/{split}/*.parquet"})
    cache = tmp_path / "hf-cache"  # no <task>/<split> files there: used as the datasets cache
    train = task.examples("train", cache)
    assert [e.context for e in train] == [f"P{i}.\nQuestion: h{i}. True, False or Neither?\nAnswer:" for i in range(3)]
    assert [e.gold for e in task.examples("validation", cache)] == [1]
    # JSON lines through a per-split mapping work the same way
    (repo / "json").mkdir()
    (repo / "json" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows["validation"]))
    task = dataclasses.replace(task, source={"kind": "hub", "path": str(repo),
                                             "data_files": {"validation": "json/dev.jsonl"}})
    assert [e.gold for e in task.examples("validation", cache)] == [1]
    with pytest.raises(HeadlensError, match="data_files has no entry for split 'train'"):
        task.examples("train", cache)


# --- bad input: one-line errors ---

def test_zero_shot_query_longer_than_the_context_is_skipped(tok):
    """0 shots (no demonstration to drop): a query that does not fit is skipped, not an IndexError."""
    full = prepare(tok, "boolq", 0, data_dir=FIXTURES)
    sizes = [len(i.context_ids) + max(len(c) for c in i.choice_ids) for i in full.items]
    assert sizes[0] != sizes[1]
    prep = prepare(tok, "boolq", 0, data_dir=FIXTURES, max_len=min(sizes))
    assert prep.skipped == 1 and len(prep.items) == 1 and prep.truncated == 0
    assert prep.items[0].example.doc_id == sizes.index(min(sizes))
    with pytest.raises(HeadlensError, match="all 2 queries .* nothing to score"):
        prepare(tok, "boolq", 0, data_dir=FIXTURES, max_len=min(sizes) - 1)


def one_line_error(call) -> str:
    with pytest.raises(HeadlensError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_latin1_and_binary_task_files_are_one_line_errors(tmp_path):
    spec = tmp_path / "latin.yaml"
    spec.write_bytes("name: caf\u00e9\nversion: 1\nmetric: acc\nsource: {kind: hub, path: a/b}\n".encode("latin-1"))
    assert "not UTF-8 text (byte 0xe9 at offset 9)" in one_line_error(lambda: get_task(str(spec)))
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "validation.jsonl").write_bytes(
        '{"goal": "caf\u00e9", "sol1": "a", "sol2": "b", "label": 0}\n'.encode("latin-1"))
    message = one_line_error(lambda: get_task("piqa").examples("validation", tmp_path))
    assert message.startswith(f"{tmp_path / 'piqa' / 'validation.jsonl'}: not UTF-8 text")
    (tmp_path / "piqa" / "validation.jsonl").unlink()
    (tmp_path / "piqa" / "validation.parquet").write_bytes(bytes(range(256)) * 4)
    assert "not a readable parquet file" in one_line_error(lambda: get_task("piqa").examples("validation", tmp_path))
    binary = tmp_path / "blob.yaml"
    binary.write_bytes(bytes(range(256)))
    assert one_line_error(lambda: get_task(str(binary))).startswith(f"{binary}: not UTF-8 text")


@pytest.mark.parametrize("extra, problem", [
    ("splits: {train: train, evaluation: test}\n", "unknown keys ['evaluation'] under splits; allowed: train, eval, importance"),
    ("template: {context: 'Q {q}', choices: [' a', ' b'], gold: a, gold_mapping: {}}\n",
     "unknown keys ['gold_mapping'] under template; allowed: context, choices, choices_field"),
    ("template: {context: 'Q {q}', choices: [' a', ' b'], gold: a}\nprocessor: copa\n", "read only by processor 'template'"),
    ("splits: [train, test]\n", "splits must be a mapping"),
])
def test_unknown_keys_in_a_task_file_are_named_with_the_allowed_ones(extra, problem, tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\nversion: 1\nmetric: acc\nsource: {kind: hub, path: a/b}\n" + extra)
    assert problem in one_line_error(lambda: get_task(str(spec)))


def test_unknown_source_keys_are_named(tmp_path):
    spec = tmp_path / "t.yaml"
    spec.write_text("name: t\nversion: 1\nmetric: acc\nsource: {kind: hub, path: a/b, config: x}\n"
                    "template: {context: 'Q', choices: [' a', ' b'], gold: a}\n")
    assert "unknown keys ['config'] under source (kind hub); allowed: kind, path, name, revision" in one_line_error(
        lambda: get_task(str(spec)))
    spec.write_text("name: t\nversion: 1\nmetric: acc\nsource: {kind: hub, path: a/b, data_files: 'x.parquet'}\n"
                    "template: {context: 'Q', choices: [' a', ' b'], gold: a}\n")
    assert "must contain '{split}'" in one_line_error(lambda: get_task(str(spec)))


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_below_one_is_an_error(limit, tok):
    from headlens.tasks.prompts import check_limit

    assert "--limit must be >= 1" in one_line_error(lambda: check_limit(limit, "--limit"))
    assert "limit must be >= 1" in one_line_error(lambda: prepare(tok, "piqa", 0, data_dir=FIXTURES, limit=limit))


def test_prompt_version_is_in_every_task_key():
    from headlens.tasks.schema import PROMPT_VERSION

    assert PROMPT_VERSION >= 2
    assert get_task("piqa").key["prompt_version"] == PROMPT_VERSION
    assert get_task("label_parity").key["prompt_version"] == PROMPT_VERSION
    assert (get_task("cb").version, get_task("wsc").version, get_task("record").version) == (2, 2, 2)
