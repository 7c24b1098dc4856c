"""Marginal figures of a generated population land within published bands.

Each band, with its source, sits next to the model in ``rdt_spark.simulator.disease``; the
figures are computed from the observed rows the way a registry analyst would
(``figures`` below), on a seed the model was not tuned on.
"""

import datetime as dt

import pytest

from rdt_spark.simulator import concepts as C
from rdt_spark.simulator.disease import PUBLISHED_BANDS, eular_response
from rdt_spark.simulator.patient import simulate_patient
from rdt_spark.simulator.records import _I

# -- the registry analyst: figures from observed rows only -----------------------------
DAY_US = 86_400_000_000
MTX_IDS = {C.METHOTREXATE.concept_id}
TNF_IDS = {c.concept_id for c in C.DRUG_CLASS_INGREDIENTS["tnf_inhibitor"]}
DMARD_IDS = {c.concept_id for drugs in C.DRUG_CLASS_INGREDIENTS.values() for c in drugs}
DAS28_KINDS = {C.DAS28_ESR.concept_id: "esr", C.DAS28_CRP.concept_id: "crp"}


def _das28_series(rows: list) -> list[tuple[int, str, float]]:
    return [(r[_I["start"]], DAS28_KINDS[r[3]], r[_I["value"]]) for r in rows
            if r[0] == "measurement" and r[3] in DAS28_KINDS]


def _nearest(series, time_us: int, low_days: float, high_days: float, kind: str):
    """(time, DAS28) of ``kind`` nearest the middle of [low, high] days after ``time_us``."""
    middle, best = (low_days + high_days) / 2, None
    for t, k, v in series:
        offset = (t - time_us) / DAY_US
        if k == kind and low_days <= offset <= high_days:
            if best is None or abs(offset - middle) < best[0]:
                best = (abs(offset - middle), t, v)
    return None if best is None else best[1:]


def response_after_start(rows: list, drug_ids: set[int], first_dmard_only: bool) -> str | None:
    """EULAR response 6 months after the first exposure to one of ``drug_ids`` (None when
    DAS28 is not observed at both ends); DAS28-ESR when both ends have it, else DAS28-CRP."""
    exposures = sorted((r[_I["start"]], r[3]) for r in rows
                       if r[0] == "drug_exposure" and r[3] in DMARD_IDS)
    starts = [t for t, c in exposures if c in drug_ids]
    if not starts or (first_dmard_only and exposures[0][1] not in drug_ids):
        return None
    start, series = starts[0], _das28_series(rows)
    for kind in ("esr", "crp"):
        before = _nearest(series, start, -30, 1, kind)
        after = _nearest(series, start, 135, 230, kind)
        if before is not None and after is not None:
            # Non-responder imputation: a new DMARD started before the follow-up DAS28 means
            # the drug was judged to have failed.
            seen = {c for t, c in exposures if t <= start}
            if any(start < t < after[0] and c not in seen for t, c in exposures):
                return "none"
            return eular_response(before[1], after[1])
    return None


def figures(patients: list[list]) -> dict[str, float]:
    """The PUBLISHED_BANDS figures from observed rows, one list of rows per patient."""
    counts = dict.fromkeys(["female", "sero_tested", "sero_pos", "mtx", "mtx_ok", "tnf",
                            "tnf_ok", "rem_n", "rem", "flare_n", "flare"], 0)
    for rows in patients:
        counts["female"] += rows[0][3] == C.FEMALE.concept_id  # rows[0] is the person
        sero = [r[_I["value"]] for r in rows if r[0] == "measurement"
                and r[3] in (C.RHEUMATOID_FACTOR.concept_id, C.ANTI_CCP.concept_id)]
        if sero:
            counts["sero_tested"] += 1
            counts["sero_pos"] += max(sero) >= 20  # either test above its upper limit
        for key, ids, first_only in (("mtx", MTX_IDS, True), ("tnf", TNF_IDS, False)):
            response = response_after_start(rows, ids, first_only)
            if response is not None:
                counts[key] += 1
                counts[key + "_ok"] += response != "none"
        first_visit = min(r[_I["start"]] for r in rows if r[0] == "visit_occurrence")
        series = _das28_series(rows)
        at_12 = (_nearest(series, first_visit, 270, 460, "esr")
                 or _nearest(series, first_visit, 270, 460, "crp"))
        if at_12 is not None:
            counts["rem_n"] += 1
            counts["rem"] += at_12[1] < 2.6
        period = next(r for r in rows if r[0] == "observation_period")
        if (period[_I["end"]] - first_visit) / DAY_US >= 365:
            counts["flare_n"] += 1
            counts["flare"] += any(
                r[0] == "condition_occurrence" and r[3] == C.RA_FLARE.concept_id
                and (r[_I["start"]] - first_visit) / DAY_US <= 365 for r in rows)
    share = lambda a, b: counts[a] / max(counts[b], 1)  # noqa: E731
    return {
        "female_share": counts["female"] / len(patients),
        "seropositive_share": share("sero_pos", "sero_tested"),
        "mtx_eular_good_or_moderate_6m": share("mtx_ok", "mtx"),
        "first_tnfi_eular_good_or_moderate_6m": share("tnf_ok", "tnf"),
        "das28_remission_12m": share("rem", "rem_n"),
        "flare_within_1y": share("flare", "flare_n"),
        "n_mtx": counts["mtx"], "n_tnf": counts["tnf"], "n_remission": counts["rem_n"],
        "n_flare": counts["flare_n"],
    }


PATIENTS, SEED = 1500, 11


@pytest.fixture(scope="module")
def measured() -> dict[str, float]:
    origin = dt.datetime(2012, 1, 1)
    return figures([simulate_patient(pid, SEED, origin, 5113) for pid in range(1, PATIENTS + 1)])


def test_enough_patients_are_observable_for_each_figure(measured):
    assert measured["n_mtx"] > 500 and measured["n_tnf"] > 300
    assert measured["n_remission"] > 800 and measured["n_flare"] > 800


@pytest.mark.parametrize("band", PUBLISHED_BANDS, ids=[b.name for b in PUBLISHED_BANDS])
def test_figure_lands_within_its_published_band(measured, band):
    assert band.low <= measured[band.name] <= band.high, (
        f"{band.name} = {measured[band.name]:.3f}, outside [{band.low}, {band.high}] "
        f"({band.source})")
