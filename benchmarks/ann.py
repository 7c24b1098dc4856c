"""ScaNN against exact search on an index of a million patient-times: recall, speed, memory.

Builds the index with ``rdt index``'s code (``build_index``, settings from the config's ``index``
section) over synthetic gold tables of the embedding dimension (``synthetic_index``: no
population that large exists on this machine), then, for queries from patients outside the
index, one query at a time as a clinic desk asks:

- exact search: NumPy matmul over every row with argpartition (BLAS on all cores), and the same
  in batches of 64 queries;
- ScaNN with the configured leaves and reordering, then a sweep of the search-time settings
  (leaves searched, reorder depth) on the same tree: recall@10 against exact, queries/s, and the
  speed ratio of the fastest setting at recall >= 0.95;
- a filter keeping about 5% of the rows (men within a DAS28 band), through
  ``TwinIndex.search`` (ScaNN pools, then the exact fallback), against exact filtered search;
- the forecast gap: flare AUROC from k neighbours' labels, ScaNN against exact search.

Prints the details, then one line of figures.

    flock /tmp/rdt-heavy.lock .venv/bin/python benchmarks/ann.py --patient-times 1000000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic_index import POINTS_PER_PATIENT, TASK, build  # noqa: E402
from jobs.config import load_config  # noqa: E402
from ray_training.index import STATE_FEATURES  # noqa: E402
from ray_training.search import Filters, Question, TwinIndex  # noqa: E402

K = 10


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 2**20


def exact_top(db: np.ndarray, half_norms: np.ndarray, queries: np.ndarray) -> tuple[list, float]:
    """Each query's K nearest rows by exact search, one query at a time, and queries/s."""
    start, found = time.perf_counter(), []
    for q in queries:
        scores = db @ q - half_norms
        top = np.argpartition(-scores, K - 1)[:K]
        found.append(top[np.argsort(-scores[top])])
    return found, len(queries) / (time.perf_counter() - start)


def exact_batched_qps(db: np.ndarray, half_norms: np.ndarray, queries: np.ndarray,
                      batch: int = 64) -> float:
    start = time.perf_counter()
    for i in range(0, len(queries), batch):
        scores = queries[i:i + batch] @ db.T - half_norms
        np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return len(queries) / (time.perf_counter() - start)


def recall(found: list, truth: list) -> float:
    return float(np.mean([len(set(np.asarray(f)[:K].tolist()) & set(t.tolist())) / K
                          for f, t in zip(found, truth, strict=True)]))


def scann_run(searcher, queries: np.ndarray, leaves: int, reorder: int,
              repeats: int = 3) -> tuple[list, float]:
    """Each query's K rows from ScaNN, one query at a time, and the median queries/s of
    ``repeats`` passes after an untimed one (the first touches the memory-mapped vectors
    that re-ranking reads)."""
    rates = []
    for _ in range(repeats + 1):
        start, found = time.perf_counter(), []
        for q in queries:
            idx, _ = searcher.search(q, final_num_neighbors=K, leaves_to_search=leaves,
                                     pre_reorder_num_neighbors=reorder)
            found.append(idx)
        rates.append(len(queries) / (time.perf_counter() - start))
    return found, float(np.median(rates[1:]))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = rankdata(scores)
    n1, n0 = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def query_points(index: TwinIndex, drawn: dict, sources) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Every point of the patients outside the index (the test split), sorted by subject and
    time: (search-space vectors, subject ids, flare labels)."""
    from deltalake import DeltaTable

    keys = ["subject_id", "prediction_time"]
    states = DeltaTable(sources.states[0]).to_pandas(columns=[*keys, "split", *STATE_FEATURES])
    tasks = DeltaTable(sources.tasks[0]).to_pandas(columns=[*keys, "split", "label"])
    test = (states[states["split"] == "test"].sort_values(keys, ignore_index=True)
            .merge(tasks[tasks["split"] == "test"].drop(columns="split"), on=keys))
    subject = test["subject_id"].to_numpy()
    rows = (subject - 1) * POINTS_PER_PATIENT + test.groupby("subject_id").cumcount().to_numpy()
    vectors = index.to_space(drawn["vectors"][rows], test[list(STATE_FEATURES)])
    return vectors, subject, test["label"].to_numpy(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient-times", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=250, help="query patients (8 points each)")
    parser.add_argument("--root", default="/tmp/rdt-ann")
    parser.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    args = parser.parse_args()
    cfg = load_config(args.config, {"lake": args.root + "/unused"})
    dim = 2 * cfg.model.d_model  # the encoder's last state and its running mean (embed.py)
    start = time.perf_counter()
    run_dir, sources, drawn = build(args.root, args.patient_times, dim, cfg.index,
                                    query_patients=args.queries)
    build_s = time.perf_counter() - start
    print(f"built {args.patient_times:,} x {dim} (search space {dim + len(STATE_FEATURES)}) in "
          f"{build_s:.0f} s (peak RSS {rss_gib():.1f} GiB)", flush=True)
    before = current_rss_gib()
    index = TwinIndex.current(str(run_dir))
    np.asarray(index.shards[0].vectors).sum()  # touch the memory-mapped vectors
    loaded_gib = current_rss_gib() - before
    shard = index.shards[0]
    assets = sum(f.stat().st_size for f in (index.dir / "shard-0" / "scann").iterdir())
    vectors_bytes = np.asarray(shard.vectors).nbytes
    points, subjects, labels = query_points(index, drawn, sources)
    first = np.flatnonzero(np.r_[True, subjects[1:] != subjects[:-1]])  # one point per patient
    queries = points[first]
    db = np.array(shard.vectors)  # in memory, not memory-mapped: exact search at its best
    truth, exact_qps = exact_top(db, shard.half_norms, queries)
    batched_qps = exact_batched_qps(db, shard.half_norms, queries)
    with threadpool_limits(1):
        _, exact_1t_qps = exact_top(db, shard.half_norms, queries[:100])
    print(f"exact: {exact_qps:.1f} queries/s one at a time on all cores ({exact_1t_qps:.1f} on "
          f"one thread), {batched_qps:.1f} in batches of 64", flush=True)
    del db
    conf = index.manifest["config"]
    found, qps = scann_run(shard.searcher, queries, shard.leaves_searched, conf["reorder"])
    configured = (recall(found, truth), qps)
    print(f"ScaNN as configured ({shard.leaves} leaves, {shard.leaves_searched} searched, "
          f"reorder {conf['reorder']}): recall@10 {configured[0]:.3f}, {qps:.0f} queries/s, "
          f"{qps / exact_qps:.0f}x exact", flush=True)
    best = None
    for searched in sorted({max(1, int(shard.leaves * f)) for f in (0.01, 0.02, 0.03, 0.05,
                                                                    0.08, 0.1)}):
        for reorder in (50, 100, 200):
            found, qps = scann_run(shard.searcher, queries, searched, reorder)
            r = recall(found, truth)
            print(f"  leaves searched {searched:>4}, reorder {reorder:>3}: recall@10 {r:.3f}, "
                  f"{qps:>6.0f} queries/s, {qps / exact_qps:>4.0f}x exact", flush=True)
            if r >= 0.95 and (best is None or qps > best[2]):
                best = (searched, reorder, qps, r)

    # A filter keeping about 5% of the rows: men with a DAS28 in a band around the median.
    men = index.sex == "M"
    das28 = index.numeric["das28"]
    share = 0.05 / men.mean()
    low, high = np.nanquantile(das28[men], [0.5 - share / 2, 0.5 + share / 2])
    filters = Filters(sex="M", das28=(float(low), float(high)))
    allowed = index.allowed(filters)
    exclude = np.full(len(queries), -1)
    timings = {}
    threadpool_limits(1)  # as rdt serve runs: one BLAS thread per request
    for exact in (True, False):
        start, found = time.perf_counter(), []
        for q in queries:
            found.append(index.search(q[None, :], exclude[:1], K, {"q": Question(allowed)},
                                      one_per_patient=False, exact=exact)["q"][0][0])
        timings[exact] = (found, (time.perf_counter() - start) / len(queries) * 1000)
    filtered_recall = recall(timings[False][0], timings[True][0])
    print(f"filter {filters.describe()} keeps {allowed.mean():.2%} of rows: recall@10 "
          f"{filtered_recall:.3f}, {timings[False][1]:.1f} ms per query (exact filtered "
          f"{timings[True][1]:.1f} ms)", flush=True)

    usable = {"q": Question(index.usable(TASK))}
    flare = index.rows[f"{TASK}:label"].to_numpy(bool)
    shares = {}
    for exact in (True, False):
        hits = index.search(points, subjects, 50, usable, exact=exact)["q"]
        shares[exact] = np.array([flare[rows].mean() for rows, _ in hits])
    au_exact, au_scann = auroc(shares[True], labels), auroc(shares[False], labels)
    print(f"flare AUROC over {len(points)} query points, k 50: exact {au_exact:.4f}, ScaNN "
          f"{au_scann:.4f}", flush=True)

    ratio = f"{best[2] / exact_qps:.0f}x at recall {best[3]:.3f} (leaves searched {best[0]}, " \
            f"reorder {best[1]})" if best else "no setting reached recall 0.95"
    print(f"ann: n={args.patient_times} dim={dim}+{len(STATE_FEATURES)} build_s={build_s:.0f} "
          f"scann_assets_mib={assets / 2**20:.0f} vectors_mib={vectors_bytes / 2**20:.0f} "
          f"loaded_index_gib={loaded_gib:.2f} driver_peak_rss_gib={rss_gib():.1f} "
          f"exact_qps={exact_qps:.1f} exact_1thread_qps={exact_1t_qps:.1f} "
          f"exact_batched_qps={batched_qps:.1f} configured_recall={configured[0]:.3f} "
          f"configured_qps={configured[1]:.0f} configured_ratio={configured[1] / exact_qps:.0f}x "
          f"best={ratio} filtered_5pct_recall={filtered_recall:.3f} "
          f"filtered_ms={timings[False][1]:.1f} forecast_auroc_gap={abs(au_exact - au_scann):.4f}")


if __name__ == "__main__":
    main()
