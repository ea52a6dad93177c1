"""Scores: labels, top-k, DataFrame, save/load round trip; cache keys."""

from __future__ import annotations

import numpy as np
import pytest

from headlens.results.cache import CacheKey, ResultCache
from headlens.errors import HeadlensError
from headlens.results.scores import Scores, load_all


def test_top_labels_frame_and_round_trip(tmp_path):
    vals = np.array([[0.1, 0.9, 0.2], [0.5, 0.0, 0.7]])
    s = Scores(vals, metric="prefix_matching", model="m", meta={"seeds": 3}, std=np.zeros((2, 3)))
    assert s.top(2) == [(0, 1, 0.9), (1, 2, 0.7)]
    assert s.labels[:4] == ["L0H0", "L0H1", "L0H2", "L1H0"]
    df = s.to_frame()
    assert list(df.columns) == ["layer", "head", "label", "value", "std"]
    assert df.loc[df.label == "L1H2", "value"].item() == 0.7
    path = s.save(tmp_path / "out")
    back = Scores.load(path)
    np.testing.assert_array_equal(back.values, vals)
    assert back.meta["seeds"] == 3 and "headlens_version" in back.meta
    assert [x.metric for x in load_all(tmp_path)] == ["prefix_matching"]
    with pytest.raises(ValueError):
        s.values[0, 0] = 1.0  # read-only: never modified in place


def test_layer_scores_and_bad_shape():
    s = Scores(np.array([0.3, 0.1]), metric="ffn_importance")
    assert not s.per_head and s.top(1) == [(0, 0.3)]
    with pytest.raises(HeadlensError, match="shape"):
        Scores(np.zeros((2, 2, 2)), metric="x")


def test_cache_key_changes_with_every_part_and_cache_round_trip(tmp_path):
    base = dict(model="m", task="t", shots=1, seed=0)
    assert CacheKey.make("kind", **base) == CacheKey.make("kind", **dict(base))
    for k, v in [("model", "n"), ("task", "u"), ("shots", 5), ("seed", 1)]:
        assert CacheKey.make("kind", **{**base, k: v}).digest != CacheKey.make("kind", **base).digest
    assert CacheKey.make("other", **base).digest != CacheKey.make("kind", **base).digest
    cache = ResultCache(tmp_path)
    calls = []
    key = CacheKey.make("kind", **base)
    out = cache.get_or_compute(key, lambda: calls.append(1) or {"x": 1})
    again = cache.get_or_compute(key, lambda: calls.append(1) or {"x": 2})
    assert out == again == {"x": 1} and len(calls) == 1
