import datetime as dt

import numpy as np

from rdt_spark import concepts as C
from rdt_spark.lake import read_table, write_table
from rdt_spark.simulate import PHENOTYPES, generate_registry, latent_truth, simulate_patient

ORIGIN, SPAN = dt.datetime(2012, 1, 1), 5000.0


def test_same_seed_same_patient_and_other_seed_differs():
    assert simulate_patient(11, 7, ORIGIN, SPAN) == simulate_patient(11, 7, ORIGIN, SPAN)
    assert simulate_patient(11, 7, ORIGIN, SPAN) != simulate_patient(11, 8, ORIGIN, SPAN)


def test_das28_follows_its_components():
    rows = simulate_patient(3, 7, ORIGIN, SPAN)
    by_visit: dict = {}
    for table, _, _, concept, _, _, value, *_, visit in rows:
        if table == "measurement":
            by_visit.setdefault(visit, {})[concept] = value
    checked = 0
    for m in by_visit.values():
        if C.DAS28_ESR.concept_id in m:
            assert 0 < m[C.DAS28_ESR.concept_id] < 10
            checked += 1
    assert checked > 3


def test_hidden_phenotype_drives_flares():
    flares = {p.name: [] for p in PHENOTYPES}
    for pid in range(1, 400):
        rows = simulate_patient(pid, 7, ORIGIN, SPAN)
        visits = sum(r[0] == "visit_occurrence" for r in rows)
        n = sum(r[3] == C.RA_FLARE.concept_id for r in rows)
        flares[latent_truth(pid, 7, SPAN)[1]].append(n / max(visits, 1))
    mild = np.mean(flares["seronegative_mild"])
    refractory = np.mean(flares["refractory_inflammatory"])
    assert refractory > 2 * mild


def test_registry_is_identical_whatever_the_partitioning(spark, tmp_path):
    outputs = []
    for partitions in (1, 3):
        tables, truth, records = generate_registry(spark, 25, 5, partitions, "2015-01-01",
                                                   "2024-12-31")
        lake = str(tmp_path / f"p{partitions}")
        write_table(tables["measurement"], lake, "omop.measurement")
        write_table(truth, lake, "truth.patient_latent")
        records.unpersist()
        outputs.append((read_table(spark, lake, "omop.measurement"),
                        read_table(spark, lake, "truth.patient_latent")))
    (m1, t1), (m3, t3) = outputs
    assert m1.count() > 0 and m1.count() == m3.count()
    assert m1.exceptAll(m3).count() == 0 and t1.exceptAll(t3).count() == 0
