"""Figures a registry analyst computes from the simulator's observed rows (not its truth).

Used by the band tests; pure Python over ``simulate_patient`` rows, so a few thousand patients
take seconds.
"""

from __future__ import annotations

from rdt_spark import concepts as C
from rdt_spark.simulate import _I
from rdt_spark.simulate_disease import eular_response

DAY_US = 86_400_000_000
TNF_IDS = {c.concept_id for c in C.DRUG_CLASS_INGREDIENTS["tnf_inhibitor"]}
CSDMARD_IDS = {c.concept_id for c in C.DRUG_CLASS_INGREDIENTS["csdmard"]}
DMARD_IDS = {c.concept_id for drugs in C.DRUG_CLASS_INGREDIENTS.values() for c in drugs}


def _das28_series(rows: list) -> list[tuple[int, str, float]]:
    kinds = {C.DAS28_ESR.concept_id: "esr", C.DAS28_CRP.concept_id: "crp"}
    return [(r[_I["start"]], kinds[r[3]], r[_I["value"]]) for r in rows
            if r[0] == "measurement" and r[3] in kinds]


def _nearest(series, time_us: int, low_days: float, high_days: float, kind: str):
    best = None
    for t, k, v in series:
        offset = (t - time_us) / DAY_US
        if k == kind and low_days <= offset <= high_days:
            if best is None or abs(offset - (low_days + high_days) / 2) < best[0]:
                best = (abs(offset - (low_days + high_days) / 2), v)
    return None if best is None else best[1]


def _nearest_time(series, time_us: int, low_days: float, high_days: float, kind: str):
    best = None
    for t, k, v in series:
        offset = (t - time_us) / DAY_US
        if k == kind and low_days <= offset <= high_days:
            if best is None or abs(offset - (low_days + high_days) / 2) < best[0]:
                best = (abs(offset - (low_days + high_days) / 2), t, v)
    return None if best is None else best[1:]


def response_after_start(rows: list, drug_ids: set[int], first_dmard_only: bool) -> str | None:
    """EULAR response 6 months after the first exposure to one of ``drug_ids`` (None when
    DAS28 is not observed at both ends); DAS28-ESR when both ends have it, else DAS28-CRP."""
    exposures = sorted((r[_I["start"]], r[3]) for r in rows
                       if r[0] == "drug_exposure" and r[3] in DMARD_IDS)
    if not exposures:
        return None
    starts = [t for t, c in exposures if c in drug_ids]
    if not starts or (first_dmard_only and exposures[0][1] not in drug_ids):
        return None
    start = starts[0]
    series = _das28_series(rows)
    for kind in ("esr", "crp"):
        before = _nearest(series, start, -30, 1, kind)
        after = _nearest_time(series, start, 135, 230, kind)
        if before is not None and after is not None:
            # Non-responder imputation: a new DMARD started before the follow-up DAS28 means
            # the drug was judged to have failed.
            seen = {c for t, c in exposures if t <= start}
            if any(start < t < after[0] and c not in seen for t, c in exposures):
                return "none"
            return eular_response(before, after[1])
    return None


def figures(patients: list[list]) -> dict[str, float]:
    """The PUBLISHED_BANDS figures from observed rows, one list of rows per patient."""
    female = sero_tested = sero_pos = 0
    mtx = {"n": 0, "responders": 0}
    tnf = {"n": 0, "responders": 0}
    remission = {"n": 0, "yes": 0}
    flare = {"n": 0, "yes": 0}
    for rows in patients:
        person = rows[0]
        female += person[3] == C.FEMALE.concept_id
        sero = [r[_I["value"]] for r in rows if r[0] == "measurement"
                and r[3] in (C.RHEUMATOID_FACTOR.concept_id, C.ANTI_CCP.concept_id)]
        if sero:
            sero_tested += 1
            sero_pos += max(sero) >= 20
        for drug_ids, first_only, tally in ((C.DRUG_CLASS_INGREDIENTS["methotrexate"], True, mtx),
                                            (TNF_IDS, False, tnf)):
            ids = {c.concept_id for c in drug_ids} if not isinstance(drug_ids, set) else drug_ids
            response = response_after_start(rows, ids, first_only)
            if response is not None:
                tally["n"] += 1
                tally["responders"] += response != "none"
        visits = [r[_I["start"]] for r in rows if r[0] == "visit_occurrence"]
        period = next(r for r in rows if r[0] == "observation_period")
        first_visit = min(visits)
        series = _das28_series(rows)
        at_12 = (_nearest(series, first_visit, 270, 460, "esr")
                 or _nearest(series, first_visit, 270, 460, "crp"))
        if at_12 is not None:
            remission["n"] += 1
            remission["yes"] += at_12 < 2.6
        if (period[_I["end"]] - first_visit) / DAY_US >= 365:
            flare["n"] += 1
            flare["yes"] += any(r[0] == "condition_occurrence" and r[3] == C.RA_FLARE.concept_id
                                and (r[_I["start"]] - first_visit) / DAY_US <= 365 for r in rows)
    n = len(patients)
    return {
        "female_share": female / n,
        "seropositive_share": sero_pos / max(sero_tested, 1),
        "mtx_eular_good_or_moderate_6m": mtx["responders"] / max(mtx["n"], 1),
        "first_tnfi_eular_good_or_moderate_6m": tnf["responders"] / max(tnf["n"], 1),
        "das28_remission_12m": remission["yes"] / max(remission["n"], 1),
        "flare_within_1y": flare["yes"] / max(flare["n"], 1),
        "n_mtx": mtx["n"], "n_tnf": tnf["n"], "n_remission": remission["n"], "n_flare": flare["n"],
    }
