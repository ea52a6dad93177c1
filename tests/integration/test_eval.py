"""Scoring against Hugging Face logits, reproducibility, gates, and `headlens eval` on all 14 tasks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from headlens.errors import HeadlensError
from headlens.model.gates import ones
from headlens.tasks.prompts import prepare
from headlens.analyses.scoring import choice_logprobs, evaluate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tasks"


def run_cli(args, capsys, monkeypatch):
    """Run ``headlens <args>`` in-process; return (exit code, stdout, stderr)."""
    from headlens import cli

    monkeypatch.setattr(sys, "argv", ["headlens", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as ex:
        code = ex.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


_HF: dict = {}


def hf_model(tiny_dir, arch):
    from transformers import AutoModelForCausalLM

    if arch not in _HF:
        _HF[arch] = AutoModelForCausalLM.from_pretrained(str(tiny_dir / arch)).eval()
    return _HF[arch]


def by_hand(hf, item, j):
    """Independent score: one sequence per choice, log-softmax over the whole row, summed."""
    ctx, cont = item.context_for(j), item.choice_ids[j]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(hf(ids).logits[0].double(), -1)
    return sum(float(logp[len(ctx) - 1 + t, tok]) for t, tok in enumerate(cont))


@pytest.mark.parametrize("arch, task", [("gpt2", "arc_easy"), ("gpt2", "boolq"), ("gpt2", "winogrande"),
                                        ("gpt2", "record"), ("llama", "hellaswag")])
def test_choice_logprobs_match_hf_by_hand(arch, task, tiny_models, tiny_dir):
    model = tiny_models[arch]
    hf = hf_model(tiny_dir, arch)
    prep = prepare(model, task, 1, data_dir=FIXTURES)
    # Llama-family models get a BOS token; GPT-2 gets none (the study's convention)
    has_bos = [it.context_ids[0] == model.tokenizer.bos_token_id for it in prep.items]
    assert all(has_bos) if arch == "llama" else not any(has_bos)
    got = choice_logprobs(model, prep.items, batch_size=4, progress=False)
    for item, lp in zip(prep.items, got):
        want = [by_hand(hf, item, j) for j in range(len(item.choice_ids))]
        # fp32 forward on CPU vs float64 log-softmax of HF logits: 1e-4 absolute
        np.testing.assert_allclose(lp, want, atol=1e-4)
    # packing several examples per pass or one per pass gives the same numbers
    one = choice_logprobs(model, prep.items, batch_size=1, progress=False)
    for a, b in zip(got, one):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_evaluate_is_reproducible_and_gates_apply(tiny_models):
    model = tiny_models["gpt2"]
    a = evaluate(model, "hellaswag", 1, data_dir=FIXTURES, seed=7, progress=False)
    b = evaluate(model, "hellaswag", 1, data_dir=FIXTURES, seed=7, progress=False)
    assert a.metrics == b.metrics
    assert a.records.equals(b.records)
    assert set(a.records.columns) >= {"doc_id", "gold", "pred", "correct", "logprobs", "n_demos"}
    gated_one = evaluate(model, "hellaswag", 1, data_dir=FIXTURES, seed=7, gates=ones(model), progress=False)
    np.testing.assert_allclose(np.stack(gated_one.records.logprobs), np.stack(a.records.logprobs), atol=1e-6)
    zero = ones(model)
    zero = type(zero)(heads=torch.zeros_like(zero.heads), ffn=None)
    pruned = evaluate(model, "hellaswag", 1, data_dir=FIXTURES, seed=7, gates=zero, progress=False)
    assert np.abs(np.stack(pruned.records.logprobs) - np.stack(a.records.logprobs)).max() > 1e-3


def test_metrics_acc_norm_record_and_multirc(tiny_models):
    model = tiny_models["gpt2"]
    res = evaluate(model, "multirc", 0, data_dir=FIXTURES, progress=False)
    rec = res.records
    per_q = rec.groupby("group")["correct"].all()
    assert res.metrics["acc"] == pytest.approx(per_q.mean()) and res.metrics["n_questions"] == 2
    assert res.metrics["acc_per_answer"] == pytest.approx(rec["correct"].mean())
    res = evaluate(model, "arc_easy", 0, data_dir=FIXTURES, progress=False)
    for _, row in res.records.iterrows():
        lengths = np.array([len(c) for c in model_choices("arc_easy", row.doc_id)])
        assert row.pred_norm == int(np.argmax(np.array(row.logprobs) / lengths))
        assert row.pred == int(np.argmax(row.logprobs))


def model_choices(task, doc_id):
    from headlens.tasks import get_task

    return next(e for e in get_task(task).examples(get_task(task).eval_split, FIXTURES) if e.doc_id == doc_id).choices


def test_truncation_is_counted_with_small_context(tiny_models):
    model = tiny_models["gpt2"]  # n_ctx 128: 1-shot WiC prompts do not fit, 0-shot ones do
    res = evaluate(model, "wic", 1, data_dir=FIXTURES, progress=False)
    assert res.metrics["truncated"] == 2 and res.metrics["skipped"] == 0
    assert (res.records.n_demos == 0).all()


def test_cli_eval_all_14_tasks_from_fixtures(tiny_dir, capsys, monkeypatch):
    code, out, err = run_cli(["eval", "--model", str(tiny_dir / "gpt2"), "--task", "all", "--shots", "1",
                              "--data-dir", str(FIXTURES), "--format", "json"], capsys, monkeypatch)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["task"] for r in rows] == ["hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa",
                                         "winogrande", "boolq", "cb", "copa", "wic", "wsc", "multirc",
                                         "rte", "record"]
    for r in rows:
        assert {"model", "task", "shots", "n", "acc", "acc_norm", "truncated", "skipped"} <= set(r)
        assert r["shots"] == 1 and r["n"] >= 2 and 0.0 <= r["acc"] <= 1.0


@pytest.mark.parametrize("args, message", [
    (["--task", "hellaswg"], "did you mean hellaswag"),
    (["--task", "piqa", "--shots", "4"], "4 shots need 4 train documents"),
    (["--task", "piqa", "--split", "dev"], "cannot load split 'dev'"),
])
def test_cli_eval_errors_are_one_line(args, message, tiny_dir, capsys, monkeypatch):
    code, out, err = run_cli(["eval", "--model", str(tiny_dir / "gpt2"), "--data-dir", str(FIXTURES), *args],
                             capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("headlens: error:")]
    assert len(errors) == 1 and message in errors[0]


def test_model_without_tokenizer_is_an_error():
    fake = SimpleNamespace(cfg=SimpleNamespace(n_ctx=64), tokenizer=None)
    with pytest.raises(HeadlensError, match="no tokenizer"):
        prepare(fake, "piqa", 0, data_dir=FIXTURES)


def test_cli_eval_on_a_jsonl_task(tiny_dir, tmp_path, capsys, monkeypatch):
    rows = [{"context": f"Copy: {w} ->", "choices": [f" {w}", f" {v}"], "gold": 0}
            for w, v in [("apple", "pear"), ("stone", "river"), ("cloud", "tree"), ("glass", "paper")]]
    path = tmp_path / "copy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run_cli(["eval", "--model", str(tiny_dir / "gpt2"), "--task", str(path), "--shots", "1",
                              "--format", "json"], capsys, monkeypatch)
    assert code == 0, err
    res = json.loads(out)
    assert res["task"] == "copy" and res["n"] == 4 and res["shots"] == 1
    path.write_text(path.read_text() + '{"context": "x", "choices": [" a", " b"], "gold": 5}\n')
    code, out, err = run_cli(["eval", "--model", str(tiny_dir / "gpt2"), "--task", str(path)], capsys, monkeypatch)
    assert code == 2 and f"{path}:5: gold 5 out of range" in err


def test_cli_eval_comma_list_and_text_output(tiny_dir, capsys, monkeypatch):
    model = str(tiny_dir / "gpt2")
    code, out, err = run_cli(["eval", "--model", model, "--task", "copa,rte", "--shots", "0", "--limit", "1",
                              "--data-dir", str(FIXTURES), "--format", "json"], capsys, monkeypatch)
    assert code == 0, err
    assert [(r["task"], r["n"], r["shots"]) for r in json.loads(out)] == [("copa", 1, 0), ("rte", 1, 0)]
    code, out, err = run_cli(["eval", "--model", model, "--task", "rte", "--data-dir", str(FIXTURES)],
                             capsys, monkeypatch)
    assert code == 0 and out.startswith("rte") and "acc=" in out and "truncated=0" in out


def test_cli_tasks_lists_the_registry(capsys, monkeypatch):
    code, out, err = run_cli(["tasks", "--group", "study", "--format", "json"], capsys, monkeypatch)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 14 and rows[2] == {
        "task": "arc_easy", "group": "study", "version": 1, "metric": "acc", "train_split": "train",
        "eval_split": "test", "source": "allenai/ai2_arc/ARC-Easy@refs/convert/parquet [ARC-Easy/{split}/*.parquet]",
        "revision": "refs/convert/parquet", "data_files": "ARC-Easy/{split}/*.parquet"}
    assert all(r["revision"] == "refs/convert/parquet" for r in rows)
    code, out, err = run_cli(["tasks"], capsys, monkeypatch)
    line = next(x for x in out.splitlines() if x.startswith("cb "))
    assert line.endswith("aps/super_glue/cb@refs/convert/parquet [cb/{split}/*.parquet]")


def test_record_document_no_entity_matches_is_scored_wrong(tiny_models):
    res = evaluate(tiny_models["gpt2"], "record", 0, data_dir=FIXTURES, progress=False)
    assert res.metrics["n"] == 3
    row = res.records.set_index("doc_id").loc[2]
    assert row.gold_set == () and not row.correct and not row.correct_norm
    assert res.metrics["em"] == pytest.approx(res.records.correct.mean())


def test_log_samples_context_is_exactly_what_was_scored(tiny_dir, tmp_path, capsys, monkeypatch):
    """Every logged line: the context string (demonstrations included) decodes from the scored
    tokens, and an independent forward pass on the logged strings gives the logged log-probs."""
    from transformers import AutoTokenizer

    path = tmp_path / "logs" / "samples.jsonl"
    model = str(tiny_dir / "gpt2")
    code, out, err = run_cli(["eval", "--model", model, "--task", "copa,winogrande,record", "--shots", "1",
                              "--data-dir", str(FIXTURES), "--log-samples", str(path), "--format", "json"],
                             capsys, monkeypatch)
    assert code == 0, err
    metrics = {r["task"]: r for r in json.loads(out)}
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["task"] for x in lines] == ["copa"] * 2 + ["winogrande"] * 2 + ["record"] * 3
    tok = AutoTokenizer.from_pretrained(model)
    hf = hf_model(tiny_dir, "gpt2")
    for task in ("copa", "winogrande", "record"):
        mine = [x for x in lines if x["task"] == task]
        assert sum(x["correct"] for x in mine) / len(mine) == pytest.approx(metrics[task]["acc"])
        items = {it.example.doc_id: it for it in prepare(tiny_models_tokenizer(model), task, 1,
                                                             data_dir=FIXTURES, max_len=128).items}
        for x in mine:
            assert {"task", "doc_id", "shots", "seed", "split", "context", "choices", "gold", "gold_set",
                    "logprobs", "pred", "correct", "n_demos"} <= set(x)
            assert x["shots"] == 1 and x["pred"] == int(np.argmax(x["logprobs"]))
            assert x["context"].count("\n\n") >= x["n_demos"]  # the demonstrations are in it
            item = items[x["doc_id"]]
            for j, choice in enumerate(x["choices"]):
                context = x["contexts"][j] if "contexts" in x else x["context"]
                scored = item.context_for(j) + item.choice_ids[j]
                assert tok.decode(scored, clean_up_tokenization_spaces=False) == context + choice
                # from the logged strings alone: tokenize(context) / tokenize(context + choice)
                ctx_ids = tok(context.rstrip(), add_special_tokens=False)["input_ids"]
                cont = tok(context + choice, add_special_tokens=False)["input_ids"][len(ctx_ids):]
                ids = torch.tensor([ctx_ids + cont])
                with torch.no_grad():
                    logp = torch.log_softmax(hf(ids).logits[0].double(), -1)
                want = sum(float(logp[len(ctx_ids) - 1 + t, c]) for t, c in enumerate(cont))
                assert x["logprobs"][j] == pytest.approx(want, abs=1e-4)
    assert [x["gold_set"] for x in lines if x["task"] == "record"][2] == []


def tiny_models_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_log_samples_never_overwrites_without_force(tiny_dir, tmp_path, capsys, monkeypatch):
    path = tmp_path / "samples.jsonl"
    path.write_text("mine\n")
    args = ["eval", "--model", str(tiny_dir / "gpt2"), "--task", "copa", "--data-dir", str(FIXTURES),
            "--log-samples", str(path)]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and "exists; pass --force to overwrite it" in err and path.read_text() == "mine\n"
    code, out, err = run_cli(args + ["--force"], capsys, monkeypatch)
    assert code == 0, err
    assert [json.loads(x)["doc_id"] for x in path.read_text().splitlines()] == [0, 1]
    assert f"wrote 2 samples to {path}" in out
    code, out, err = run_cli(args[:-1] + [str(tmp_path)], capsys, monkeypatch)
    assert code == 2 and "is a folder" in err


@pytest.mark.parametrize("args, message", [
    (["eval", "--task", "piqa", "--limit", "0"], "--limit must be >= 1"),
    (["importance", "--task", "piqa", "--limit", "-1"], "--limit must be >= 1"),
    (["prune", "--task", "piqa", "--limit", "0"], "--limit must be >= 1"),
    (["prune", "--task", "piqa", "--importance-limit", "0"], "--importance-limit must be >= 1"),
    (["eval", "--task", "piqa", "--log-samples", "{tmp}/a-file/samples.jsonl"], "cannot write in {tmp}/a-file"),
])
def test_bad_options_fail_before_the_model_loads(args, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("")  # not a folder: nothing can be written under it
    args, message = [a.replace("{tmp}", str(tmp_path)) for a in args], message.replace("{tmp}", str(tmp_path))
    missing = str(tmp_path / "no-such-model")  # loading it would be a different error
    code, out, err = run_cli([*args, "--model", missing, "--data-dir", str(FIXTURES)], capsys, monkeypatch)
    errors = [line for line in err.splitlines() if line.startswith("headlens: error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_eval_with_every_query_skipped_is_an_error(tiny_dir, tmp_path, capsys, monkeypatch):
    long = " ".join(["word"] * 400)
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"context": f"{long} {i} ->", "choices": [" a", " b"], "gold": 0}) + "\n"
                            for i in range(3)))
    code, out, err = run_cli(["eval", "--model", str(tiny_dir / "gpt2"), "--task", str(path)], capsys, monkeypatch)
    errors = [line for line in err.splitlines() if line.startswith("headlens: error:")]
    assert code == 2 and len(errors) == 1 and "all 3 queries" in errors[0] and "nothing to score" in errors[0]
    assert "acc=" not in out
