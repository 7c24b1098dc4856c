"""The van der Heijde modified total Sharp score (mTSS): which joints are scored, and their maxima.

``ext.imaging`` holds one row per radiograph study (hands and feet read together) with two
arrays in the orders below: ``erosion_scores`` (hands 0-5, feet 0-10 per joint) and
``jsn_scores`` (joint-space narrowing, 0-4 per joint). The study's mTSS is the sum of both
arrays, 0-448; ingest checks every score against its joint's maximum.

Example: a study with erosion 2 at L_MCP2 and JSN 1 at R_PIP3 and zeros elsewhere has mTSS 3.
"""

from __future__ import annotations

_HAND_EROSION = ["MCP1", "MCP2", "MCP3", "MCP4", "MCP5", "IP", "PIP2", "PIP3", "PIP4", "PIP5",
                 "CMC1", "TRAPEZIUM", "NAVICULAR", "LUNATE", "RADIUS", "ULNA"]
_HAND_JSN = ["MCP1", "MCP2", "MCP3", "MCP4", "MCP5", "PIP2", "PIP3", "PIP4", "PIP5", "CMC3",
             "CMC4", "CMC5", "MULTANGULAR_NAVICULAR", "CAPITATE_NAVICULAR_LUNATE", "RADIOCARPAL"]
_FOOT = ["MTP1", "MTP2", "MTP3", "MTP4", "MTP5", "IP1"]

EROSION_JOINTS = ([f"{side}_{j}" for side in "LR" for j in _HAND_EROSION]
                  + [f"{side}_{j}" for side in "LR" for j in _FOOT])
EROSION_MAX = [5] * (2 * len(_HAND_EROSION)) + [10] * (2 * len(_FOOT))
JSN_JOINTS = ([f"{side}_{j}" for side in "LR" for j in _HAND_JSN]
              + [f"{side}_{j}" for side in "LR" for j in _FOOT])
JSN_MAX = [4] * len(JSN_JOINTS)

MTSS_MAX = sum(EROSION_MAX) + sum(JSN_MAX)  # 448

# silver.events codes ingest derives from each accepted study.
MTSS_CODE = "RDT/MTSS"
EROSION_CODE = "RDT/MTSS_EROSION"
JSN_CODE = "RDT/MTSS_JSN"
