"""A synthetic rheumatoid-arthritis registry in OMOP CDM v5.4 shape, with its hidden truth.

Each patient is simulated on its own from random streams seeded by (global seed, person_id), so
the registry is identical whatever the partitioning. The disease and care model lives in
``disease``; notes, radiographs and omics in ``notes`` and ``modalities``. This module walks one
patient week by week from diagnosis to death, loss to follow-up or the extract, writes what a
registry would have recorded (visits, conditions, measurements with units and missingness, drug
exposures, notes, radiograph scores, an omics sample) and what only the simulator knows
(``truth.*``), then splits the rows into Delta-ready Spark frames.

Example: ``simulate_patient(1, 7, origin, 5000)`` returns RECORD_SCHEMA tuples such as
("measurement", 100005, 1, 3020460, <micros>, None, 12.4, None, "mg/L", 8751, "1988-5", ...).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from rdt_spark import schemas
from rdt_spark.sharp_score import EROSION_MAX, JSN_MAX
from rdt_spark.simulator import concepts as C
from rdt_spark.simulator.disease import (
    ADVANCED,
    DRUG_CLASSES,
    FLARE_DECAY,
    PHENOTYPES,
    STOP_RATE_PER_YEAR,
    STOP_REASONS,
    TARGET_DAS28,
    Draws,
    Drug,
    Latent,
    components,
    counterfactual_activity,
    das28_crp,
    das28_esr,
    draw_latent,
    efficacy,
    eular_response,
    regimen_efficacy,
    regimen_under,
    settled,
)
from rdt_spark.simulator.modalities import (
    GENE_SYMBOLS,
    N_BATCHES,
    PLATFORMS,
    add_damage,
    expression,
)
from rdt_spark.simulator.notes import VisitState, write_note

# One long record per output row; the per-table frames below select from it. Columns a table
# does not use stay null (cheap in Arrow and Parquet).
RECORD_SCHEMA = StructType([
    StructField("table", StringType()),
    StructField("row_id", LongType()),
    StructField("person_id", LongType()),
    StructField("concept_id", LongType()),
    StructField("start", LongType()),  # microseconds since the epoch (UTC)
    StructField("end", LongType()),
    StructField("value", DoubleType()),
    StructField("value2", DoubleType()),
    StructField("unit", StringType()),
    StructField("unit_concept_id", LongType()),
    StructField("source_value", StringType()),
    StructField("text", StringType()),
    StructField("extra", StringType()),
    StructField("visit_id", LongType()),
    StructField("care_site_id", IntegerType()),
    StructField("flag", BooleanType()),
    StructField("ints", ArrayType(IntegerType())),
    StructField("floats", ArrayType(FloatType())),
])
_FIELDS = RECORD_SCHEMA.fieldNames()
_WIDTH = len(_FIELDS)
_I = {name: i for i, name in enumerate(_FIELDS)}

ROWS_PER_PATIENT = 100_000  # row ids are person_id * ROWS_PER_PATIENT + sequence
PATIENTS_PER_CHUNK = 500  # patients per frame handed back to Spark: bounds worker memory
DAY_US = 86_400_000_000
MG_PER_DL_SITES = {17, 18, 19, 20}  # these care sites' labs report CRP in mg/dL
N_EROSION = len(EROSION_MAX)
N_JSN = len(JSN_MAX)

# What a registry records, and how often (shares of visits or patients).
P_NOTE = 0.65  # visits with a clinical note
P_JOINT_COUNTS = 0.95
P_ESR, P_CRP, P_PGA, P_HAQ = 0.80, 0.88, 0.92, 0.70
P_RF_TESTED, P_CCP_TESTED = 0.95, 0.85
SEROLOGY_CUTOFF = 20.0  # RF [IU]/mL and anti-CCP U/mL upper limit of normal

INGREDIENT_WEIGHTS = {
    "methotrexate": [1.0], "csdmard": [0.45, 0.30, 0.25], "tnf_inhibitor": [0.35, 0.3, 0.15, 0.1, 0.1],
    "il6r_inhibitor": [0.75, 0.25], "abatacept": [1.0], "rituximab": [1.0],
    "jak_inhibitor": [0.4, 0.3, 0.3],
}
LATENT_JSON_FIELDS = StructType([
    StructField("phenotype", StringType()),
    StructField("phenotype_id", IntegerType()),
    StructField("female", BooleanType()),
    StructField("age_at_diagnosis", DoubleType()),
    StructField("symptom_months", DoubleType()),
    StructField("smoking", StringType()),
    StructField("comorbidities", ArrayType(StringType())),
    StructField("rf_positive", BooleanType()),
    StructField("ccp_positive", BooleanType()),
    StructField("untreated_activity", DoubleType()),
    StructField("activity_floor", DoubleType()),
    StructField("flare_rate_per_year", DoubleType()),
    StructField("responsiveness", DoubleType()),
    StructField("drug_response", StringType()),  # JSON: class -> first-line efficacy (0..1)
    StructField("care_site_id", IntegerType()),
    StructField("end_reason", StringType()),  # death / lost_to_follow_up / extract
    StructField("flares", IntegerType()),
    StructField("treatment_decisions", IntegerType()),
])


class _Rows:
    """Collects one patient's rows (as lists, so drug end dates can be settled later)."""

    def __init__(self, person_id: int):
        self.person_id, self.seq, self.rows = person_id, 0, []

    def add(self, table: str, concept: int = 0, start: int | None = None, **cols) -> int:
        self.seq += 1
        row_id = self.person_id * ROWS_PER_PATIENT + self.seq
        row = [table, row_id, self.person_id, concept, start] + [None] * (_WIDTH - 5)
        for name, value in cols.items():
            row[_I[name]] = value
        self.rows.append(row)
        return row_id

    def measurement(self, concept: C.Concept, start: int, visit_id: int, value: float,
                    unit: str, unit_concept: int) -> None:
        """The commonest row, built without keyword handling (a patient has hundreds)."""
        self.seq += 1
        self.rows.append(["measurement", self.person_id * ROWS_PER_PATIENT + self.seq,
                          self.person_id, concept.concept_id, start, None, value, None, unit,
                          unit_concept, concept.concept_code, None, None, visit_id, None, None,
                          None, None])


def _ingredient(d: Draws, drug_class: str, avoid: C.Concept | None = None) -> C.Concept:
    options = C.DRUG_CLASS_INGREDIENTS[drug_class]
    weights = list(INGREDIENT_WEIGHTS[drug_class])
    if avoid in options and len(options) > 1:
        weights[options.index(avoid)] = 0.0
    return d.pick(options, weights)


def choose_class(d: Draws, z: Latent, regimen: list[Drug], failed: list[str],
                 first: bool) -> str:
    """The class a rheumatologist starts at this decision (treat-to-target habits, 2010s)."""
    if first:
        return "csdmard" if ("chronic_kidney_disease" in z.comorbidities or d.chance(0.06)) \
            else "methotrexate"
    on = {drug.drug_class for drug in regimen}
    seropositive = z.rf_positive or z.ccp_positive
    if not (on & ADVANCED) and not failed and "csdmard" not in on and d.chance(0.25):
        return "csdmard"  # triple therapy before a biologic
    weights = {"tnf_inhibitor": 0.62, "jak_inhibitor": 0.14, "il6r_inhibitor": 0.10,
               "abatacept": 0.08, "rituximab": 0.06 if seropositive else 0.0}
    if failed:  # after a failed advanced drug: cycle a TNF inhibitor once, else switch mechanism
        weights = {"tnf_inhibitor": 0.35 if failed.count("tnf_inhibitor") < 2 else 0.0,
                   "jak_inhibitor": 0.22, "il6r_inhibitor": 0.18, "abatacept": 0.12,
                   "rituximab": 0.18 if seropositive else 0.02}
        for c in failed:
            if c != "tnf_inhibitor":
                weights[c] *= 0.2
    classes = list(weights)
    return d.pick(classes, [weights[c] for c in classes])


def simulate_patient(person_id: int, seed: int, origin: dt.datetime, span_days: float) -> list:
    """All rows of one patient (OMOP, ext and truth), as RECORD_SCHEMA lists."""
    rng = np.random.default_rng([seed, person_id])
    d = Draws(rng)
    span_weeks = int(span_days // 7)
    z = draw_latent(d, span_weeks)
    ph = PHENOTYPES[z.phenotype]
    rows = _Rows(person_id)
    origin_us = int((origin - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    diagnosis_day = 7 * z.diagnosis_week
    extract_us = origin_us + int(span_days) * DAY_US

    def at(day: float) -> int:
        return origin_us + int(day * DAY_US)

    gender = C.FEMALE if z.female else C.MALE
    birth_us = at(diagnosis_day - z.age * 365.25)
    birth_us -= birth_us % DAY_US  # born at midnight
    rows.add("person", gender.concept_id, birth_us, source_value=gender.concept_code,
             care_site_id=z.care_site)

    # The horizon: the extract, death or loss to follow-up, whichever comes first.
    to_extract = (span_days - diagnosis_day) / 7
    horizon = min(to_extract, z.death_week, z.lost_week)
    end_reason = ("death" if horizon == z.death_week else
                  "lost_to_follow_up" if horizon == z.lost_week else "extract")
    n_weeks = int(horizon)
    # Per-week draws, made as vectors up front (26 weeks beyond for counterfactuals).
    n_draw = n_weeks + 28
    innovations = (0.18 * rng.standard_normal(n_draw)).tolist()
    noise_l, ar = [], 0.0
    for e in innovations:  # slow AR(1) wander of activity
        ar = 0.85 * ar + e
        noise_l.append(ar)
    noise = np.array(noise_l)
    flare_u = rng.random(n_draw)
    flare_size = 1.5 + 0.4 * rng.standard_normal(n_draw)
    flare_u_l = flare_u.tolist()
    flare_size_l = flare_size.tolist()
    # Weekly flare probability min(0.25, rate / 52 * exp(0.5 * (level - 3.2))), as in
    # counterfactual_activity, with the constant factor taken out of the loop.
    flare_k = ph.flare_rate / 52 * math.exp(-1.6)

    mg_dl = z.care_site in MG_PER_DL_SITES
    erosion = np.zeros(N_EROSION, dtype=np.int64)
    jsn = np.zeros(N_JSN, dtype=np.int64)
    add_damage(rng, erosion, jsn, ph.baseline_mtss * (0.5 + z.symptom_months / 14))
    damage_units = 0.0

    regimen: list[Drug] = []
    ingredients: dict[str, C.Concept] = {}
    open_rows: dict[str, list] = {}  # drug class -> its latest drug_exposure row
    failed: list[str] = []  # advanced classes stopped for inefficacy
    pred = (-1, -1)
    bump, last_start, decisions, flares, das_at_start = 0.0, 0, 0, 0, 0.0
    next_visit, flare_visit, next_xray, review = 0, -1, 0, -1
    last_visit_week, last_visit_us, first = 0, at(diagnosis_day), True
    flare_since_visit = False
    first_line: dict[str, float] = {}

    settled_week, settled_efficacy, on_advanced = 0, 0.0, False
    for w in range(n_weeks + 1):
        untreated = z.untreated - ph.natural_drop * min(1.0, w / 52) if ph.natural_drop \
            else z.untreated
        e = settled_efficacy if w >= settled_week else regimen_efficacy(regimen, w)
        level = untreated - e * max(untreated - z.floor, 0.0)
        if pred[0] <= w < pred[1]:
            level -= 1.1 * (pred[1] - w) / (pred[1] - pred[0])  # tapering bridging steroid
        activity = level + bump + noise_l[w]
        if flare_u_l[w] < min(0.25, flare_k * math.exp(0.5 * level)):
            bump += flare_size_l[w]
            flares += 1
            flare_since_visit = True
            if flare_visit < w:
                flare_visit = w + 1 + (1 if d.uniform() < 0.4 else 0)
        bump *= FLARE_DECAY
        if activity > 2.4:
            damage_units += ph.progression * (activity - 2.4) / 52 * (0.45 if on_advanced else 1.0)
        is_flare_visit = w == flare_visit
        if w != next_visit and not is_flare_visit:
            continue

        # -- the visit ---------------------------------------------------------------------
        visit_us = at(diagnosis_day + 7 * w + d.integer(0, 4)) + (
            8 * 60 + 30 + 15 * d.integer(0, 34)) * 60_000_000
        visit_us = max(visit_us, last_visit_us + 60_000_000)
        if visit_us >= extract_us - DAY_US:  # nothing is recorded after the extract
            break
        weeks_since = w - last_visit_week
        visit_id = rows.add("visit_occurrence", C.OUTPATIENT_VISIT.concept_id, visit_us,
                            end=visit_us + 30 * 60_000_000, source_value="rheumatology clinic",
                            care_site_id=z.care_site)

        def measure(concept: C.Concept, value: float, unit: str, unit_concept: int = 0,
                    at_us: int = visit_us, visit: int = visit_id) -> None:
            rows.measurement(concept, at_us, visit, value, unit, unit_concept)

        if first:
            rows.add("condition_occurrence", C.RHEUMATOID_ARTHRITIS.concept_id, visit_us,
                     source_value="M06.9", visit_id=visit_id)
            for name in z.comorbidities:
                concept = C.COMORBIDITIES[name]
                rows.add("condition_occurrence", concept.concept_id, visit_us,
                         source_value=concept.concept_code, visit_id=visit_id)
            if d.chance(P_RF_TESTED):
                rf = math.exp(math.log(110 if z.rf_positive else 8) + 0.7 * d.normal())
                rf = max(rf, SEROLOGY_CUTOFF + 2) if z.rf_positive else min(rf, SEROLOGY_CUTOFF - 1)
                measure(C.RHEUMATOID_FACTOR, round(rf, 1), "[IU]/mL", C.IU_PER_ML.concept_id)
            if d.chance(P_CCP_TESTED):
                ccp = math.exp(math.log(180 if z.ccp_positive else 3) + 0.8 * d.normal())
                ccp = max(ccp, SEROLOGY_CUTOFF + 2) if z.ccp_positive else min(
                    ccp, SEROLOGY_CUTOFF - 1)
                measure(C.ANTI_CCP, round(ccp, 1), "U/mL", C.U_PER_ML.concept_id)
        if is_flare_visit or (flare_since_visit and d.chance(0.5)):
            rows.add("condition_occurrence", C.RA_FLARE.concept_id, visit_us,
                     source_value="RA flare", visit_id=visit_id)

        # Adverse events and intolerance since the last visit stop drugs.
        stopped_text, forced = None, False
        for drug in list(regimen):
            p_stop = 1 - math.exp(-STOP_RATE_PER_YEAR[drug.drug_class] * (1 + max(
                z.age - 65, 0) / 30) * weeks_since / 52)
            if not first and d.chance(p_stop):
                reason = d.pick(STOP_REASONS[drug.drug_class])
                regimen.remove(drug)
                row = open_rows.pop(drug.drug_class)
                row[_I["end"]] = last_visit_us + int((visit_us - last_visit_us) * d.uniform())
                row[_I["extra"]] = reason
                stopped_text = f"{ingredients[drug.drug_class].name}: {reason.split(': ')[-1]}"
                forced = forced or drug.drug_class in ADVANCED or not regimen

        # What the visit measures.
        tjc, sjc, esr, crp, pga = components(d, activity, z.female, z.age)
        esr, crp, pga = float(round(esr)), round(crp, 1), float(round(pga))  # as recorded
        mtss = int(erosion.sum() + jsn.sum())
        haq = min(3.0, max(0.0, round((0.3 * (activity - 2) + 0.25 + mtss / 150
                                       + 0.2 * d.normal()) * 8) / 8))
        has_counts, has_pga = d.chance(P_JOINT_COUNTS), d.chance(P_PGA)
        has_esr, has_crp, has_haq = d.chance(P_ESR), d.chance(P_CRP), d.chance(P_HAQ)
        das_esr = round(das28_esr(tjc, sjc, esr, pga), 2) if (
            has_counts and has_pga and has_esr) else None
        das_crp = round(das28_crp(tjc, sjc, crp, pga), 2) if (
            has_counts and has_pga and has_crp) else None
        if has_counts:
            measure(C.TENDER_JOINTS, float(tjc), "{count}")
            measure(C.SWOLLEN_JOINTS, float(sjc), "{count}")
        if has_pga:
            measure(C.PATIENT_GLOBAL, pga, "mm", C.MILLIMETER.concept_id)
        if has_esr:
            measure(C.ESR, esr, "mm/h", C.MM_PER_H.concept_id)
        if has_crp:
            if mg_dl:
                measure(C.CRP, round(crp / 10, 2), "mg/dL", C.MG_PER_DL.concept_id)
            else:
                measure(C.CRP, crp, "mg/L", C.MG_PER_L.concept_id)
        if has_haq:
            measure(C.HAQ_DI, haq, "{score}")
        if das_esr is not None:
            measure(C.DAS28_ESR, das_esr, "{score}")
        if das_crp is not None:
            measure(C.DAS28_CRP, das_crp, "{score}")
        # The clinician's view of activity: a measured DAS28, else a clinical impression.
        observed = das_esr if das_esr is not None else das_crp
        judged = observed if observed is not None else activity + 0.5 * d.normal()

        # Treat-to-target.
        decide = first or forced or not regimen
        if not decide and judged > TARGET_DAS28 and w - last_start >= 12 and decisions < 8:
            # Treat-to-target: at 3 months escalate only without a meaningful improvement
            # (DAS28 fall under 1.2); from 6 months whenever the target is missed.
            if w - last_start < 24:
                p = 0.5 if das_at_start - judged < 1.2 else 0.0
            else:
                p = 0.85
            decide = d.chance(p)
            if decide:
                for drug in regimen:  # the failing advanced drug counts as failed
                    if drug.drug_class in ADVANCED:
                        failed.append(drug.drug_class)
        started = None
        if decide:
            decisions += 1
            chosen = choose_class(d, z, regimen, failed, first)
            if (first and d.chance(0.55)) or (not first and d.chance(0.25)):
                pred = (w, w + 8 + d.integer(0, 6))
            # Counterfactual 6-month response under every class, on the same draws.
            efficacies = {c: efficacy(z, c, failed) for c in DRUG_CLASSES}
            if first:
                first_line = {c: round(e, 4) for c, e in efficacies.items()}
            at_26 = counterfactual_activity(z, regimen, w, bump, pred, efficacies, noise,
                                            flare_u, flare_size).tolist()
            for drug_class, activity_26 in zip(DRUG_CLASSES, at_26, strict=True):
                arm = regimen_under(regimen, drug_class, efficacies[drug_class], w)
                rows.add("truth_response", decisions, visit_us, value=round(activity, 3),
                         value2=round(activity_26, 3), source_value=drug_class,
                         extra=eular_response(activity, activity_26), flag=drug_class == chosen,
                         text="+".join(sorted(x.drug_class for x in arm)), visit_id=visit_id,
                         floats=[round(efficacies[drug_class], 4)])
            if chosen in ADVANCED:  # the advanced drug it replaces stops for inefficacy
                for drug in regimen:
                    if drug.drug_class in ADVANCED and drug.drug_class in open_rows:
                        row = open_rows.pop(drug.drug_class)
                        row[_I["end"]], row[_I["extra"]] = visit_us, "inefficacy"
            regimen = regimen_under(regimen, chosen, efficacies[chosen], w)
            previous = ingredients.get(chosen)
            ingredients[chosen] = _ingredient(d, chosen, previous if chosen in ADVANCED else None)
            started = ingredients[chosen].name
            last_start, das_at_start = w, judged
            review = w + 25 + d.integer(0, 3)
        if is_flare_visit and not decide and d.chance(0.5):
            pred = (w, w + 4 + d.integer(0, 3))

        # Drug exposures: one row per drug taken, open until the next visit settles its end.
        for drug in regimen:
            row = open_rows.get(drug.drug_class)
            if row is not None:
                row[_I["end"]] = visit_us
            concept = ingredients[drug.drug_class]
            rows.add("drug_exposure", concept.concept_id, visit_us, source_value=concept.name,
                     visit_id=visit_id)
            open_rows[drug.drug_class] = rows.rows[-1]
        if pred[0] <= w < pred[1]:
            rows.add("drug_exposure", C.PREDNISONE.concept_id, visit_us,
                     end=at(diagnosis_day + 7 * pred[1]), source_value=C.PREDNISONE.name,
                     visit_id=visit_id)

        if d.chance(0.9 if first else P_NOTE):
            state = VisitState(first, tjc, sjc, observed, "ESR" if das_esr is not None else "CRP",
                               is_flare_visit or flare_since_visit,
                               tuple(x.drug_class for x in regimen), started, stopped_text,
                               z.smoking, pred[0] <= w < pred[1], haq if has_haq else None)
            rows.add("note", C.RHEUM_NOTE.concept_id, visit_us, source_value="rheumatology note",
                     text=write_note(d, state), visit_id=visit_id)

        if z.has_imaging and w >= next_xray:
            add_damage(rng, erosion, jsn, damage_units)
            damage_units = 0.0
            rows.add("imaging", 0, visit_us, visit_id=visit_id,
                     ints=erosion.tolist() + jsn.tolist())
            next_xray = w + d.integer(52, 105)
        if first and z.has_omics:
            batch = min(N_BATCHES - 1, z.diagnosis_week * N_BATCHES // max(span_weeks, 1))
            rows.add("omics", 0, visit_us, visit_id=visit_id, extra=f"B{batch + 1:02d}",
                     source_value=PLATFORMS[batch >= 6],
                     floats=expression(rng, z.phenotype, batch, activity))

        # When to come back: sooner while active, a review 3 and 6 months after a start.
        if not is_flare_visit or w == next_visit:
            low, high = (4, 9) if judged > 5.1 else (8, 14) if judged > TARGET_DAS28 else (13, 27)
            next_visit = w + d.integer(low, high)
            if review > w:
                next_visit = min(next_visit, review)
            if w == last_start and decide:
                next_visit = min(next_visit, w + 11 + d.integer(0, 3))
        last_visit_week, last_visit_us = w, visit_us
        settled_week, settled_efficacy = settled(regimen)  # the regimen changes only at visits
        on_advanced = any(drug.drug_class in ADVANCED for drug in regimen)
        first, flare_since_visit = False, False

    # Close what is still open at the end of follow-up.
    end_us = last_visit_us
    if end_reason == "death":
        death_us = at(diagnosis_day + 7 * z.death_week)
        death_us = max(death_us, last_visit_us + DAY_US)
        rows.add("death", 0, death_us)
        end_us = death_us
    for row in open_rows.values():
        row[_I["end"]] = min(last_visit_us + 91 * DAY_US, end_us if end_reason == "death"
                             else extract_us)
    for row in rows.rows:
        if row[0] == "drug_exposure" and row[_I["end"]] is None:
            row[_I["end"]] = min(last_visit_us + 91 * DAY_US, extract_us)
    rows.add("observation_period", 0, at(diagnosis_day), end=end_us)
    latent = {
        "phenotype": ph.name, "phenotype_id": z.phenotype, "female": z.female,
        "age_at_diagnosis": round(z.age, 2), "symptom_months": round(z.symptom_months, 2),
        "smoking": z.smoking, "comorbidities": z.comorbidities, "rf_positive": z.rf_positive,
        "ccp_positive": z.ccp_positive, "untreated_activity": round(z.untreated, 3),
        "activity_floor": round(z.floor, 3), "flare_rate_per_year": ph.flare_rate,
        "responsiveness": round(z.responsiveness, 3),
        "drug_response": json.dumps(first_line, sort_keys=True), "care_site_id": z.care_site,
        "end_reason": end_reason, "flares": flares, "treatment_decisions": decisions,
    }
    rows.add("truth_latent", 0, at(diagnosis_day), text=json.dumps(latent))
    return rows.rows


def latent_truth(person_id: int, seed: int, span_days: float) -> tuple:
    """(person_id, phenotype name, phenotype id) from the first draws simulate_patient makes."""
    d = Draws(np.random.default_rng([seed, person_id]))
    z = draw_latent(d, int(span_days // 7))
    return person_id, PHENOTYPES[z.phenotype].name, z.phenotype


def _span(start_date: str, extract_date: str) -> tuple[dt.datetime, float]:
    origin = dt.datetime.fromisoformat(start_date)
    return origin, (dt.datetime.fromisoformat(extract_date) - origin).days


def _table_of(row: list) -> str:
    return row[0]


def _record_partitions(seed: int, start_date: str, extract_date: str):
    origin, span = _span(start_date, extract_date)

    def simulate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            people = batch["person_id"].tolist()
            for first in range(0, len(people), PATIENTS_PER_CHUNK):
                yield _frame([r for pid in people[first:first + PATIENTS_PER_CHUNK]
                              for r in simulate_patient(int(pid), seed, origin, span)])

    return simulate


def _frame(rows: list[list]) -> pd.DataFrame:
    # Grouped by table, so the cached records' column batches each hold (mostly) one table and
    # every per-table select skips the others' batches by their statistics.
    rows.sort(key=_table_of)
    columns = zip(*rows, strict=True) if rows else [[] for _ in _FIELDS]
    return pd.DataFrame(dict(zip(_FIELDS, columns, strict=True)), columns=_FIELDS)


def _ts(col: str) -> F.Column:
    return F.timestamp_micros(F.col(col))


def _date(col: str) -> F.Column:
    return F.to_date(_ts(col))


def omop_tables(records: DataFrame) -> dict[str, DataFrame]:
    """Split the long records into OMOP CDM v5.4 tables (field names as the standard spells them)."""
    def of(table: str) -> DataFrame:
        return records.where(F.col("table") == table)

    ehr_type = F.lit(32817)  # Type Concept "EHR"
    return {
        "person": of("person").select(
            F.col("person_id"), F.col("concept_id").cast("int").alias("gender_concept_id"),
            F.year(_ts("start")).alias("year_of_birth"),
            F.month(_ts("start")).alias("month_of_birth"),
            F.dayofmonth(_ts("start")).alias("day_of_birth"), _ts("start").alias("birth_datetime"),
            F.lit(0).alias("race_concept_id"), F.lit(0).alias("ethnicity_concept_id"),
            F.col("care_site_id").cast("long").alias("care_site_id"),
            F.col("person_id").cast("string").alias("person_source_value"),
            F.col("source_value").alias("gender_source_value")),
        "death": of("death").select(
            "person_id", _date("start").alias("death_date"), _ts("start").alias("death_datetime"),
            ehr_type.alias("death_type_concept_id"), F.lit(0).alias("cause_concept_id")),
        "observation_period": of("observation_period").select(
            F.col("row_id").alias("observation_period_id"), "person_id",
            _date("start").alias("observation_period_start_date"),
            _date("end").alias("observation_period_end_date"),
            F.lit(32817).alias("period_type_concept_id")),
        "visit_occurrence": of("visit_occurrence").select(
            F.col("row_id").alias("visit_occurrence_id"), "person_id",
            F.col("concept_id").cast("int").alias("visit_concept_id"),
            _date("start").alias("visit_start_date"), _ts("start").alias("visit_start_datetime"),
            _date("end").alias("visit_end_date"), _ts("end").alias("visit_end_datetime"),
            ehr_type.alias("visit_type_concept_id"),
            F.col("care_site_id").cast("long").alias("care_site_id"),
            F.col("source_value").alias("visit_source_value")),
        "condition_occurrence": of("condition_occurrence").select(
            F.col("row_id").alias("condition_occurrence_id"), "person_id",
            F.col("concept_id").cast("int").alias("condition_concept_id"),
            _date("start").alias("condition_start_date"),
            _ts("start").alias("condition_start_datetime"),
            ehr_type.alias("condition_type_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("condition_source_value")),
        "drug_exposure": of("drug_exposure").select(
            F.col("row_id").alias("drug_exposure_id"), "person_id",
            F.col("concept_id").cast("int").alias("drug_concept_id"),
            _date("start").alias("drug_exposure_start_date"),
            _ts("start").alias("drug_exposure_start_datetime"),
            _date("end").alias("drug_exposure_end_date"),
            _ts("end").alias("drug_exposure_end_datetime"),
            ehr_type.alias("drug_type_concept_id"),
            F.col("extra").alias("stop_reason"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("drug_source_value")),
        "measurement": of("measurement").select(
            F.col("row_id").alias("measurement_id"), "person_id",
            F.col("concept_id").cast("int").alias("measurement_concept_id"),
            _date("start").alias("measurement_date"), _ts("start").alias("measurement_datetime"),
            ehr_type.alias("measurement_type_concept_id"), F.col("value").alias("value_as_number"),
            F.col("unit_concept_id").cast("int").alias("unit_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("measurement_source_value"),
            F.col("unit").alias("unit_source_value")),
        "note": of("note").select(
            F.col("row_id").alias("note_id"), "person_id", _date("start").alias("note_date"),
            _ts("start").alias("note_datetime"), F.lit(32831).alias("note_type_concept_id"),
            F.col("concept_id").cast("int").alias("note_class_concept_id"),
            F.lit("Rheumatology visit").alias("note_title"), F.col("text").alias("note_text"),
            F.lit(32678).alias("encoding_concept_id"), F.lit(4180186).alias("language_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("note_source_value")),
    }


def ext_tables(records: DataFrame) -> dict[str, DataFrame]:
    """``ext.imaging`` and ``ext.omics`` conformed to their contracts in ``schemas``."""
    imaging = records.where(F.col("table") == "imaging").select(
        F.col("row_id").alias("imaging_id"), "person_id",
        F.col("visit_id").alias("visit_occurrence_id"), _ts("start").alias("imaging_datetime"),
        _date("start").alias("imaging_date"), F.lit("XR").alias("modality"),
        F.lit("hands_feet").alias("body_site"),
        F.slice("ints", 1, N_EROSION).alias("erosion_scores"),
        F.slice("ints", N_EROSION + 1, N_JSN).alias("jsn_scores"))
    omics = records.where(F.col("table") == "omics").select(
        F.col("row_id").alias("sample_id"), "person_id",
        F.col("visit_id").alias("visit_occurrence_id"), _ts("start").alias("sample_datetime"),
        F.lit("whole blood").alias("specimen"), F.col("source_value").alias("platform"),
        F.col("extra").alias("batch"), F.col("floats").alias("expression"))
    return {"imaging": schemas.conform(imaging, schemas.EXT_IMAGING),
            "omics": schemas.conform(omics, schemas.EXT_OMICS)}


def omics_genes_table(spark: SparkSession) -> DataFrame:
    genes = spark.createDataFrame(list(enumerate(GENE_SYMBOLS)), "gene_index int, gene_symbol string")
    return schemas.conform(genes, schemas.EXT_OMICS_GENES)


def truth_tables(records: DataFrame) -> dict[str, DataFrame]:
    """``truth.patient_latent`` (one row per patient) and ``truth.treatment_response`` (one row
    per treatment decision and drug class: the EULAR response 6 months after starting it)."""
    latent = records.where(F.col("table") == "truth_latent").select(
        "person_id", F.from_json("text", LATENT_JSON_FIELDS).alias("z"),
        _ts("start").alias("diagnosis_datetime")).select("person_id", "z.*", "diagnosis_datetime")
    response = records.where(F.col("table") == "truth_response").select(
        "person_id", F.col("concept_id").cast("int").alias("decision_number"),
        _ts("start").alias("decision_time"), F.col("visit_id").alias("visit_occurrence_id"),
        F.col("source_value").alias("drug_class"), F.col("extra").alias("response"),
        F.col("flag").alias("chosen"), F.col("text").alias("regimen"),
        F.col("floats")[0].cast("double").alias("efficacy"),
        F.col("value").alias("das28_at_decision"), F.col("value2").alias("das28_at_6_months"))
    return {"patient_latent": latent, "treatment_response": response}


def concept_table(spark: SparkSession) -> DataFrame:
    rows = [(c.concept_id, c.name, c.domain_id, c.vocabulary_id, c.concept_class_id,
             "S" if c.vocabulary_id != "RDT" else None, c.concept_code,
             dt.date(1970, 1, 1), dt.date(2099, 12, 31), None) for c in C.ALL]
    return spark.createDataFrame(rows, "concept_id long, concept_name string, domain_id string, "
                                 "vocabulary_id string, concept_class_id string, "
                                 "standard_concept string, concept_code string, "
                                 "valid_start_date date, valid_end_date date, "
                                 "invalid_reason string")


def cdm_source_table(spark: SparkSession, extract_date: str) -> DataFrame:
    release = dt.date.fromisoformat(extract_date)
    return spark.createDataFrame(
        [("RDT synthetic registry", "RDT-SIM", "v5.4", release, release)],
        "cdm_source_name string, cdm_source_abbreviation string, cdm_version string, "
        "source_release_date date, cdm_release_date date")


def generate_registry(
    spark: SparkSession, patients: int, seed: int, partitions: int,
    start_date: str, extract_date: str,
) -> tuple[dict[str, DataFrame], DataFrame]:
    """All tables by their ``schema.name`` (omop.*, ext.*, truth.*), and the persisted records.

    Every table is a selection from one simulation pass; unpersist the records once the tables
    are written.
    """
    people = spark.range(1, patients + 1, numPartitions=partitions).withColumnRenamed(
        "id", "person_id")
    records = people.mapInPandas(
        _record_partitions(seed, start_date, extract_date), RECORD_SCHEMA
    ).persist(StorageLevel.MEMORY_AND_DISK)
    tables = {f"omop.{name}": frame for name, frame in omop_tables(records).items()}
    tables["omop.concept"] = concept_table(spark)
    tables["omop.cdm_source"] = cdm_source_table(spark, extract_date)
    tables.update({f"ext.{name}": frame for name, frame in ext_tables(records).items()})
    tables["ext.omics_genes"] = omics_genes_table(spark)
    tables.update({f"truth.{name}": frame for name, frame in truth_tables(records).items()})
    return tables, records
