"""One patient's simulated course, from diagnosis to death, loss to follow-up or the extract.

Each patient is simulated on its own from random streams seeded by (global seed, person_id), so
the registry is identical whatever the partitioning. ``simulate_patient`` walks one patient week
by week and writes what a registry would have recorded (visits, conditions, measurements with
units and missingness, drug exposures, notes, radiograph scores, an omics sample) and what only
the simulator knows (``truth_latent``, ``truth_response``), as ``records.RECORD_SCHEMA`` lists.
The disease and care model lives in ``disease`` and ``care``; notes, radiographs and omics in
``notes`` and ``modalities``.

Three small objects carry the walk: a ``Patient`` (what is fixed: the hidden truth, the random
streams, the calendar and the per-week draws), a ``Course`` (what evolves week to week: activity,
flares, damage, the regimen and its open drug rows, the visit schedule) and a ``Visit`` (what one
visit found and decided). Each kind of step is one function, called in ``simulate_patient``'s
loop in the order the clinic works. That order is also the order of the random draws: the
``Draws`` and the numpy generator are consumed in sequence, so moving a step, or a draw within
one, changes every patient (``tests/test_simulate.py`` pins the output).

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
from dataclasses import dataclass, field

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
    Latent,
    Phenotype,
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



@dataclass(slots=True)
class Patient:
    """What is fixed for one patient's whole course, and where its rows go."""

    z: Latent
    ph: Phenotype
    rng: np.random.Generator  # radiograph damage and omics draw from it directly
    d: Draws  # every other draw
    rows: Rows
    origin_us: int  # the registry start, microseconds since the epoch
    diagnosis_day: int  # days after the registry start
    extract_us: int
    span_weeks: int  # registry start to extract
    n_weeks: int  # weeks of follow-up: to the extract, death or loss to follow-up
    end_reason: str  # death / lost_to_follow_up / extract
    # Per-week draws made up front, 28 weeks beyond follow-up for the counterfactuals; as lists
    # for the weekly loop (faster scalar access) and as arrays for the vectorised counterfactual.
    noise_l: list[float]  # slow AR(1) wander of activity
    flare_u_l: list[float]  # compared with the weekly flare probability
    flare_size_l: list[float]  # a flare's extra activity
    noise: np.ndarray
    flare_u: np.ndarray
    flare_size: np.ndarray
    flare_k: float  # the weekly flare probability's constant factor
    mg_dl: bool  # this care site's lab reports CRP in mg/dL

    def at(self, day: float) -> int:
        """Microseconds since the epoch at ``day`` days after the registry start."""
        return self.origin_us + int(day * DAY_US)

    def measure(self, v: Visit, concept: C.Concept, value: float, unit: str,
                unit_concept: int = 0) -> None:
        """A measurement taken at visit ``v``."""
        self.rows.measurement(concept, v.us, v.id, value, unit, unit_concept)


@dataclass(slots=True)
class Course:
    """What evolves week to week: the disease and its care, from diagnosis on."""

    erosion: np.ndarray  # per-joint radiographic scores, as of the last radiograph
    jsn: np.ndarray
    last_visit_us: int
    week: int = 0  # the next week to simulate
    activity: float = 0.0  # latent DAS28 in the week last simulated
    bump: float = 0.0  # extra activity from flares, decaying weekly
    flares: int = 0
    flare_since_visit: bool = False
    damage_units: float = 0.0  # expected mTSS units accrued since the last radiograph
    regimen: list[Drug] = field(default_factory=list)
    settled_week: int = 0  # from this week the regimen works at settled_efficacy
    settled_efficacy: float = 0.0
    on_advanced: bool = False  # an advanced drug slows radiographic progression
    ingredients: dict[str, C.Concept] = field(default_factory=dict)  # drug class -> ingredient
    open_rows: dict[str, list] = field(default_factory=dict)  # class -> latest drug_exposure row
    failed: list[str] = field(default_factory=list)  # advanced classes stopped for inefficacy
    pred: tuple[int, int] = (-1, -1)  # bridging prednisone: weeks [start, end)
    decisions: int = 0
    last_start: int = 0  # week of the latest treatment decision
    das_at_start: float = 0.0  # the DAS28 it was judged on
    review: int = -1  # week of the review after the latest start
    first_line: dict[str, float] = field(default_factory=dict)  # class -> efficacy at diagnosis
    next_visit: int = 0  # week of the next scheduled visit
    flare_visit: int = -1  # week of an unscheduled visit for a flare
    next_xray: int = 0
    last_visit_week: int = 0
    first: bool = True  # no visit yet

    def on_prednisone(self, week: int) -> bool:
        return self.pred[0] <= week < self.pred[1]


@dataclass(slots=True)
class Visit:
    """What one visit found and decided."""

    week: int
    us: int
    id: int  # its visit_occurrence row id
    weeks_since: int  # since the previous visit
    flare: bool  # an unscheduled visit for a flare
    activity: float  # latent DAS28 that week
    stopped: str | None = None  # "<ingredient>: <reason>" stopped for an adverse event
    forced: bool = False  # a stop that forces a treatment decision
    tjc: int = 0
    sjc: int = 0
    haq: float | None = None  # as recorded (None when not)
    observed: float | None = None  # the measured DAS28, ESR-based when there is one
    das28_kind: str = "ESR"
    judged: float = 0.0  # the clinician's view: the measured DAS28, else an impression
    decided: bool = False  # a treatment decision was made
    started: str | None = None  # the ingredient started


def simulate_patient(person_id: int, seed: int, origin: dt.datetime, span_days: float) -> list:
    """All rows of one patient (OMOP, ext and truth), as RECORD_SCHEMA lists."""
    p = _admit(person_id, seed, origin, span_days)
    _record_person(p)
    s = _course_at_diagnosis(p)
    while (week := _disease_until_visit(p, s)) is not None:
        v = _open_visit(p, s, week)
        if v is None:  # nothing is recorded after the extract
            break
        _record_diagnosis_and_flare(p, s, v)
        _stop_for_adverse_events(p, s, v)
        _measure(p, s, v)
        if _decides(p, s, v):
            _start_treatment(p, s, v)
        _bridge_flare(p, s, v)
        _record_drug_exposures(p, s, v)
        _record_note(p, s, v)
        _take_radiograph(p, s, v)
        _sample_omics(p, s, v)
        _schedule_next_visit(p, s, v)
        _close_visit(s, v)
    _close_follow_up(p, s)
    _record_latent_truth(p, s)
    return p.rows.rows


def latent_truth(person_id: int, seed: int, span_days: float) -> tuple:
    """(person_id, phenotype name, phenotype id) from the first draws simulate_patient makes."""
    _, _, z = _draw_latent(person_id, seed, span_days)
    return person_id, PHENOTYPES[z.phenotype].name, z.phenotype


def _draw_latent(person_id: int, seed: int,
                 span_days: float) -> tuple[np.random.Generator, Draws, Latent]:
    """The patient's random streams and hidden truth: always the first draws of a patient."""
    rng = np.random.default_rng([seed, person_id])
    d = Draws(rng)
    return rng, d, draw_latent(d, int(span_days // 7))


def _admit(person_id: int, seed: int, origin: dt.datetime, span_days: float) -> Patient:
    """The hidden truth, the follow-up horizon and the per-week draws."""
    rng, d, z = _draw_latent(person_id, seed, span_days)
    ph = PHENOTYPES[z.phenotype]
    origin_us = int((origin - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    diagnosis_day = 7 * z.diagnosis_week
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
    flare_u = rng.random(n_draw)
    flare_size = 1.5 + 0.4 * rng.standard_normal(n_draw)
    return Patient(
        z=z, ph=ph, rng=rng, d=d, rows=Rows(person_id), origin_us=origin_us,
        diagnosis_day=diagnosis_day, extract_us=origin_us + int(span_days) * DAY_US,
        span_weeks=int(span_days // 7), n_weeks=n_weeks, end_reason=end_reason,
        noise_l=noise_l, flare_u_l=flare_u.tolist(), flare_size_l=flare_size.tolist(),
        noise=np.array(noise_l), flare_u=flare_u, flare_size=flare_size,
        # Weekly flare probability min(0.25, rate / 52 * exp(0.5 * (level - 3.2))), as in
        # counterfactual_activity, with the constant factor taken out of the loop.
        flare_k=ph.flare_rate / 52 * math.exp(-1.6),
        mg_dl=z.care_site in MG_PER_DL_SITES,
    )


def _record_person(p: Patient) -> None:
    gender = C.FEMALE if p.z.female else C.MALE
    birth_us = p.at(p.diagnosis_day - p.z.age * 365.25)
    birth_us -= birth_us % DAY_US  # born at midnight
    p.rows.add("person", gender.concept_id, birth_us, source_value=gender.concept_code,
               care_site_id=p.z.care_site)


def _course_at_diagnosis(p: Patient) -> Course:
    """Untreated, with the radiographic damage accrued before diagnosis."""
    erosion = np.zeros(N_EROSION, dtype=np.int64)
    jsn = np.zeros(N_JSN, dtype=np.int64)
    add_damage(p.rng, erosion, jsn, p.ph.baseline_mtss * (0.5 + p.z.symptom_months / 14))
    return Course(erosion=erosion, jsn=jsn, last_visit_us=p.at(p.diagnosis_day))


def _disease_until_visit(p: Patient, s: Course) -> int | None:
    """Advance the disease week by week (activity, flares, damage) to the week of the next
    visit, scheduled or for a flare, and return that week; None when follow-up ends first.

    The hottest loop of the simulator: all it reads and updates lives in locals, written back
    to the course once, when it stops; conditional expressions stand for ``min`` and ``max``
    (the same values, without a builtin call per week).
    """
    d, exp, decay = p.d, math.exp, FLARE_DECAY
    untreated0, floor = p.z.untreated, p.z.floor
    drop, progression = p.ph.natural_drop, p.ph.progression
    noise_l, flare_u_l, flare_size_l, flare_k = p.noise_l, p.flare_u_l, p.flare_size_l, p.flare_k
    regimen, pred, on_advanced = s.regimen, s.pred, s.on_advanced
    settled_week, settled_efficacy = s.settled_week, s.settled_efficacy
    bump, flares, flare_since_visit = s.bump, s.flares, s.flare_since_visit
    flare_visit, next_visit, damage_units = s.flare_visit, s.next_visit, s.damage_units
    activity, visit_week = s.activity, None
    for w in range(s.week, p.n_weeks + 1):
        untreated = untreated0 - drop * (w / 52 if w < 52 else 1.0) if drop else untreated0
        e = settled_efficacy if w >= settled_week else regimen_efficacy(regimen, w)
        excess = untreated - floor
        level = untreated - e * (0.0 if excess < 0.0 else excess)
        if pred[0] <= w < pred[1]:
            level -= 1.1 * (pred[1] - w) / (pred[1] - pred[0])  # tapering bridging steroid
        activity = level + bump + noise_l[w]
        p_flare = flare_k * exp(0.5 * level)
        if flare_u_l[w] < (p_flare if p_flare < 0.25 else 0.25):
            bump += flare_size_l[w]
            flares += 1
            flare_since_visit = True
            if flare_visit < w:  # seen for the flare a week or two later
                flare_visit = w + 1 + (1 if d.uniform() < 0.4 else 0)
        bump *= decay
        if activity > 2.4:
            damage_units += progression * (activity - 2.4) / 52 * (0.45 if on_advanced else 1.0)
        if w == next_visit or w == flare_visit:
            visit_week = w
            break
    s.week = p.n_weeks + 1 if visit_week is None else visit_week + 1
    s.activity, s.bump, s.flares, s.flare_since_visit = activity, bump, flares, flare_since_visit
    s.flare_visit, s.damage_units = flare_visit, damage_units
    return visit_week


def _open_visit(p: Patient, s: Course, week: int) -> Visit | None:
    """The visit's row, at a clinic time that week; None when that falls after the extract."""
    d = p.d
    visit_us = p.at(p.diagnosis_day + 7 * week + d.integer(0, 4)) + (
        8 * 60 + 30 + 15 * d.integer(0, 34)) * 60_000_000
    visit_us = max(visit_us, s.last_visit_us + 60_000_000)
    if visit_us >= p.extract_us - DAY_US:
        return None
    visit_id = p.rows.add("visit_occurrence", C.OUTPATIENT_VISIT.concept_id, visit_us,
                          end=visit_us + 30 * 60_000_000, source_value="rheumatology clinic",
                          care_site_id=p.z.care_site)
    return Visit(week=week, us=visit_us, id=visit_id, weeks_since=week - s.last_visit_week,
                 flare=week == s.flare_visit, activity=s.activity)


def _record_diagnosis_and_flare(p: Patient, s: Course, v: Visit) -> None:
    """At the first visit the diagnosis, comorbidities and serology; at any visit a flare."""
    d, z, rows = p.d, p.z, p.rows
    if s.first:
        rows.add("condition_occurrence", C.RHEUMATOID_ARTHRITIS.concept_id, v.us,
                 source_value="M06.9", visit_id=v.id)
        for name in z.comorbidities:
            concept = C.COMORBIDITIES[name]
            rows.add("condition_occurrence", concept.concept_id, v.us,
                     source_value=concept.concept_code, visit_id=v.id)
        if d.chance(P_RF_TESTED):
            rf = math.exp(math.log(110 if z.rf_positive else 8) + 0.7 * d.normal())
            rf = max(rf, SEROLOGY_CUTOFF + 2) if z.rf_positive else min(rf, SEROLOGY_CUTOFF - 1)
            p.measure(v, C.RHEUMATOID_FACTOR, round(rf, 1), "[IU]/mL", C.IU_PER_ML.concept_id)
        if d.chance(P_CCP_TESTED):
            ccp = math.exp(math.log(180 if z.ccp_positive else 3) + 0.8 * d.normal())
            ccp = max(ccp, SEROLOGY_CUTOFF + 2) if z.ccp_positive else min(
                ccp, SEROLOGY_CUTOFF - 1)
            p.measure(v, C.ANTI_CCP, round(ccp, 1), "U/mL", C.U_PER_ML.concept_id)
    # A flare since the last visit is recorded at a visit for it, else half the time.
    if v.flare or (s.flare_since_visit and d.chance(0.5)):
        rows.add("condition_occurrence", C.RA_FLARE.concept_id, v.us,
                 source_value="RA flare", visit_id=v.id)


def _stop_for_adverse_events(p: Patient, s: Course, v: Visit) -> None:
    """Adverse events and intolerance since the last visit stop drugs, more often when older."""
    d = p.d
    for drug in list(s.regimen):
        p_stop = 1 - math.exp(-STOP_RATE_PER_YEAR[drug.drug_class] * (1 + max(
            p.z.age - 65, 0) / 30) * v.weeks_since / 52)
        if not s.first and d.chance(p_stop):
            reason = d.pick(STOP_REASONS[drug.drug_class])
            s.regimen.remove(drug)
            row = s.open_rows.pop(drug.drug_class)
            # It stopped some time between the visits.
            row[_I["end"]] = s.last_visit_us + int((v.us - s.last_visit_us) * d.uniform())
            row[_I["extra"]] = reason
            v.stopped = f"{s.ingredients[drug.drug_class].name}: {reason.split(': ')[-1]}"
            v.forced = v.forced or drug.drug_class in ADVANCED or not s.regimen


def _measure(p: Patient, s: Course, v: Visit) -> None:
    """Joint counts, labs, patient global, HAQ and DAS28 (each recorded or missing), then the
    clinician's view of activity: a measured DAS28, else a clinical impression."""
    d, z = p.d, p.z
    tjc, sjc, esr, crp, pga = components(d, v.activity, z.female, z.age)
    esr, crp, pga = float(round(esr)), round(crp, 1), float(round(pga))  # as recorded
    mtss = int(s.erosion.sum() + s.jsn.sum())
    haq = min(3.0, max(0.0, round((0.3 * (v.activity - 2) + 0.25 + mtss / 150
                                   + 0.2 * d.normal()) * 8) / 8))
    has_counts, has_pga = d.chance(P_JOINT_COUNTS), d.chance(P_PGA)
    has_esr, has_crp, has_haq = d.chance(P_ESR), d.chance(P_CRP), d.chance(P_HAQ)
    das_esr = round(das28_esr(tjc, sjc, esr, pga), 2) if (
        has_counts and has_pga and has_esr) else None
    das_crp = round(das28_crp(tjc, sjc, crp, pga), 2) if (
        has_counts and has_pga and has_crp) else None
    if has_counts:
        p.measure(v, C.TENDER_JOINTS, float(tjc), "{count}")
        p.measure(v, C.SWOLLEN_JOINTS, float(sjc), "{count}")
    if has_pga:
        p.measure(v, C.PATIENT_GLOBAL, pga, "mm", C.MILLIMETER.concept_id)
    if has_esr:
        p.measure(v, C.ESR, esr, "mm/h", C.MM_PER_H.concept_id)
    if has_crp:
        if p.mg_dl:
            p.measure(v, C.CRP, round(crp / 10, 2), "mg/dL", C.MG_PER_DL.concept_id)
        else:
            p.measure(v, C.CRP, crp, "mg/L", C.MG_PER_L.concept_id)
    if has_haq:
        p.measure(v, C.HAQ_DI, haq, "{score}")
    if das_esr is not None:
        p.measure(v, C.DAS28_ESR, das_esr, "{score}")
    if das_crp is not None:
        p.measure(v, C.DAS28_CRP, das_crp, "{score}")
    v.tjc, v.sjc, v.haq = tjc, sjc, haq if has_haq else None
    v.observed = das_esr if das_esr is not None else das_crp
    v.das28_kind = "ESR" if das_esr is not None else "CRP"
    v.judged = v.observed if v.observed is not None else v.activity + 0.5 * d.normal()


def _decides(p: Patient, s: Course, v: Visit) -> bool:
    """Whether the visit makes a treatment decision: at diagnosis, after a forced stop, with
    nothing taken, or by treat-to-target; the advanced drug it replaces counts as failed."""
    v.decided = s.first or v.forced or not s.regimen
    if not v.decided and v.judged > TARGET_DAS28 and v.week - s.last_start >= 12 \
            and s.decisions < 8:
        # Treat-to-target: at 3 months escalate only without a meaningful improvement
        # (DAS28 fall under 1.2); from 6 months whenever the target is missed.
        if v.week - s.last_start < 24:
            p_escalate = 0.5 if s.das_at_start - v.judged < 1.2 else 0.0
        else:
            p_escalate = 0.85
        v.decided = p.d.chance(p_escalate)
        if v.decided:
            s.failed.extend(drug.drug_class for drug in s.regimen if drug.drug_class in ADVANCED)
    return v.decided


def _start_treatment(p: Patient, s: Course, v: Visit) -> None:
    """Choose a class (and maybe a bridging steroid), record the counterfactual response under
    every class, stop the advanced drug it replaces and start an ingredient of it."""
    d, w = p.d, v.week
    s.decisions += 1
    chosen = choose_class(d, p.z, s.regimen, s.failed, s.first)
    if (s.first and d.chance(0.55)) or (not s.first and d.chance(0.25)):
        s.pred = (w, w + 8 + d.integer(0, 6))
    efficacies = {c: efficacy(p.z, c, s.failed) for c in DRUG_CLASSES}
    if s.first:
        s.first_line = {c: round(e, 4) for c, e in efficacies.items()}
    _record_counterfactuals(p, s, v, chosen, efficacies)
    if chosen in ADVANCED:  # the advanced drug it replaces stops for inefficacy
        for drug in s.regimen:
            if drug.drug_class in ADVANCED and drug.drug_class in s.open_rows:
                row = s.open_rows.pop(drug.drug_class)
                row[_I["end"]], row[_I["extra"]] = v.us, "inefficacy"
    s.regimen = regimen_under(s.regimen, chosen, efficacies[chosen], w)
    previous = s.ingredients.get(chosen)
    s.ingredients[chosen] = choose_ingredient(d, chosen, previous if chosen in ADVANCED else None)
    v.started = s.ingredients[chosen].name
    s.last_start, s.das_at_start = w, v.judged
    s.review = w + 25 + d.integer(0, 3)


def _record_counterfactuals(p: Patient, s: Course, v: Visit, chosen: str,
                            efficacies: dict[str, float]) -> None:
    """One truth_response row per class: the 6-month course had it been started now and kept,
    replayed on the patient's own draws (no draws of its own)."""
    at_26 = counterfactual_activity(p.z, s.regimen, v.week, s.bump, s.pred, efficacies, p.noise,
                                    p.flare_u, p.flare_size).tolist()
    for drug_class, activity_26 in zip(DRUG_CLASSES, at_26, strict=True):
        arm = regimen_under(s.regimen, drug_class, efficacies[drug_class], v.week)
        p.rows.add("truth_response", s.decisions, v.us, value=round(v.activity, 3),
                   value2=round(activity_26, 3), source_value=drug_class,
                   extra=eular_response(v.activity, activity_26), flag=drug_class == chosen,
                   text="+".join(sorted(x.drug_class for x in arm)), visit_id=v.id,
                   floats=[round(efficacies[drug_class], 4)])


def _bridge_flare(p: Patient, s: Course, v: Visit) -> None:
    """A visit for a flare without a treatment decision gives a short prednisone course half
    the time."""
    if v.flare and not v.decided and p.d.chance(0.5):
        s.pred = (v.week, v.week + 4 + p.d.integer(0, 3))


def _record_drug_exposures(p: Patient, s: Course, v: Visit) -> None:
    """One row per drug taken, open until the next visit settles its end; and prednisone."""
    rows = p.rows
    for drug in s.regimen:
        row = s.open_rows.get(drug.drug_class)
        if row is not None:
            row[_I["end"]] = v.us
        concept = s.ingredients[drug.drug_class]
        rows.add("drug_exposure", concept.concept_id, v.us, source_value=concept.name,
                 visit_id=v.id)
        s.open_rows[drug.drug_class] = rows.rows[-1]
    if s.on_prednisone(v.week):
        rows.add("drug_exposure", C.PREDNISONE.concept_id, v.us,
                 end=p.at(p.diagnosis_day + 7 * s.pred[1]), source_value=C.PREDNISONE.name,
                 visit_id=v.id)


def _record_note(p: Patient, s: Course, v: Visit) -> None:
    """Most visits leave a note, written from what the visit found and decided."""
    d = p.d
    if d.chance(0.9 if s.first else P_NOTE):
        state = VisitState(s.first, v.tjc, v.sjc, v.observed, v.das28_kind,
                           v.flare or s.flare_since_visit,
                           tuple(x.drug_class for x in s.regimen), v.started, v.stopped,
                           p.z.smoking, s.on_prednisone(v.week), v.haq)
        p.rows.add("note", C.RHEUM_NOTE.concept_id, v.us, source_value="rheumatology note",
                   text=write_note(d, state), visit_id=v.id)


def _take_radiograph(p: Patient, s: Course, v: Visit) -> None:
    """Hands and feet every one to two years (for patients who are imaged), showing the damage
    accrued since the last film."""
    if p.z.has_imaging and v.week >= s.next_xray:
        add_damage(p.rng, s.erosion, s.jsn, s.damage_units)
        s.damage_units = 0.0
        p.rows.add("imaging", 0, v.us, visit_id=v.id, ints=s.erosion.tolist() + s.jsn.tolist())
        s.next_xray = v.week + p.d.integer(52, 105)


def _sample_omics(p: Patient, s: Course, v: Visit) -> None:
    """A baseline expression sample at the first visit, in the batch of its calendar time."""
    z = p.z
    if s.first and z.has_omics:
        batch = min(N_BATCHES - 1, z.diagnosis_week * N_BATCHES // max(p.span_weeks, 1))
        p.rows.add("omics", 0, v.us, visit_id=v.id, extra=f"B{batch + 1:02d}",
                   source_value=PLATFORMS[batch >= 6],
                   floats=expression(p.rng, z.phenotype, batch, v.activity))


def _schedule_next_visit(p: Patient, s: Course, v: Visit) -> None:
    """Sooner while active, and a review 3 and 6 months after a start. A visit for a flare
    keeps the schedule unless it fell on the scheduled week."""
    w, d = v.week, p.d
    if not v.flare or w == s.next_visit:
        low, high = (4, 9) if v.judged > 5.1 else (8, 14) if v.judged > TARGET_DAS28 else (13, 27)
        s.next_visit = w + d.integer(low, high)
        if s.review > w:
            s.next_visit = min(s.next_visit, s.review)
        if w == s.last_start and v.decided:
            s.next_visit = min(s.next_visit, w + 11 + d.integer(0, 3))


def _close_visit(s: Course, v: Visit) -> None:
    s.last_visit_week, s.last_visit_us = v.week, v.us
    # The regimen changes only at visits: its settled efficacy is worked out once here.
    s.settled_week, s.settled_efficacy = settled(s.regimen)
    s.on_advanced = any(drug.drug_class in ADVANCED for drug in s.regimen)
    s.first, s.flare_since_visit = False, False


def _close_follow_up(p: Patient, s: Course) -> None:
    """Death, the end of every drug still open, and the observation period."""
    end_us = s.last_visit_us
    if p.end_reason == "death":
        death_us = p.at(p.diagnosis_day + 7 * p.z.death_week)
        death_us = max(death_us, s.last_visit_us + DAY_US)
        p.rows.add("death", 0, death_us)
        end_us = death_us
    # Drugs still taken run on for a prescription's length (91 days), within follow-up.
    for row in s.open_rows.values():
        row[_I["end"]] = min(s.last_visit_us + 91 * DAY_US, end_us if p.end_reason == "death"
                             else p.extract_us)
    for row in p.rows.rows:
        if row[0] == "drug_exposure" and row[_I["end"]] is None:
            row[_I["end"]] = min(s.last_visit_us + 91 * DAY_US, p.extract_us)
    p.rows.add("observation_period", 0, p.at(p.diagnosis_day), end=end_us)


def _record_latent_truth(p: Patient, s: Course) -> None:
    """The hidden truth and how the course went (truth.patient_latent's row)."""
    z, ph = p.z, p.ph
    latent = {
        "phenotype": ph.name, "phenotype_id": z.phenotype, "female": z.female,
        "age_at_diagnosis": round(z.age, 2), "symptom_months": round(z.symptom_months, 2),
        "smoking": z.smoking, "comorbidities": z.comorbidities, "rf_positive": z.rf_positive,
        "ccp_positive": z.ccp_positive, "untreated_activity": round(z.untreated, 3),
        "activity_floor": round(z.floor, 3), "flare_rate_per_year": ph.flare_rate,
        "responsiveness": round(z.responsiveness, 3),
        "drug_response": json.dumps(s.first_line, sort_keys=True), "care_site_id": z.care_site,
        "end_reason": p.end_reason, "flares": s.flares, "treatment_decisions": s.decisions,
    }
    p.rows.add("truth_latent", 0, p.at(p.diagnosis_day), text=json.dumps(latent))
