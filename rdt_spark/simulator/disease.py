"""The rheumatoid-arthritis disease and care model behind the synthetic registry.

Time runs in weeks from diagnosis. A hidden phenotype sets the untreated disease activity, the
flare hazard, radiographic progression and how well each drug class works, so that similar
patients respond alike. The latent activity ``A`` lives on the DAS28 scale: a visit observes it
through joint counts, ESR, CRP and patient global, whose typical values give DAS28-ESR = A.

    A(week) = level(regimen, week) + flare bump + slow AR(1) noise
    level   = U - E * (U - floor) - bridging glucocorticoid,   E = 1 - prod_i (1 - e_i * ramp_i)

``U`` is the patient's untreated activity, ``e_i`` the efficacy (0..1) of drug class ``i`` for
this patient (a logistic function of phenotype, covariates and a personal responsiveness), and
``ramp_i`` its onset over a few weeks. Treat-to-target escalates when the observed DAS28 stays
above 3.2 after 3-6 months; adverse events and intolerance stop drugs. At every treatment
decision the counterfactual 6-month course under each drug class is replayed on the same random
draws, so the EULAR response the truth tables hold is exactly what would have happened.

The published bands these parameters are tuned to sit in ``PUBLISHED_BANDS`` at the end, each
with its source; ``tests/test_simulate_bands.py`` checks them on a generated population.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

DRUG_CLASSES = ["methotrexate", "csdmard", "tnf_inhibitor", "il6r_inhibitor", "abatacept",
                "rituximab", "jak_inhibitor"]
CONVENTIONAL = {"methotrexate", "csdmard"}
ADVANCED = {"tnf_inhibitor", "il6r_inhibitor", "abatacept", "rituximab", "jak_inhibitor"}
RAMP_WEEKS = {"methotrexate": 10, "csdmard": 12, "tnf_inhibitor": 4, "il6r_inhibitor": 4,
              "abatacept": 8, "rituximab": 10, "jak_inhibitor": 2}
# Yearly rate of stopping for an adverse event or intolerance (drug-survival studies put the
# yearly discontinuation for toxicity at roughly 5-15% for csDMARDs and 4-8% for b/tsDMARDs).
STOP_RATE_PER_YEAR = {"methotrexate": 0.08, "csdmard": 0.12, "tnf_inhibitor": 0.06,
                      "il6r_inhibitor": 0.07, "abatacept": 0.04, "rituximab": 0.04,
                      "jak_inhibitor": 0.06}
STOP_REASONS = {
    "methotrexate": ["intolerance: nausea", "adverse event: raised transaminases",
                     "adverse event: cytopenia", "intolerance: mouth ulcers"],
    "csdmard": ["intolerance: GI upset", "adverse event: rash", "adverse event: raised ALT"],
    "tnf_inhibitor": ["adverse event: serious infection", "adverse event: injection-site reaction",
                      "adverse event: infusion reaction"],
    "il6r_inhibitor": ["adverse event: neutropenia", "adverse event: raised transaminases",
                       "adverse event: serious infection"],
    "abatacept": ["adverse event: infection", "intolerance: headache"],
    "rituximab": ["adverse event: infusion reaction", "adverse event: hypogammaglobulinaemia"],
    "jak_inhibitor": ["adverse event: herpes zoster", "adverse event: raised lipids",
                      "adverse event: serious infection"],
}
TARGET_DAS28 = 3.2  # treat-to-target threshold (low disease activity)
EULAR_CLASSES = ("good", "moderate", "none")


def flare_probability(rate_per_year: float, level: float) -> float:
    """Weekly flare probability: higher when the underlying activity is less controlled."""
    return min(0.25, rate_per_year / 52 * math.exp(0.5 * (level - 3.2)))


FLARE_DECAY = 0.78  # the weekly decay of a flare's extra activity (half-life under 3 weeks)


@dataclass(frozen=True)
class Phenotype:
    name: str
    prior: float
    untreated: float  # mean untreated latent DAS28
    natural_drop: float  # spontaneous improvement over the first year, DAS28 points
    flare_rate: float  # flares per year at activity 3.2
    progression: float  # mTSS units per year per DAS28 point above 2.4
    baseline_mtss: float  # mean mTSS at diagnosis
    rf_positive: float
    ccp_positive: float
    response_logit: dict[str, float]  # drug class -> baseline logit of efficacy


PHENOTYPES = [
    Phenotype("seropositive_erosive", 0.35, 5.6, 0.0, 0.28, 2.2, 7.0, 0.85, 0.88,
              {"methotrexate": -0.4, "csdmard": -1.4, "tnf_inhibitor": 1.4, "il6r_inhibitor": 0.5,
               "abatacept": 0.6, "rituximab": 0.7, "jak_inhibitor": 0.6}),
    Phenotype("seronegative_mild", 0.30, 4.7, 0.3, 0.18, 0.5, 1.5, 0.18, 0.08,
              {"methotrexate": 0.1, "csdmard": -0.6, "tnf_inhibitor": 1.3, "il6r_inhibitor": 0.3,
               "abatacept": 0.1, "rituximab": -0.9, "jak_inhibitor": 0.4}),
    Phenotype("refractory_inflammatory", 0.15, 6.4, 0.0, 0.50, 1.8, 8.0, 0.72, 0.68,
              {"methotrexate": -1.6, "csdmard": -2.4, "tnf_inhibitor": 0.3,
               "il6r_inhibitor": 0.6, "abatacept": -0.3, "rituximab": -0.1,
               "jak_inhibitor": 0.2}),
    Phenotype("fast_remitting", 0.20, 5.0, 1.0, 0.12, 0.6, 2.0, 0.55, 0.45,
              {"methotrexate": 1.0, "csdmard": 0.0, "tnf_inhibitor": 2.1, "il6r_inhibitor": 1.0,
               "abatacept": 0.9, "rituximab": 0.3, "jak_inhibitor": 1.1}),
]
PHENOTYPE_PRIORS = np.array([p.prior for p in PHENOTYPES])


class Draws:
    """Uniform and normal draws pre-drawn in blocks and handed out in order.

    numpy's scalar draws cost about a microsecond each; a patient needs thousands, so they come
    from vectors. The order of use fixes the values, so a patient's course depends only on its
    seed.
    """

    def __init__(self, rng: np.random.Generator, block: int = 1024):
        self.rng, self.block = rng, block
        self._u: list[float] = []
        self._z: list[float] = []
        self._iu = self._iz = 0

    def uniform(self) -> float:
        if self._iu == len(self._u):
            self._u, self._iu = self.rng.random(self.block).tolist(), 0
        self._iu += 1
        return self._u[self._iu - 1]

    def normal(self) -> float:
        if self._iz == len(self._z):
            self._z, self._iz = self.rng.standard_normal(self.block).tolist(), 0
        self._iz += 1
        return self._z[self._iz - 1]

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def integer(self, low: int, high: int) -> int:
        """Uniform on [low, high)."""
        return low + int(self.uniform() * (high - low))

    def pick(self, items: list, weights: list[float] | None = None):
        if weights is None:
            return items[int(self.uniform() * len(items))]
        x, total = self.uniform() * sum(weights), 0.0
        for item, w in zip(items, weights, strict=True):
            total += w
            if x < total:
                return item
        return items[-1]

    def poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 30:  # normal approximation; exact enough for joint counts and scores
            return max(0, int(round(lam + math.sqrt(lam) * self.normal())))
        k, p, threshold = 0, self.uniform(), math.exp(-lam)
        while p > threshold:
            k += 1
            p *= self.uniform()
        return k


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class Latent:
    """What is true of a patient at diagnosis and never observed directly."""

    phenotype: int
    female: bool
    age: float  # at diagnosis, years
    diagnosis_week: int  # weeks since the registry start
    symptom_months: float  # symptom duration before diagnosis
    smoking: str  # never / former / current
    comorbidities: list[str]
    rf_positive: bool
    ccp_positive: bool
    untreated: float
    floor: float  # the lowest latent activity full efficacy reaches
    responsiveness: float  # shared across drug classes: similar patients respond alike
    class_logit: dict[str, float]  # personal deviation per drug class
    care_site: int
    death_week: float  # weeks after diagnosis; inf when alive at the extract
    lost_week: float  # weeks after diagnosis the patient is lost to follow-up
    has_imaging: bool
    has_omics: bool


def draw_latent(d: Draws, span_weeks: int) -> Latent:
    k = d.pick(list(range(len(PHENOTYPES))), PHENOTYPE_PRIORS.tolist())
    ph = PHENOTYPES[k]
    female = d.chance(0.72)
    age = min(90.0, max(18.0, 56 + 13 * d.normal()))
    smoking = d.pick(["never", "former", "current"], [0.47, 0.33, 0.20])
    comorbid_p = {"hypertension": 0.1 + 0.006 * (age - 40), "type_2_diabetes": 0.04 + 0.002 * age,
                  "obesity": 0.25, "depression": 0.16, "chronic_kidney_disease": 0.01 + 0.001 * age}
    comorbidities = [c for c, p in comorbid_p.items() if d.chance(max(p, 0.0))]
    # Mortality: Gompertz, about 1.5 times the general population's (RA standardised mortality).
    death_week, alive_week = math.inf, 0.0
    while alive_week < span_weeks:
        yearly = 1.5 * 0.0004 * math.exp(0.085 * (age + alive_week / 52 - 30))
        if d.chance(1 - math.exp(-yearly)):
            death_week = alive_week + 52 * d.uniform()
            break
        alive_week += 52
    lost_week = -math.log(1 - d.uniform()) / 0.06 * 52  # ~6% per year lost to follow-up
    return Latent(
        phenotype=k, female=female, age=age,
        diagnosis_week=d.integer(0, max(span_weeks - 52, 1)),
        symptom_months=math.exp(math.log(7) + 0.8 * d.normal()),
        smoking=smoking, comorbidities=comorbidities,
        rf_positive=d.chance(ph.rf_positive), ccp_positive=d.chance(ph.ccp_positive),
        untreated=ph.untreated + 0.45 * d.normal() + (0.2 if smoking == "current" else 0.0),
        floor=2.05 + 0.25 * d.normal(),
        responsiveness=0.6 * d.normal(),
        class_logit={c: 0.45 * d.normal() for c in DRUG_CLASSES},
        care_site=1 + d.integer(0, 20),
        death_week=death_week, lost_week=lost_week,
        has_imaging=d.chance(0.65), has_omics=d.chance(0.25),
    )


def efficacy(z: Latent, drug_class: str, failed_advanced: list[str]) -> float:
    """Share of the excess activity (above the floor) the class removes for this patient."""
    ph = PHENOTYPES[z.phenotype]
    logit = ph.response_logit[drug_class] + z.responsiveness + z.class_logit[drug_class]
    seropositive = z.rf_positive or z.ccp_positive
    if drug_class in CONVENTIONAL:
        logit -= 0.4 if z.smoking == "current" else 0.0  # smokers respond less to MTX
        logit -= 0.2 if z.female else 0.0
    if drug_class == "tnf_inhibitor":
        logit -= 0.35 if z.smoking == "current" else 0.0
        logit -= 0.4 if "obesity" in z.comorbidities else 0.0
    if drug_class == "rituximab":
        logit += 0.6 if seropositive else -0.6
    if drug_class == "abatacept":
        logit += 0.3 if z.ccp_positive else 0.0
    if drug_class in ADVANCED:  # each failed advanced therapy lowers the next one's chances
        logit -= 0.35 * len(failed_advanced) + 0.3 * failed_advanced.count(drug_class)
    return sigmoid(logit)


@dataclass(frozen=True)
class Drug:
    drug_class: str
    efficacy: float
    start_week: int


def regimen_efficacy(regimen: list[Drug], week: int) -> float:
    remaining = 1.0
    for drug in regimen:
        ramp = min(1.0, max(0.0, (week - drug.start_week) / RAMP_WEEKS[drug.drug_class]))
        remaining *= 1.0 - drug.efficacy * ramp
    return 1.0 - remaining


def regimen_under(regimen: list[Drug], drug_class: str, efficacy_: float, week: int) -> list[Drug]:
    """The regimen after starting ``drug_class``: an advanced drug replaces the current advanced
    one and keeps the conventional anchor; a conventional drug is added (or, when already taken,
    optimised, e.g. methotrexate moved to subcutaneous)."""
    new = Drug(drug_class, efficacy_, week)
    if drug_class in ADVANCED:
        return [d for d in regimen if d.drug_class in CONVENTIONAL] + [new]
    return [d for d in regimen if d.drug_class != drug_class] + [new]


def settled(regimen: list[Drug]) -> tuple[int, float]:
    """The week from which every drug has reached its full effect, and the efficacy then."""
    remaining = 1.0
    for drug in regimen:
        remaining *= 1.0 - drug.efficacy
    week = max((d.start_week + RAMP_WEEKS[d.drug_class] for d in regimen), default=0)
    return week, 1.0 - remaining


COUNTERFACTUAL_WEEKS = 26  # EULAR response is judged 6 months after a start
_STEPS = np.arange(1, COUNTERFACTUAL_WEEKS + 1)
_RAMP_FROM_START = {c: np.minimum(1.0, _STEPS / RAMP_WEEKS[c]) for c in DRUG_CLASSES}
# Weight of a flare in week s (1..25) after a decision on the extra activity in week 26.
_BUMP_WEIGHTS = FLARE_DECAY ** (COUNTERFACTUAL_WEEKS - _STEPS[:-1])


def counterfactual_activity(z: Latent, regimen: list[Drug], week: int, bump: float,
                            pred: tuple[int, int], efficacies: dict[str, float],
                            noise: np.ndarray, flare_u: np.ndarray,
                            flare_size: np.ndarray) -> np.ndarray:
    """Latent DAS28 26 weeks after ``week`` had each class (in DRUG_CLASSES order) been started
    then and kept, replayed on the patient's own draws (the same noise and flare draws as the
    course it actually took; vectorised over classes and weeks)."""
    ph = PHENOTYPES[z.phenotype]
    weeks = week + _STEPS
    untreated = z.untreated - ph.natural_drop * np.minimum(1.0, weeks / 52)
    excess = np.maximum(untreated - z.floor, 0.0)
    start, end = pred
    steroid = np.where((weeks >= start) & (weeks < end),
                       1.1 * (end - weeks) / max(end - start, 1), 0.0)
    factors = {d.drug_class: 1.0 - d.efficacy * np.clip((weeks - d.start_week)
                                                        / RAMP_WEEKS[d.drug_class], 0.0, 1.0)
               for d in regimen}
    remaining = np.empty((len(DRUG_CLASSES), COUNTERFACTUAL_WEEKS))
    for i, c in enumerate(DRUG_CLASSES):
        row = 1.0 - efficacies[c] * _RAMP_FROM_START[c]
        for kept, factor in factors.items():
            if kept != c and (c not in ADVANCED or kept in CONVENTIONAL):
                row = row * factor
        remaining[i] = row
    level = untreated - (1.0 - remaining) * excess - steroid
    p = np.minimum(0.25, ph.flare_rate / 52 * np.exp(0.5 * (level - 3.2)))
    flared = flare_u[week + 1: week + COUNTERFACTUAL_WEEKS + 1] < p
    sizes = flare_size[week + 1: week + COUNTERFACTUAL_WEEKS] * _BUMP_WEIGHTS
    bump_last = bump * FLARE_DECAY ** (COUNTERFACTUAL_WEEKS - 1) + flared[:, :-1] @ sizes
    return level[:, -1] + bump_last + noise[week + COUNTERFACTUAL_WEEKS]


def eular_response(baseline: float, current: float) -> str:
    """EULAR response from DAS28 at baseline and follow-up (van Gestel et al., 1996)."""
    improvement = baseline - current
    if improvement > 1.2:
        return "good" if current <= 3.2 else "moderate"
    if improvement > 0.6:
        return "moderate" if current <= 5.1 else "none"
    return "none"


def das28_esr(tjc: float, sjc: float, esr: float, pga: float) -> float:
    return (0.56 * math.sqrt(tjc) + 0.28 * math.sqrt(sjc) + 0.70 * math.log(max(esr, 1.0))
            + 0.014 * pga)


def das28_crp(tjc: float, sjc: float, crp_mg_l: float, pga: float) -> float:
    return (0.56 * math.sqrt(tjc) + 0.28 * math.sqrt(sjc) + 0.36 * math.log(crp_mg_l + 1.0)
            + 0.014 * pga + 0.96)


def _typical(f: float) -> tuple[float, float, float, float, float]:
    """Typical TJC, SJC, ESR (mm/h), CRP (mg/L), PGA (mm) at inflammation share f in [0, 1]."""
    return 26 * f ** 1.5, 18 * f ** 1.7, 6 + 70 * f ** 1.6, 1.5 + 55 * f ** 2, 6 + 84 * f


_F_GRID = np.linspace(0, 1, 401).tolist()
_DAS_GRID = [das28_esr(t, s, e, g) for t, s, e, _, g in map(_typical, _F_GRID)]


def _share_at(activity: float) -> float:
    """Inflammation share whose typical components give DAS28-ESR = activity (interpolated)."""
    i = bisect.bisect_left(_DAS_GRID, activity)
    if i == 0:
        return 0.0
    if i == len(_DAS_GRID):
        return 1.0
    lo, hi = _DAS_GRID[i - 1], _DAS_GRID[i]
    return _F_GRID[i - 1] + (activity - lo) / (hi - lo) * (_F_GRID[i] - _F_GRID[i - 1])


def components(d: Draws, activity: float, female: bool, age: float) -> tuple:
    """Observed (tjc, sjc, esr, crp_mg_l, pga) around a latent DAS28 ``activity``."""
    f = _share_at(activity)
    t, s, e, c, g = _typical(f)
    inflammation = d.normal()  # ESR and CRP move together
    esr_base = e * (1.15 if female else 1.0) * (1 + max(age - 50, 0) / 100)
    tjc = min(28, d.poisson(t))
    sjc = min(28, d.poisson(s), tjc + 3)
    esr = min(140.0, esr_base * math.exp(0.28 * inflammation + 0.15 * d.normal()))
    crp = min(300.0, c * math.exp(0.45 * inflammation + 0.35 * d.normal()))
    pga = min(100.0, max(0.0, g + 11 * d.normal()))
    return tjc, sjc, esr, crp, pga




# Published figures the model is tuned to, each with its source, checked by
# tests/test_simulate_bands.py on a generated population (computed from the observed rows the
# way a registry analyst would). Bands are deliberately wide: registries differ.
@dataclass(frozen=True)
class Band:
    name: str
    low: float
    high: float
    source: str


PUBLISHED_BANDS = [
    Band("female_share", 0.68, 0.78,
         "Women make up about 70-75% of RA registry cohorts, e.g. NOR-DMARD (Aga et al., Ann "
         "Rheum Dis 2015) and BSRBR-RA (Hyrich et al., Rheumatology 2006)"),
    Band("seropositive_share", 0.60, 0.80,
         "RF and/or ACPA positive in about two thirds to four fifths of RA patients (Aletaha & "
         "Smolen, JAMA 2018; 2010 ACR/EULAR classification criteria cohorts)"),
    Band("mtx_eular_good_or_moderate_6m", 0.50, 0.70,
         "EULAR good/moderate response 6 months after starting methotrexate in about 60% "
         "(RAMS, Sergeant et al., Arthritis Res Ther 2018)"),
    Band("first_tnfi_eular_good_or_moderate_6m", 0.60, 0.78,
         "EULAR good/moderate response at 6 months to a first TNF inhibitor in about 65-70% "
         "(BSRBR, Hyrich et al., Rheumatology 2006; DANBIO, Hetland et al., Arthritis Rheum 2010)"),
    Band("das28_remission_12m", 0.20, 0.45,
         "DAS28 remission (<2.6) about a year after starting DMARD therapy in 20-45% of "
         "patients in observational cohorts (NOR-DMARD, Aga et al., Ann Rheum Dis 2015)"),
    Band("flare_within_1y", 0.15, 0.40,
         "About a quarter to a third of patients record at least one flare within a year "
         "(BRASS, Bykerk et al., J Rheumatol 2014; Bechman et al., J Rheumatol 2018)"),
]
