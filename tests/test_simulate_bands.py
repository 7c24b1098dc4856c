"""Marginal figures of a generated population land within published bands.

Each band, with its source, sits next to the model in ``rdt_spark.simulate_disease``; the
figures are computed from the observed rows the way a registry analyst would
(``tests/registry_figures.py``), on a seed the model was not tuned on.
"""

import datetime as dt

import pytest
from registry_figures import figures

from rdt_spark.simulate import simulate_patient
from rdt_spark.simulate_disease import PUBLISHED_BANDS

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
