"""The twin's quality by modality: phenotype purity of the neighbours and the twin's AUROC on every
task, for the events-only space, the fused space, the fused space without each modality, and the
fused space with modalities hidden from the patients asked about (masked at query time).

Runs ``rdt fuse`` (with ``--without`` / ``--query-mask``), ``rdt index`` and ``rdt evaluate
--no-temporal --twin-only`` per variant on a lake that has been through the flow up to
``rdt fusion-inputs`` (``rdt demo`` leaves one), each as a user runs it, and reads the test
split's figures back from gold.evaluation. With ``--baselines`` the fused model's evaluation also
scores the baselines (the gradient-boosted model and the oracle that knows the phenotype), which
take longer than the twin. Prints a table, then one line of figures.

    python benchmarks/fusion_quality.py --config conf/local.yaml --lake ./lake [--variants a,b,c,d]

At 20,000 patients (conf/quality20k.yaml), the lake is built first with the flow's stages up to
fusion-inputs, each as ``python -m jobs.<stage> --config conf/quality20k.yaml --lake L`` (generate,
ingest, tokenize_events, states, modalities, note_features, train, embed, fusion_inputs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "events only": ["--without", "notes,imaging,omics"],
    "fused": [],
    "fused - notes": ["--without", "notes"],
    "fused - imaging": ["--without", "imaging"],
    "fused - omics": ["--without", "omics"],
    "fused, queries without notes/imaging/omics": ["--query-mask", "notes,imaging,omics"],
}
GROUPS = {"a": ["events only"], "b": ["fused"],
          "c": ["fused - notes", "fused - imaging", "fused - omics"],
          "d": ["fused, queries without notes/imaging/omics"]}


def job(name: str, config: str, lake: str, *options: str) -> None:
    subprocess.run([sys.executable, "-m", f"jobs.{name}", "--config", config, "--lake", lake,
                    "--quiet", *options], cwd=ROOT, check=True)


def figures(lake: str) -> dict[str, dict[str, float]]:
    """method -> {task: AUROC, "purity": ..., "purity chance": ...} of the test split."""
    rows = DeltaTable(f"{lake}/gold/evaluation").to_pandas()
    rows = rows[rows["evaluation"] == "test split"]
    out: dict[str, dict[str, float]] = {}
    for _, r in rows[rows["metric"] == "purity"].iterrows():
        name = "purity" if r["method"].startswith("digital twin") else "purity chance"
        out.setdefault("twin", {})[name] = r["value"]
    for _, r in rows[rows["metric"] == "auroc"].iterrows():
        method = "twin" if r["method"].startswith("digital twin") else r["method"]
        out.setdefault(method, {})[r["task"]] = r["value"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/local.yaml")
    parser.add_argument("--lake", default="lake")
    parser.add_argument("--variants", default="a,b,c,d")
    parser.add_argument("--baselines", action="store_true",
                        help="score the baselines too, on the fused model's evaluation")
    args = parser.parse_args()
    lake = str(Path(args.lake).resolve())
    results, baselines = {}, {}
    for group in args.variants.split(","):
        for name in GROUPS[group]:
            print(f"== {name}", flush=True)
            job("fuse", args.config, lake, *VARIANTS[name])
            job("index", args.config, lake)
            full = args.baselines and name == "fused"
            job("evaluate", args.config, lake, "--no-temporal", *([] if full else ["--twin-only"]))
            scored = figures(lake)
            results[name] = scored.pop("twin")
            if full:
                baselines.update(scored)
    columns = sorted({k for r in results.values() for k in r} - {"purity", "purity chance"})
    print("| variant | purity (chance) | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 2) + "|")
    for name, r in results.items():
        cells = [f"{r.get(c, float('nan')):.3f}" for c in columns]
        purity = f"{r.get('purity', float('nan')):.3f} ({r.get('purity chance', float('nan')):.3f})"
        print(f"| {name} | {purity} | " + " | ".join(cells) + " |")
    for method, r in baselines.items():
        if not method.startswith("population prior"):
            cells = [f"{r.get(c, float('nan')):.3f}" for c in columns]
            print(f"| {method} | - | " + " | ".join(cells) + " |")
    print(" ".join(f"{name.replace(' ', '_')}:purity={r.get('purity', float('nan')):.3f}"
                   for name, r in results.items()))


if __name__ == "__main__":
    main()
