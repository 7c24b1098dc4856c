"""The concepts the synthetic registry uses, written as its OMOP ``concept`` table.

Standard concepts carry their OMOP vocabulary and code (SNOMED, LOINC, RxNorm, Gender, Visit);
what no standard vocabulary names precisely (the flare event, composite scores, the note class)
is an RDT concept in OMOP's site-local id range above 2,000,000,000.
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


FEMALE = Concept(8532, "FEMALE", "Gender", "Gender", "Gender", "F")
MALE = Concept(8507, "MALE", "Gender", "Gender", "Gender", "M")
OUTPATIENT_VISIT = Concept(9202, "Outpatient Visit", "Visit", "Visit", "Visit", "OP")
RHEUMATOID_ARTHRITIS = Concept(
    80809, "Rheumatoid arthritis", "Condition", "SNOMED", "Clinical Finding", "69896004"
)
RA_FLARE = Concept(
    2_000_000_001, "Flare of rheumatoid arthritis", "Condition", "RDT", "Clinical Finding", "FLARE"
)
CRP = Concept(
    3020460, "C reactive protein [Mass/volume] in Serum or Plasma", "Measurement", "LOINC",
    "Lab Test", "1988-5",
)
ESR = Concept(
    3013707, "Erythrocyte sedimentation rate by Westergren method", "Measurement", "LOINC",
    "Lab Test", "4537-7",
)
RHEUMATOID_FACTOR = Concept(
    2_000_000_020, "Rheumatoid factor [Units/volume] in Serum or Plasma", "Measurement", "LOINC",
    "Lab Test", "11572-5",
)
ANTI_CCP = Concept(
    2_000_000_021, "Cyclic citrullinated peptide Ab [Units/volume] in Serum", "Measurement",
    "LOINC", "Lab Test", "33935-8",
)
TENDER_JOINTS = Concept(
    2_000_000_010, "Tender joint count (28)", "Measurement", "RDT", "Clinical Observation", "TJC28"
)
SWOLLEN_JOINTS = Concept(
    2_000_000_011, "Swollen joint count (28)", "Measurement", "RDT", "Clinical Observation", "SJC28"
)
PATIENT_GLOBAL = Concept(
    2_000_000_012, "Patient global assessment (0-100 mm)", "Measurement", "RDT",
    "Clinical Observation", "PGA",
)
DAS28_ESR = Concept(
    2_000_000_013, "DAS28-ESR", "Measurement", "RDT", "Clinical Observation", "DAS28_ESR"
)
HAQ_DI = Concept(
    2_000_000_014, "HAQ disability index", "Measurement", "RDT", "Clinical Observation", "HAQ_DI"
)
RHEUM_NOTE = Concept(
    2_000_000_030, "Rheumatology visit note", "Note", "RDT", "Note Class", "NOTE_RHEUM_VISIT"
)
METHOTREXATE = Concept(1305058, "methotrexate", "Drug", "RxNorm", "Ingredient", "6851")
PREDNISONE = Concept(1551099, "prednisone", "Drug", "RxNorm", "Ingredient", "8640")
ADALIMUMAB = Concept(1119119, "adalimumab", "Drug", "RxNorm", "Ingredient", "327361")
TOCILIZUMAB = Concept(40171288, "tocilizumab", "Drug", "RxNorm", "Ingredient", "612865")
TOFACITINIB = Concept(42904205, "tofacitinib", "Drug", "RxNorm", "Ingredient", "1357536")

ALL = [
    FEMALE, MALE, OUTPATIENT_VISIT, RHEUMATOID_ARTHRITIS, RA_FLARE, CRP, ESR, RHEUMATOID_FACTOR,
    ANTI_CCP, TENDER_JOINTS, SWOLLEN_JOINTS, PATIENT_GLOBAL, DAS28_ESR, HAQ_DI, RHEUM_NOTE,
    METHOTREXATE, PREDNISONE, ADALIMUMAB, TOCILIZUMAB, TOFACITINIB,
]
