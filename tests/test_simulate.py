import datetime as dt
import hashlib
import json

import numpy as np
from conftest import PINNED_REGISTRY, table_fingerprint
from pyspark.sql import functions as F

from rdt_spark.lake import read_table, write_table
from rdt_spark.sharp_score import EROSION_MAX, JSN_MAX
from rdt_spark.simulator import GenerateConfig, generate_registry
from rdt_spark.simulator import concepts as C
from rdt_spark.simulator.disease import (
    DRUG_CLASSES,
    FLARE_DECAY,
    PHENOTYPES,
    Draws,
    Drug,
    counterfactual_activity,
    das28_crp,
    das28_esr,
    draw_latent,
    flare_probability,
    regimen_efficacy,
    regimen_under,
)
from rdt_spark.simulator.modalities import GENE_SYMBOLS
from rdt_spark.simulator.patient import latent_truth, simulate_patient
from rdt_spark.simulator.records import _I

ORIGIN, SPAN = dt.datetime(2012, 1, 1), 5000.0


def _of(rows, table):
    return [r for r in rows if r[0] == table]


def _latent(rows):
    return json.loads(_of(rows, "truth_latent")[0][_I["text"]])


def test_same_seed_same_patient_and_other_seed_differs():
    assert simulate_patient(11, 7, ORIGIN, SPAN) == simulate_patient(11, 7, ORIGIN, SPAN)
    assert simulate_patient(11, 7, ORIGIN, SPAN) != simulate_patient(11, 8, ORIGIN, SPAN)


def test_latent_truth_names_the_phenotype_the_patient_was_simulated_with():
    for pid in range(1, 30):
        assert latent_truth(pid, 7, SPAN)[1] == _latent(simulate_patient(pid, 7, ORIGIN, SPAN))[
            "phenotype"]


def test_das28_esr_and_crp_follow_their_components_in_standard_units():
    checked = 0
    for pid in range(1, 40):
        by_visit: dict = {}
        for r in _of(simulate_patient(pid, 7, ORIGIN, SPAN), "measurement"):
            value = r[_I["value"]] * (10 if r[_I["unit"]] == "mg/dL" else 1)  # CRP to mg/L
            by_visit.setdefault(r[_I["visit_id"]], {})[r[3]] = value
        for m in by_visit.values():
            tjc, sjc = m.get(C.TENDER_JOINTS.concept_id), m.get(C.SWOLLEN_JOINTS.concept_id)
            pga, esr = m.get(C.PATIENT_GLOBAL.concept_id), m.get(C.ESR.concept_id)
            if C.DAS28_ESR.concept_id in m:
                assert abs(m[C.DAS28_ESR.concept_id] - das28_esr(tjc, sjc, esr, pga)) < 0.006
                checked += 1
            if C.DAS28_CRP.concept_id in m:
                crp = m[C.CRP.concept_id]
                assert abs(m[C.DAS28_CRP.concept_id] - das28_crp(tjc, sjc, crp, pga)) < 0.02
                checked += 1
    assert checked > 500


def test_some_care_sites_report_crp_in_mg_per_dl_with_their_unit_concept():
    units = {(r[_I["unit"]], r[_I["unit_concept_id"]]) for pid in range(1, 200)
             for r in _of(simulate_patient(pid, 7, ORIGIN, SPAN), "measurement")
             if r[3] == C.CRP.concept_id}
    assert units == {("mg/L", C.MG_PER_L.concept_id), ("mg/dL", C.MG_PER_DL.concept_id)}


def test_every_concept_used_is_in_the_concept_table():
    known = {c.concept_id for c in C.ALL} | {0}
    used = set()
    for pid in range(1, 200):
        for r in simulate_patient(pid, 7, ORIGIN, SPAN):
            if r[0] in {"person", "visit_occurrence", "condition_occurrence", "drug_exposure",
                        "measurement", "note"}:
                used.add(r[3])
            if r[0] == "measurement":
                used.add(r[_I["unit_concept_id"]])
    assert used <= known, used - known


def test_hidden_phenotype_drives_flares():
    flares = {p.name: [] for p in PHENOTYPES}
    for pid in range(1, 400):
        rows = simulate_patient(pid, 7, ORIGIN, SPAN)
        n = sum(r[3] == C.RA_FLARE.concept_id for r in _of(rows, "condition_occurrence"))
        flares[_latent(rows)["phenotype"]].append(n / max(len(_of(rows, "visit_occurrence")), 1))
    assert np.mean(flares["refractory_inflammatory"]) > 2 * np.mean(flares["fast_remitting"])


def test_each_decision_has_one_chosen_class_and_a_response_under_every_class():
    decisions = 0
    for pid in range(1, 100):
        by_decision: dict = {}
        for r in _of(simulate_patient(pid, 7, ORIGIN, SPAN), "truth_response"):
            by_decision.setdefault(r[3], []).append(r)
        for rows in by_decision.values():
            assert sorted(r[_I["source_value"]] for r in rows) == sorted(DRUG_CLASSES)
            assert sum(r[_I["flag"]] for r in rows) == 1
            assert {r[_I["extra"]] for r in rows} <= {"good", "moderate", "none"}
            decisions += 1
    assert decisions > 150


def test_similar_patients_respond_alike_rituximab_favours_seropositive():
    good = {True: [], False: []}
    for pid in range(1, 400):
        rows = simulate_patient(pid, 7, ORIGIN, SPAN)
        z = _latent(rows)
        good[z["rf_positive"] or z["ccp_positive"]].append(
            json.loads(z["drug_response"])["rituximab"])
    assert np.mean(good[True]) > np.mean(good[False]) + 0.15


def _replay(z, regimen, week, bump, pred, noise, flare_u, flare_size):
    """The counterfactual, one week at a time, as the weekly course computes it."""
    ph = PHENOTYPES[z.phenotype]
    activity = 0.0
    for w in range(week + 1, week + 27):
        untreated = z.untreated - ph.natural_drop * min(1.0, w / 52)
        level = untreated - regimen_efficacy(regimen, w) * max(untreated - z.floor, 0.0)
        if pred[0] <= w < pred[1]:
            level -= 1.1 * (pred[1] - w) / (pred[1] - pred[0])
        activity = level + bump + noise[w]
        if flare_u[w] < flare_probability(ph.flare_rate, level):
            bump += flare_size[w]
        bump *= FLARE_DECAY
    return activity


def test_vectorised_counterfactual_equals_a_week_by_week_replay():
    rng = np.random.default_rng(3)
    for trial in range(40):
        z = draw_latent(Draws(rng), 600)
        noise, flare_u = rng.normal(0, 0.3, 200), rng.random(200) * 0.05
        flare_size = 1.5 + rng.normal(0, 0.4, 200)
        week = int(rng.integers(0, 100))
        regimen = [Drug("methotrexate", 0.4, week - int(rng.integers(1, 30)))]
        if trial % 2:
            regimen.append(Drug("tnf_inhibitor", 0.5, week - 3))
        efficacies = {c: float(rng.random()) for c in DRUG_CLASSES}
        pred = (week, week + 10) if trial % 3 else (-1, -1)
        fast = counterfactual_activity(z, regimen, week, 0.7, pred, efficacies, noise, flare_u,
                                       flare_size)
        for i, c in enumerate(DRUG_CLASSES):
            arm = regimen_under(regimen, c, efficacies[c], week)
            slow = _replay(z, arm, week, 0.7, pred, noise.tolist(), flare_u.tolist(),
                           flare_size.tolist())
            assert abs(fast[i] - slow) < 1e-9


def test_radiograph_scores_stay_within_joint_maxima_and_never_decrease():
    studies = 0
    for pid in range(1, 120):
        previous = None
        for r in _of(simulate_patient(pid, 7, ORIGIN, SPAN), "imaging"):
            scores = r[_I["ints"]]
            erosion, jsn = scores[:len(EROSION_MAX)], scores[len(EROSION_MAX):]
            assert len(jsn) == len(JSN_MAX)
            assert all(0 <= s <= m for s, m in zip(erosion, EROSION_MAX, strict=True))
            assert all(0 <= s <= m for s, m in zip(jsn, JSN_MAX, strict=True))
            if previous is not None:
                assert all(a >= b for a, b in zip(scores, previous, strict=True))
            previous, studies = scores, studies + 1
    assert studies > 100


def test_omics_signatures_follow_the_hidden_phenotype():
    plasmablast = [GENE_SYMBOLS.index(g) for g in ("JCHAIN", "MZB1", "TNFRSF17")]
    by_phenotype: dict = {}
    for pid in range(1, 600):
        rows = simulate_patient(pid, 7, ORIGIN, SPAN)
        for r in _of(rows, "omics"):
            assert len(r[_I["floats"]]) == len(GENE_SYMBOLS)
            by_phenotype.setdefault(_latent(rows)["phenotype"], []).append(
                np.mean([r[_I["floats"]][g] for g in plasmablast]))
    assert (np.mean(by_phenotype["seropositive_erosive"])
            > np.mean(by_phenotype["fast_remitting"]) + 0.5)


def test_registry_is_identical_whatever_the_partitioning(spark, tmp_path):
    fingerprints = []
    for partitions in (1, 3):
        tables, records = generate_registry(
            spark, GenerateConfig(40, 5, partitions, "2015-01-01", "2024-12-31"))
        fingerprints.append({name: table_fingerprint(frame) for name, frame in tables.items()})
        if partitions == 3:  # what a job writes is what was fingerprinted
            write_table(tables["ext.imaging"], str(tmp_path), "ext.imaging")
            written = table_fingerprint(read_table(spark, str(tmp_path), "ext.imaging"))
            assert written == fingerprints[-1]["ext.imaging"]
            ids = (tables["ext.imaging"].select(F.col("imaging_id").alias("id"))
                   .union(tables["ext.omics"].select("sample_id"))
                   .union(tables["omop.measurement"].select("measurement_id")))
            assert ids.count() == ids.distinct().count()
        records.unpersist()
    one, three = fingerprints
    assert {"omop.death", "ext.imaging", "ext.omics", "truth.treatment_response"} <= set(one)
    assert one == three
    # Deaths are rare enough that a small registry may have none; every other table has rows.
    assert all(count > 0 for name, (count, _) in one.items() if name != "omop.death")


# Fingerprints of what the simulator produces, computed on the code as it stood before the
# simulator became a package (issue 8). A refactor must leave every draw, row and value as it
# was; any change to the model's output must update these on purpose, saying why. (The whole
# registry's is conftest.PINNED_REGISTRY, which the job-script test checks the script against.)
PINNED_PATIENTS_SHA256 = "17187f239d492e4ecbc7c5077ca8582d178056f639dc9192a9a50460a37cc144"


def _exact(value):
    """What json cannot write itself (numpy scalars), named by type so no type change hides."""
    return f"{type(value).__name__}:{value!r}"


def patients_fingerprint(person_ids, seed: int) -> str:
    """sha256 of every row of the patients, in order; json writes floats as their repr."""
    digest = hashlib.sha256()
    for pid in person_ids:
        rows = simulate_patient(pid, seed, ORIGIN, SPAN)
        digest.update(json.dumps(rows, default=_exact, allow_nan=True).encode())
    return digest.hexdigest()


def test_simulated_patients_match_their_pinned_fingerprint():
    assert patients_fingerprint(range(1, 151), 7) == PINNED_PATIENTS_SHA256


def test_generated_registry_matches_its_pinned_fingerprint(spark):
    tables, records = generate_registry(spark, GenerateConfig(60, 3, 2, "2012-01-01", "2025-12-31"))
    got = {name: table_fingerprint(frame) for name, frame in sorted(tables.items())}
    records.unpersist()
    assert got == PINNED_REGISTRY
