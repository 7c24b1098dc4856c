"""Imaging (per-joint Sharp/van der Heijde scores) and a baseline omics panel for the simulator.

Radiographs: damage accrues as expected mTSS units while the disease is active (see
``disease``); each study draws the accrued units and places them on joints, erosions on
the usual sites (MCP 2-3, wrists, MTP 5) more often than elsewhere, capped at each joint's maximum.
Scores never decrease (readers compare with the previous film).

Omics: a whole-blood expression panel of ``N_GENES`` genes (log2) at baseline: a housekeeping
set, phenotype-linked signatures (plasmablast, myeloid/IL-6, interferon, naive T cell) and
background genes (synthetic symbols RDTG###), plus a per-batch shift for every gene.
"""

from __future__ import annotations

import numpy as np

from rdt_spark.sharp_score import EROSION_JOINTS, EROSION_MAX, JSN_JOINTS, JSN_MAX

_EROSION_MAX = np.array(EROSION_MAX)
_JSN_MAX = np.array(JSN_MAX)


def _joint_weights(joints: list[str]) -> np.ndarray:
    heavy = ("MCP2", "MCP3", "MTP5", "ULNA", "RADIUS", "NAVICULAR", "RADIOCARPAL",
             "CAPITATE_NAVICULAR_LUNATE", "MCP1", "PIP3")
    w = np.array([3.0 if j.split("_", 1)[1] in heavy else 1.0 for j in joints])
    return w / w.sum()


_EROSION_W = _joint_weights(EROSION_JOINTS)
_JSN_W = _joint_weights(JSN_JOINTS)
EROSION_SHARE = 0.55  # of new damage units; the rest is joint-space narrowing


def add_damage(rng: np.random.Generator, erosion: np.ndarray, jsn: np.ndarray, units: float) -> None:
    """Place ``Poisson(units)`` new damage units on joints, in place, within joint maxima."""
    n = int(rng.poisson(max(units, 0.0)))
    if n == 0:
        return
    n_erosion = int(rng.binomial(n, EROSION_SHARE))
    np.add.at(erosion, rng.choice(len(erosion), size=n_erosion, p=_EROSION_W), 1)
    np.add.at(jsn, rng.choice(len(jsn), size=n - n_erosion, p=_JSN_W), 1)
    np.minimum(erosion, _EROSION_MAX, out=erosion)
    np.minimum(jsn, _JSN_MAX, out=jsn)


SIGNATURES = {
    "housekeeping": ["ACTB", "GAPDH", "B2M", "RPLP0", "HPRT1", "TBP", "PPIA", "GUSB"],
    "plasmablast": ["JCHAIN", "MZB1", "TNFRSF17", "TXNDC5", "IGHM", "CD79A", "MS4A1", "CD19",
                    "POU2AF1", "XBP1", "PRDM1", "CD38"],
    "myeloid_il6": ["S100A8", "S100A9", "S100A12", "IL1B", "IL6", "CXCL8", "FCGR3B", "CXCR2",
                    "SOCS3", "OSM", "TNF", "MMP9", "CD163", "IL1RN"],
    "interferon": ["IFI27", "IFI44L", "IFIT1", "ISG15", "MX1", "RSAD2", "OAS1", "IFI6", "HERC5",
                   "EPSTI1", "IFIT3", "SIGLEC1"],
    "naive_t": ["CD3E", "CD3D", "CD4", "CD8A", "IL7R", "CCR7", "LEF1", "TCF7", "SELL", "CD28"],
}
N_GENES = 300
_NAMED = [g for genes in SIGNATURES.values() for g in genes]
GENE_SYMBOLS = _NAMED + [f"RDTG{i:03d}" for i in range(1, N_GENES - len(_NAMED) + 1)]
# Signature strength (log2 units) per phenotype, in the order of disease.PHENOTYPES.
PHENOTYPE_SIGNATURES = [
    {"plasmablast": 1.2, "myeloid_il6": 0.4},  # seropositive_erosive
    {"interferon": 1.0},  # seronegative_mild
    {"myeloid_il6": 1.4, "plasmablast": 0.5},  # refractory_inflammatory
    {"naive_t": 0.9},  # fast_remitting
]
N_BATCHES = 8
PLATFORMS = ["RNA-seq (Illumina NovaSeq)", "Nanostring nCounter"]

# Fixed panel properties: the same in every run and partition, whatever the global seed.
_panel = np.random.default_rng(20240611)
GENE_MEAN = _panel.normal(7.0, 1.8, N_GENES)
GENE_SD = _panel.uniform(0.25, 0.7, N_GENES)
BATCH_SHIFT = _panel.normal(0.0, 0.35, (N_BATCHES, N_GENES))
_SIGNATURE_ROWS = np.zeros((len(PHENOTYPE_SIGNATURES), N_GENES))
for _k, _strengths in enumerate(PHENOTYPE_SIGNATURES):
    for _name, _strength in _strengths.items():
        for _g in SIGNATURES[_name]:
            _SIGNATURE_ROWS[_k, GENE_SYMBOLS.index(_g)] = _strength


def expression(rng: np.random.Generator, phenotype: int, batch: int, activity: float) -> list:
    """One baseline sample's log2 expression; signatures scale a little with activity."""
    scale = rng.normal(1.0, 0.25) * (0.7 + 0.1 * activity)
    x = (GENE_MEAN + scale * _SIGNATURE_ROWS[phenotype] + BATCH_SHIFT[batch]
         + GENE_SD * rng.standard_normal(N_GENES))
    return np.round(x, 3).astype(np.float32).tolist()
