"""Free-text rheumatology visit notes written from the patient's state at that visit.

Phrasing varies (synonyms, abbreviations such as TJC/SJC/MTX/pred, negations such as "denies" or
"no synovitis") so that a text model has something to learn; what a note says follows the state
it was written from (joint counts, stiffness, flare, the plan), never the hidden phenotype.

Example: a visit with 6 tender and 4 swollen joints and a flare may read
"RA f/u. Reports flare of hands since last visit. TJC 6, SJC 4. AM stiffness ~90 min. ..."
"""

from __future__ import annotations

from dataclasses import dataclass

from rdt_spark.simulator.disease import Draws

_OPENERS = ["Seen in RA clinic.", "RA follow-up.", "Pt reviewed today for RA.", "RA f/u.",
            "Rheumatology review.", "Follow-up visit, rheumatoid arthritis."]
_FIRST = ["New patient referred with inflammatory polyarthritis.",
          "New referral: symmetrical small-joint polyarthritis.",
          "First rheumatology visit for suspected RA."]
_JOINTS = ["hands", "wrists", "MCPs", "PIPs", "knees", "feet", "MTPs", "shoulders"]
_DRUG_WORDS = {"methotrexate": ["MTX", "methotrexate"], "csdmard": ["csDMARD", "conventional DMARD"],
               "tnf_inhibitor": ["anti-TNF", "TNFi"], "il6r_inhibitor": ["IL-6R blocker", "IL6i"],
               "abatacept": ["abatacept", "ABA"], "rituximab": ["rituximab", "RTX"],
               "jak_inhibitor": ["JAKi", "JAK inhibitor"]}


@dataclass(frozen=True)
class VisitState:
    first: bool
    tjc: int
    sjc: int
    das28: float | None
    das28_kind: str  # "ESR" or "CRP": which DAS28 the note quotes
    flare: bool
    on: tuple[str, ...]  # drug classes taken after the visit
    started: str | None  # drug ingredient started at this visit
    stopped: str | None  # "<ingredient>: <reason>" stopped since the last visit
    smoking: str
    prednisone: bool
    haq: float | None


def _joints(d: Draws, n: int) -> str:
    chosen = []
    for _ in range(n):
        j = d.pick(_JOINTS)
        if j not in chosen:
            chosen.append(j)
    return " and ".join(chosen)


def write_note(d: Draws, s: VisitState) -> str:
    parts = [d.pick(_FIRST) if s.first else d.pick(_OPENERS)]
    if s.flare:
        parts.append(d.pick([f"Reports flare of {_joints(d, 2)} since last visit.",
                             "Flare over the past weeks.",
                             f"Worse {_joints(d, 1)} - ?flare.",
                             "c/o increased joint pain and swelling (flare)."]))
    elif not s.first:
        if s.sjc == 0 and s.tjc <= 1:
            parts.append(d.pick(["Doing well.", "No new complaints.", "Feels well, denies flares.",
                                 "Denies joint swelling."]))
        else:
            parts.append(d.pick(["Ongoing joint pain.", f"Still sore {_joints(d, 2)}.",
                                 "Partial improvement only."]))
    if s.tjc + s.sjc > 4:
        parts.append(d.pick([f"Morning stiffness ~{15 * (2 + d.integer(0, 8))} min.",
                             f"AM stiffness {15 * (2 + d.integer(0, 8))} minutes.",
                             "Prolonged early morning stiffness."]))
    else:
        parts.append(d.pick(["No morning stiffness.", "Denies AM stiffness.",
                             "Stiffness <15 min.", ""]))
    if s.sjc == 0:
        parts.append(d.pick(["O/E no synovitis.", f"{s.tjc} tender, no swollen joints.",
                             f"TJC {s.tjc}, SJC 0."]))
    else:
        parts.append(d.pick([f"{s.tjc} tender, {s.sjc} swollen joints.",
                             f"TJC {s.tjc}, SJC {s.sjc}.",
                             f"O/E synovitis of {_joints(d, 2)} ({s.sjc} swollen)."]))
    if s.das28 is not None and d.chance(0.7):
        parts.append(d.pick([f"DAS28 {s.das28:.1f}.", f"DAS28-{s.das28_kind} {s.das28:.2f}.",
                             f"Disease activity score {s.das28:.1f}."]))
    if s.haq is not None and d.chance(0.4):
        parts.append(f"HAQ {s.haq:.2f}.")
    if s.first:
        parts.append({"never": d.pick(["Never smoker.", "Non-smoker."]),
                      "former": d.pick(["Ex-smoker.", "Former smoker."]),
                      "current": d.pick(["Current smoker, cessation advised.",
                                         "Smokes daily."])}[s.smoking])
    if s.stopped:
        drug, _, reason = s.stopped.partition(": ")
        parts.append(d.pick([f"Stopped {drug} ({reason}).", f"{drug} discontinued - {reason}.",
                             f"Had to stop {drug} because of {reason}."]))
    if s.started:
        parts.append(d.pick([f"Plan: start {s.started}.", f"Commence {s.started}.",
                             f"Plan to start {s.started}, screening bloods done."]))
    elif s.on:
        words = " + ".join(d.pick(_DRUG_WORDS[c]) for c in s.on)
        parts.append(d.pick([f"Continue {words}.", f"Plan: continue {words}.",
                             f"No change, remains on {words}."]))
    else:
        parts.append("Not on DMARD at present.")
    if s.prednisone and d.chance(0.6):
        parts.append(d.pick(["Pred taper.", "Bridging prednisone, taper over weeks.",
                             "Short course of pred."]))
    elif d.chance(0.3):
        parts.append(d.pick(["No steroids.", "Not on prednisone."]))
    parts.append(d.pick(["Review 3/12.", "F/u in 3 months.", "Review in clinic.", "RTC 6/12.",
                         "Bloods before next visit."]))
    return " ".join(p for p in parts if p)
