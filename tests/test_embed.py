import numpy as np

from ray_training.embed import Embedder, events_before

NaT = np.datetime64("NaT")


def ts(*days):
    return np.array([NaT if d is None else np.datetime64("2020-01-01") + np.timedelta64(d, "D")
                     for d in days], dtype="datetime64[us]")


def test_events_before_counts_static_facts_and_strictly_earlier_events():
    times = ts(None, None, 0, 0, 5, 9)
    assert list(events_before(times, ts(0, 1, 5, 10))) == [2, 4, 4, 6]


def test_long_histories_use_the_window_ending_at_the_prediction_time():
    embedder = Embedder.__new__(Embedder)
    embedder.max_len = 4
    row = {"tokens": list(range(2, 12)), "times": ts(None, *range(9)),
           "prediction_times": ts(0, 2, 20)}
    # end = 1, 3, 10 events before: the first two share the window [0, 4); the last needs [6, 10)
    assert embedder.requests(row) == [(0, 0, 4, 0), (1, 0, 4, 2), (2, 6, 10, 3)]


def test_a_prediction_time_with_no_history_is_skipped():
    embedder = Embedder.__new__(Embedder)
    embedder.max_len = 4
    row = {"tokens": [2, 3], "times": ts(5, 6), "prediction_times": ts(1, 6)}
    assert embedder.requests(row) == [(1, 0, 2, 0)]
