"""Filtered twin search on an index built from small Delta tables (written with deltalake)."""

import numpy as np
import pandas as pd
import pytest
from deltalake import write_deltalake

from ray_training.index import Sources, build_index
from ray_training.search import Filters, Question, TwinIndex
from ray_training.settings import IndexConfig

PATIENTS, POINTS, DIM = 120, 8, 16
TASK = "flare_within_180d"


def _tables(root, rng):
    subject = np.repeat(np.arange(1, PATIENTS + 1), POINTS)
    times = pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(
        np.tile(np.arange(POINTS) * 30, PATIENTS), unit="D")
    centres = rng.normal(size=(PATIENTS + 1, DIM))
    vectors = (centres[subject] + 0.3 * rng.normal(size=(len(subject), DIM))).astype(np.float32)
    keys = pd.DataFrame({"subject_id": subject, "prediction_time": times, "split": "train"})
    female = subject % 10 == 0  # one patient in ten
    das28 = np.round(rng.uniform(1.5, 7.0, len(subject)), 2)
    states = keys.assign(
        sex=np.where(female, "F", "M"), age=40.0 + subject % 30, disease_years=1.0,
        seropositive=subject % 2 == 0, das28=das28, mtss=5.0,
        current_classes=[["methotrexate", "tnf_inhibitor"] if s % 4 == 0 else ["methotrexate"]
                         for s in subject],
        current_days=[[100.0, 10.0] if s % 4 == 0 else [100.0] for s in subject],
        past_classes=[[] for _ in subject],
        modalities=[["events"] for _ in subject])
    course = [[3.0, 2.8, None, 2.5] for _ in subject]
    trajectories = keys.assign(follow_up_days=1000.0, event_days=np.where(subject % 3 == 0, 90.0,
                                                                           np.nan),
                               das28_course=course, mtss_course=course,
                               course_months=[[3, 6, 12, 24] for _ in subject])
    tasks = keys.assign(task=TASK, label=subject % 3 == 0, censored=subject % 5 == 0,
                        category=None, horizon_days=180)
    emb = keys.assign(model_version="m1", embedding=list(vectors), modalities=[["events"]] * len(keys))
    paths = {}
    for name, frame in [("embeddings", emb), ("tasks", tasks), ("states", states),
                        ("trajectories", trajectories)]:
        paths[name] = str(root / name)
        write_deltalake(paths[name], frame)
    return Sources.latest(paths["embeddings"], paths["tasks"], paths["states"],
                          paths["trajectories"]), vectors, states


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("index")
    sources, vectors, states = _tables(root, np.random.default_rng(3))
    catalogue = {TASK: {"kind": "event_within", "window_days": 180, "drug_class": None}}
    exact_dir, tree_dir = root / "exact", root / "tree"
    build_index(sources, catalogue, TASK, IndexConfig(), str(exact_dir))
    build_index(sources, catalogue, TASK, IndexConfig(brute_force_below=0, reorder=100,
                                                      leaves_to_search_fraction=0.3),
                str(tree_dir))
    return TwinIndex.current(str(exact_dir)), TwinIndex.current(str(tree_dir)), vectors, states


def _queries(index, vectors, states, rows):
    return index.to_space(vectors[rows], states.iloc[rows]), states["subject_id"].to_numpy()[rows]


def test_a_selective_filter_still_gives_k_distinct_allowed_patients(built):
    index, _, vectors, states = built
    queries, own = _queries(index, vectors, states, [0, 500, 900])
    allowed = index.allowed(Filters(sex="F"))
    assert allowed.mean() == pytest.approx(0.1)
    found = index.search(queries, own, 10, {"q": Question(allowed)})["q"]
    for (rows, sims), me in zip(found, own, strict=True):
        subjects = index.subject[rows]
        assert len(rows) == 10 and len(set(subjects)) == 10 and me not in subjects
        assert (index.sex[rows] == "F").all()
        assert (np.diff(sims) <= 1e-6).all()


def test_filtered_search_returns_the_exact_nearest_allowed_patients(built):
    index, _, vectors, states = built
    queries, own = _queries(index, vectors, states, [3, 333])
    allowed = index.allowed(Filters(current_classes=("tnf_inhibitor",), seropositive=True))
    found = index.search(queries, own, 5, {"q": Question(allowed)}, exact=True)["q"]
    db = np.vstack([np.asarray(s.vectors) for s in index.shards])
    for q, (rows, _), me in zip(queries, found, own, strict=True):
        distance = ((db - q) ** 2).sum(axis=1)
        distance[~allowed | (index.subject == me)] = np.inf
        best = pd.Series(distance).groupby(index.subject).min().nsmallest(5)
        assert set(index.subject[rows]) == set(best.index)


def test_a_task_question_only_returns_neighbours_whose_outcome_is_known(built):
    index, _, vectors, states = built
    queries, own = _queries(index, vectors, states, [10, 20])
    found = index.search(queries, own, 20, {"q": Question(index.usable(TASK))})["q"]
    for rows, _ in found:
        assert len(rows) == 20 and (index.subject[rows] % 5 != 0).all()  # every 5th is censored


def test_a_per_query_band_keeps_neighbours_near_the_query_value(built):
    index, _, vectors, states = built
    queries, own = _queries(index, vectors, states, [0, 1])
    das28 = np.array([2.0, 6.0])
    band = Question(np.ones(len(index.rows), bool), index.numeric["das28"], das28 - 0.5,
                    das28 + 0.5)
    found = index.search(queries, own, 10, {"q": band})["q"]
    for (rows, _), centre in zip(found, das28, strict=True):
        assert len(rows) == 10 and (np.abs(index.numeric["das28"][rows] - centre) <= 0.5).all()


def test_scann_tree_pools_find_most_of_the_exact_neighbours(built):
    exact, tree, vectors, states = built
    queries, own = _queries(exact, vectors, states, list(range(0, 960, 40)))
    everyone = {"q": Question(np.ones(len(exact.rows), bool))}
    truth = exact.search(queries, own, 10, everyone, exact=True)["q"]
    approx = tree.search(queries, own, 10, everyone)["q"]
    assert tree.shards[0].leaves > 0
    recall = np.mean([len(set(exact.subject[a]) & set(tree.subject[b])) / 10
                      for (a, _), (b, _) in zip(truth, approx, strict=True)])
    assert recall >= 0.7  # a third of the leaves searched, one pool, no retry


def test_a_temporal_question_admits_only_outcomes_closed_before_the_cutoff(built):
    from ray_training.settings import QueryConfig
    from ray_training.twin import questions

    index, _, _, _ = built
    cutoff = pd.Timestamp("2020-09-01", tz="UTC")  # the first three of eight points closed
    asked = questions(index, QueryConfig(), None, np.array([3.0]),
                      closed_before_us=int(cutoff.value // 1000))
    allowed = asked[TASK].allowed
    closes = index.rows["prediction_time"] + pd.Timedelta(days=180)
    assert allowed.any() and (closes[allowed] <= cutoff).all()
    assert not allowed[(closes > cutoff).to_numpy()].any()
    assert asked["all"].allowed.all()  # who the neighbours are is not restricted


def test_shards_built_from_their_own_slices_search_like_one_index(tmp_path, ray_local):
    sources, vectors, states = _tables(tmp_path, np.random.default_rng(3))
    catalogue = {TASK: {"kind": "event_within", "window_days": 180, "drug_class": None}}
    one, three = tmp_path / "one", tmp_path / "three"
    build_index(sources, catalogue, TASK, IndexConfig(), str(one))
    manifest = build_index(sources, catalogue, TASK, IndexConfig(num_shards=3), str(three))
    single, sharded = TwinIndex.current(str(one)), TwinIndex.current(str(three))
    ranges = [sharded.subject[s.start:s.stop] for s in sharded.shards]
    assert [m["rows"] for m in manifest["shards"]] == [320, 320, 320]
    assert all(a.max() < b.min() for a, b in zip(ranges, ranges[1:], strict=False))  # disjoint
    assert (sharded.subject == single.subject).all()
    np.testing.assert_allclose(sharded.space.whitening, single.space.whitening, atol=1e-5)
    queries, own = _queries(single, vectors, states, [7, 400, 950])
    everyone = {"q": Question(np.ones(len(single.rows), bool))}
    a = single.search(queries, own, 10, everyone, exact=True)["q"]
    b = sharded.search(queries, own, 10, everyone, exact=True)["q"]
    for (rows_a, sims_a), (rows_b, sims_b) in zip(a, b, strict=True):
        assert (rows_a == rows_b).all()
        np.testing.assert_allclose(sims_a, sims_b, atol=1e-5)
