"""Task registry, document processors, local data and pinned 1-shot prompts (no model)."""

from __future__ import annotations

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
        'Ice is frozen water.\nQuestion: is ice cold?\nAnswer: yes\n\nCats meow and purr.\nQuestion: do cats bark?\nAnswer:',
        (' no', ' yes'), 0),
    'cb': (
        'She bought a book.\nQuestion: She read it True, False or Neither?\nAnswer: Neither\n\nTom ran home.\nQuestion: Tom moved True, False or Neither?\nAnswer:',
        (' True', ' False', ' Neither'), 0),
    'copa': (
        'The glass broke because it fell down.\n\nThe child cried because',
        (' she lost her toy.', ' she ate cake.'), 0),
    'wic': (
        "Sentence 1: The light is on.\nSentence 2: The bag is light.\nQuestion: Is the word 'light' used in the same way in the two sentences above?\nAnswer: no\n\nSentence 1: Kids play games.\nSentence 2: We saw a play.\nQuestion: Is the word 'play' used in the same way in the two sentences above?\nAnswer:",
        (' no', ' yes'), 0),
    'wsc': (
        'Passage: Jane called Sue but *she* didn\'t answer.\nQuestion: In the passage above, does the pronoun "*she*" refer to "*Jane*"?\nAnswer: no\n\nPassage: The dog bit the man because *it* was angry.\nQuestion: In the passage above, does the pronoun "*it*" refer to "*dog*"?\nAnswer:',
        (' no', ' yes'), 1),
    'multirc': (
        'Sam has a red bike. He rides it to school.\nQuestion: Where does Sam ride?\nAnswer: to school\nIs the answer correct? yes\n\nThe farm has cows and hens. The hens lay eggs.\nQuestion: What lays eggs?\nAnswer:',
        (' hens\nIs the answer correct? no', ' hens\nIs the answer correct? yes'), 1),
    'rte': (
        'Lee won the race.\nQuestion: Lee ran. True or False?\nAnswer: True\n\nThe tea is hot.\nQuestion: The tea is cold. True or False?\nAnswer:',
        (' True', ' False'), 1),
    'record': (
        'Tom beat Max at chess.\n\n  - Tom wins.\n  - Max lost the game\n\nLeo flew to Lima with Mia.\n\n  - Leo in Lima.\n',
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
    assert [e.group for e in mrc] == ["0-0", "0-0", "0-1"]


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
    none = prepare(tok, "boolq", 2, data_dir=FIXTURES, limit=1, max_len=3)
    assert none.skipped == 1 and none.items == []


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
    assert seen == {"path": "aps/super_glue", "name": "boolq", "split": "validation", "cache_dir": str(tmp_path)}
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
            prep = prepare(tok, "piqa", 3, data_dir=FIXTURES, limit=len(full.items), max_len=limit)
            got = next((i for i in prep.items if i.example.doc_id == ex.doc_id), None)
            assert (got.n_demos if got else None) == want, limit


def test_unlabelled_split_says_which_split_to_use(tmp_path):
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande" / "test.jsonl").write_text(
        '{"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": ""}\n')
    with pytest.raises(HeadlensError, match="unlabelled splits cannot be scored, use --split validation"):
        get_task("winogrande").examples("test", tmp_path)
