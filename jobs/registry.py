"""Every job, once: the data flow's stages in order, and the tools that read what they wrote.

``rdt`` (``jobs.cli``) offers them all as sub-commands, ``rdt demo`` runs ``FLOW`` in order on
the embedded default, and a scheduler runs ``FLOW`` the same way on a cluster.
"""

from __future__ import annotations

from jobs import (
    cohort,
    embed,
    evaluate,
    export_meds,
    forecast,
    fuse,
    fusion_inputs,
    generate,
    index,
    ingest,
    modalities,
    note_features,
    query,
    report,
    serve,
    states,
    tokenize_events,
    train,
)
from jobs.job import Job

# source -> silver -> gold -> models -> embeddings -> index -> evaluation (../shared/DESIGN.md):
# the events encoder's embeddings and the other modalities' inputs meet in gold.fusion_inputs,
# which rdt fuse turns into the twin's gold.embeddings.
FLOW: list[Job] = [generate.JOB, ingest.JOB, tokenize_events.JOB, states.JOB, modalities.JOB,
                   note_features.JOB, train.JOB, embed.JOB, fusion_inputs.JOB, fuse.JOB,
                   index.JOB, evaluate.JOB]
TOOLS: list[Job] = [query.JOB, report.JOB, serve.JOB, forecast.JOB, cohort.JOB,
                    export_meds.JOB]
JOBS: dict[str, Job] = {job.name: job for job in FLOW + TOOLS}
