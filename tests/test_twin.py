import numpy as np
import pandas as pd
import pytest

from ray_training.index import IndexConfig, outcome_column, standardise
from ray_training.twin import forecast, wilson_interval


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0


def neighbours(labels, censored, task="flare"):
    return pd.DataFrame({"subject_id": range(len(labels)), outcome_column(task, "label"): labels,
                         outcome_column(task, "censored"): censored})


def test_forecast_is_suppressed_below_the_minimum_cell_size():
    f = forecast(neighbours([True] * 12, [False] * 9 + [True] * 3), "flare", 10)
    assert f.suppressed and f.share is None and f.events is None and f.usable == 9


def test_forecast_counts_only_uncensored_neighbours():
    f = forecast(neighbours([True] * 6 + [False] * 6 + [True] * 4, [False] * 12 + [True] * 4),
                 "flare", 10)
    assert not f.suppressed and f.usable == 12 and f.events == 6 and f.share == 0.5


def test_standardise_gives_unit_vectors():
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32) + 3
    z = standardise(x, x.mean(0), x.std(0))
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


def test_tree_search_finds_k_distinct_patients_and_never_the_excluded_one():
    from ray_training.index import build_searcher, tree_shape
    from ray_training.twin import TwinIndex

    rng = np.random.default_rng(1)
    subjects = np.repeat(np.arange(100), 30)  # 100 patients, 30 time points each
    centres = rng.normal(size=(100, 16))
    vectors = (centres[subjects] + 0.3 * rng.normal(size=(3000, 16))).astype(np.float32)
    cfg = IndexConfig(brute_force_below=0, leaves_per_sqrt_n=1.0, leaves_to_search_fraction=0.05,
                      reorder=100)
    mean, std = vectors.mean(0), vectors.std(0) + 1e-6
    leaves, searched = tree_shape(len(vectors), cfg)
    index = TwinIndex.__new__(TwinIndex)
    index.mean, index.std = mean, std
    index.manifest = {"shards": [{"rows": 3000, "subjects": 100, "leaves": leaves,
                                  "leaves_searched": searched}]}
    rows = pd.DataFrame({"subject_id": subjects})
    index.shards = [(build_searcher(standardise(vectors, mean, std), cfg), rows)]
    queries = vectors[[0, 1500, 2999]]
    exclude = subjects[[0, 1500, 2999]]
    for hits, excluded in zip(index.search(queries, exclude, k=50), exclude, strict=True):
        assert len(hits) == 50 and hits["subject_id"].nunique() == 50
        assert excluded not in set(hits["subject_id"])
        assert hits["similarity"].is_monotonic_decreasing
