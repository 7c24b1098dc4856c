import numpy as np
import pandas as pd
import pytest

from ray_training.index import standardise
from ray_training.twin import forecast, wilson_interval


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 20)[0] == 0.0


def neighbours(labels, censored):
    return pd.DataFrame({"subject_id": range(len(labels)), "label": labels,
                         "censored": censored})


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
