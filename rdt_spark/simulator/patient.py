"""One patient's simulated course, from diagnosis to death, loss to follow-up or the extract.

Each patient is simulated on its own from random streams seeded by (global seed, person_id), so
the registry is identical whatever the partitioning. ``simulate_patient`` walks one patient week
by week and writes what a registry would have recorded (visits, conditions, measurements with
units and missingness, drug exposures, notes, radiograph scores, an omics sample) and what only
the simulator knows (``truth_latent``, ``truth_response``), as ``records.RECORD_SCHEMA`` lists.
The disease and care model lives in ``disease`` and ``care``; notes, radiographs and omics in
``notes`` and ``modalities``.

Example: ``simulate_patient(1, 7, dt.datetime(2012, 1, 1), 5000)`` returns 110 rows, the first
the person and one of them the anti-CCP measured at the first visit (row 100002):

    ["person", 100001, 1, 8532, -261619200000000, None, None, None, None, None, "F", None, None,
     None, 8, None, None, None]
    ["measurement", 100005, 1, 3030367, 1479654900000000, None, 113.8, None, "U/mL", 8763,
     "33935-8", None, None, 100002, None, None, None, None]
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np

from rdt_spark.simulator import concepts as C
from rdt_spark.simulator.care import choose_class, choose_ingredient
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
    N_BATCHES,
    PLATFORMS,
    add_damage,
    expression,
)
from rdt_spark.simulator.notes import VisitState, write_note
from rdt_spark.simulator.records import _I, N_EROSION, N_JSN, Rows

DAY_US = 86_400_000_000
MG_PER_DL_SITES = {17, 18, 19, 20}  # these care sites' labs report CRP in mg/dL

# What a registry records, and how often (shares of visits or patients).
P_NOTE = 0.65  # visits with a clinical note
P_JOINT_COUNTS = 0.95
P_ESR, P_CRP, P_PGA, P_HAQ = 0.80, 0.88, 0.92, 0.70
P_RF_TESTED, P_CCP_TESTED = 0.95, 0.85
SEROLOGY_CUTOFF = 20.0  # RF [IU]/mL and anti-CCP U/mL upper limit of normal


def simulate_patient(person_id: int, seed: int, origin: dt.datetime, span_days: float) -> list:
    """All rows of one patient (OMOP, ext and truth), as RECORD_SCHEMA lists."""
    rng = np.random.default_rng([seed, person_id])
    d = Draws(rng)
    span_weeks = int(span_days // 7)
    z = draw_latent(d, span_weeks)
    ph = PHENOTYPES[z.phenotype]
    rows = Rows(person_id)
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
            ingredients[chosen] = choose_ingredient(d, chosen, previous if chosen in ADVANCED else None)
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
