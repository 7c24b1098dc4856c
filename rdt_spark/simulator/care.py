"""What the simulated rheumatologist starts at a treatment decision: a drug class, then an
ingredient of it (treat-to-target habits of the 2010s).

The first decision starts methotrexate (a conventional DMARD instead with chronic kidney disease,
or sometimes by preference); later ones add a conventional drug for triple therapy or move to an
advanced class, switching mechanism after advanced drugs have failed. Both choices consume the
patient's ``Draws``, so the same patient always gets the same drugs.

Example:

    >>> import numpy as np
    >>> from rdt_spark.simulator.disease import Draws, draw_latent
    >>> d = Draws(np.random.default_rng(1))
    >>> z = draw_latent(d, 600)
    >>> choose_class(d, z, regimen=[], failed=[], first=True)
    'methotrexate'
    >>> choose_ingredient(d, "methotrexate").name
    'methotrexate'
"""

from __future__ import annotations

from rdt_spark.simulator import concepts as C
from rdt_spark.simulator.disease import ADVANCED, Draws, Drug, Latent

# Relative use of each class's ingredients (in concepts.DRUG_CLASS_INGREDIENTS order).
INGREDIENT_WEIGHTS = {
    "methotrexate": [1.0], "csdmard": [0.45, 0.30, 0.25], "tnf_inhibitor": [0.35, 0.3, 0.15, 0.1, 0.1],
    "il6r_inhibitor": [0.75, 0.25], "abatacept": [1.0], "rituximab": [1.0],
    "jak_inhibitor": [0.4, 0.3, 0.3],
}


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


def choose_ingredient(d: Draws, drug_class: str, avoid: C.Concept | None = None) -> C.Concept:
    """An ingredient of ``drug_class``, other than ``avoid`` (the one that just failed) when the
    class has another."""
    options = C.DRUG_CLASS_INGREDIENTS[drug_class]
    weights = list(INGREDIENT_WEIGHTS[drug_class])
    if avoid in options and len(options) > 1:
        weights[options.index(avoid)] = 0.0
    return d.pick(options, weights)
