"""The concepts the synthetic registry uses, written as its OMOP ``concept`` table.

Standard concepts carry their OMOP concept_id, vocabulary and code (SNOMED, LOINC, RxNorm, UCUM,
Gender, Visit). What no standard vocabulary names precisely (the flare event, composite scores,
the note class) is an RDT concept in OMOP's site-local id range above 2,000,000,000. Three recent
RxNorm ingredients whose OMOP concept_id we could not confirm (sarilumab, baricitinib,
upadacitinib) keep their real RxNorm code but a site-local concept_id, so codes after ingest are
right even though the id is not Athena's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    concept_id: int
    name: str
    domain_id: str
    vocabulary_id: str
    concept_class_id: str
    concept_code: str


def _rdt(concept_id: int, name: str, domain: str, cls: str, code: str) -> Concept:
    return Concept(concept_id, name, domain, "RDT", cls, code)


def _lab(concept_id: int, name: str, code: str) -> Concept:
    return Concept(concept_id, name, "Measurement", "LOINC", "Lab Test", code)


def _condition(concept_id: int, name: str, code: str) -> Concept:
    return Concept(concept_id, name, "Condition", "SNOMED", "Clinical Finding", code)


def _ingredient(concept_id: int, name: str, code: str) -> Concept:
    return Concept(concept_id, name, "Drug", "RxNorm", "Ingredient", code)


def _unit(concept_id: int, name: str, code: str) -> Concept:
    return Concept(concept_id, name, "Unit", "UCUM", "Unit", code)


FEMALE = Concept(8532, "FEMALE", "Gender", "Gender", "Gender", "F")
MALE = Concept(8507, "MALE", "Gender", "Gender", "Gender", "M")
OUTPATIENT_VISIT = Concept(9202, "Outpatient Visit", "Visit", "Visit", "Visit", "OP")

RHEUMATOID_ARTHRITIS = _condition(80809, "Rheumatoid arthritis", "69896004")
RA_FLARE = _rdt(2_000_000_001, "Flare of rheumatoid arthritis", "Condition", "Clinical Finding",
                "FLARE")
# Comorbidities recorded at the first visit (SNOMED, their OMOP standard concepts).
HYPERTENSION = _condition(320128, "Essential hypertension", "59621000")
TYPE_2_DIABETES = _condition(201826, "Type 2 diabetes mellitus", "44054006")
OBESITY = _condition(433736, "Obesity", "414916001")
DEPRESSION = _condition(440383, "Depressive disorder", "35489007")
CHRONIC_KIDNEY_DISEASE = _condition(46271022, "Chronic kidney disease", "709044004")
COMORBIDITIES = {
    "hypertension": HYPERTENSION, "type_2_diabetes": TYPE_2_DIABETES, "obesity": OBESITY,
    "depression": DEPRESSION, "chronic_kidney_disease": CHRONIC_KIDNEY_DISEASE,
}

CRP = _lab(3020460, "C reactive protein [Mass/volume] in Serum or Plasma", "1988-5")
ESR = _lab(3013707, "Erythrocyte sedimentation rate by Westergren method", "4537-7")
RHEUMATOID_FACTOR = _lab(3021614, "Rheumatoid factor [Units/volume] in Serum or Plasma",
                         "11572-5")
ANTI_CCP = _lab(3030367, "Cyclic citrullinated peptide IgG Ab [Units/volume] in Serum or Plasma",
                "33935-8")
TENDER_JOINTS = _rdt(2_000_000_010, "Tender joint count (28)", "Measurement",
                     "Clinical Observation", "TJC28")
SWOLLEN_JOINTS = _rdt(2_000_000_011, "Swollen joint count (28)", "Measurement",
                      "Clinical Observation", "SJC28")
PATIENT_GLOBAL = _rdt(2_000_000_012, "Patient global assessment (0-100 mm)", "Measurement",
                      "Clinical Observation", "PGA")
DAS28_ESR = _rdt(2_000_000_013, "DAS28-ESR", "Measurement", "Clinical Observation", "DAS28_ESR")
HAQ_DI = _rdt(2_000_000_014, "HAQ disability index", "Measurement", "Clinical Observation",
              "HAQ_DI")
DAS28_CRP = _rdt(2_000_000_015, "DAS28-CRP", "Measurement", "Clinical Observation", "DAS28_CRP")
RHEUM_NOTE = _rdt(2_000_000_030, "Rheumatology visit note", "Note", "Note Class",
                  "NOTE_RHEUM_VISIT")

# Units (UCUM) with their OMOP ids; counts and scores have no UCUM concept we could confirm, so
# their rows carry unit_concept_id 0 (OMOP's "no matching concept") and the source unit.
MG_PER_L = _unit(8751, "milligram per liter", "mg/L")
MG_PER_DL = _unit(8840, "milligram per deciliter", "mg/dL")
MM_PER_H = _unit(8752, "millimeter per hour", "mm/h")
IU_PER_ML = _unit(8985, "international unit per milliliter", "[iU]/mL")
U_PER_ML = _unit(8763, "unit per milliliter", "[U]/mL")
MILLIMETER = _unit(8588, "millimeter", "mm")

METHOTREXATE = _ingredient(1305058, "methotrexate", "6851")
LEFLUNOMIDE = _ingredient(1101898, "leflunomide", "27169")
SULFASALAZINE = _ingredient(964339, "sulfasalazine", "9524")
HYDROXYCHLOROQUINE = _ingredient(1777087, "hydroxychloroquine", "5521")
ADALIMUMAB = _ingredient(1119119, "adalimumab", "327361")
ETANERCEPT = _ingredient(1151789, "etanercept", "214555")
INFLIXIMAB = _ingredient(937368, "infliximab", "191831")
CERTOLIZUMAB = _ingredient(912263, "certolizumab pegol", "709271")
GOLIMUMAB = _ingredient(19041065, "golimumab", "819300")
TOCILIZUMAB = _ingredient(40171288, "tocilizumab", "612865")
SARILUMAB = _ingredient(2_000_000_101, "sarilumab", "1923319")
ABATACEPT = _ingredient(1186087, "abatacept", "614391")
RITUXIMAB = _ingredient(1314273, "rituximab", "121191")
TOFACITINIB = _ingredient(42904205, "tofacitinib", "1357536")
BARICITINIB = _ingredient(2_000_000_102, "baricitinib", "2047232")
UPADACITINIB = _ingredient(2_000_000_103, "upadacitinib", "2196092")
PREDNISONE = _ingredient(1551099, "prednisone", "8640")

# The drug classes the truth tables name, and the ingredients of each.
DRUG_CLASS_INGREDIENTS = {
    "methotrexate": [METHOTREXATE],
    "csdmard": [SULFASALAZINE, HYDROXYCHLOROQUINE, LEFLUNOMIDE],
    "tnf_inhibitor": [ADALIMUMAB, ETANERCEPT, INFLIXIMAB, CERTOLIZUMAB, GOLIMUMAB],
    "il6r_inhibitor": [TOCILIZUMAB, SARILUMAB],
    "abatacept": [ABATACEPT],
    "rituximab": [RITUXIMAB],
    "jak_inhibitor": [TOFACITINIB, BARICITINIB, UPADACITINIB],
}

ALL = [
    FEMALE, MALE, OUTPATIENT_VISIT, RHEUMATOID_ARTHRITIS, RA_FLARE, *COMORBIDITIES.values(),
    CRP, ESR, RHEUMATOID_FACTOR, ANTI_CCP, TENDER_JOINTS, SWOLLEN_JOINTS, PATIENT_GLOBAL,
    DAS28_ESR, DAS28_CRP, HAQ_DI, RHEUM_NOTE,
    MG_PER_L, MG_PER_DL, MM_PER_H, IU_PER_ML, U_PER_ML, MILLIMETER,
    *[c for drugs in DRUG_CLASS_INGREDIENTS.values() for c in drugs], PREDNISONE,
]
