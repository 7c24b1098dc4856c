"""rdt fuse: train the fusion model (Ray Train) on gold.fusion_inputs and write every patient-time's
fused embedding (Ray Data) to gold.embeddings, the table the twin's index is built from.

``--without notes,omics`` builds the space without those modalities (ablations); with nothing left
but events, gold.embeddings is the events encoder's own embeddings, unfused. ``--query-mask``
hides modalities from the patients asked about (rows outside ``index.splits``) but not from the
reference population.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from dataclasses import dataclass

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, JobFailed, option
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_EMBEDDINGS, conform

log = logging.getLogger(__name__)
OPTIONAL = ("notes", "imaging", "omics")


@dataclass(frozen=True)
class Options:
    epochs: int | None = option("override fusion.epochs")
    without: str | None = option("modalities to leave out of the space, comma-separated "
                                 f"(of {', '.join(OPTIONAL)})")
    query_mask: str | None = option("modalities hidden from the patients asked about (rows "
                                    "outside index.splits), comma-separated")


def _names(value: str | None, option_name: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in (value or "").split(",") if n.strip())
    unknown = [n for n in names if n not in OPTIONAL]
    if unknown:
        raise JobFailed(f"--{option_name}: unknown modality {unknown[0]!r} "
                        f"(expected some of {', '.join(OPTIONAL)})")
    return names


def run(cfg: Config, opts: Options) -> dict:
    from ray_training.datasets import delta_version
    from ray_training.fusion_embed import embed_fused
    from ray_training.fusion_train import fit_fusion, input_dims

    without = _names(opts.without, "without")
    query_mask = _names(opts.query_mask, "query-mask")
    spark = context.spark(cfg)
    inputs = context.path(cfg, "gold.fusion_inputs")
    inputs_version = delta_version(inputs)
    dims = input_dims(inputs, inputs_version, without)
    event_embeddings = read_table(spark, cfg.lake, "gold.event_embeddings")
    events_model = event_embeddings.select("model_version").first()[0]  # one model per table
    if list(dims) == ["events"]:
        log.info("events only: gold.embeddings is the events encoder's own embeddings, unfused")
        version = write_table(conform(event_embeddings, GOLD_EMBEDDINGS), cfg.lake, "gold.embeddings")
        model_version = events_model
    else:
        context.ray(cfg)
        fusion = dataclasses.replace(cfg.fusion, epochs=opts.epochs or cfg.fusion.epochs)
        log.info(f"fusing {', '.join(f'{m} ({d})' for m, d in dims.items())}: {fusion.epochs} "
                 f"epochs on {fusion.num_workers} Ray Train worker(s)")
        model_version, model_dir, metrics = fit_fusion(inputs, events_model, fusion, cfg.run_dir, without)
        log.info(f"model {model_version}: train loss {metrics.get('train_loss', float('nan')):.3f}, "
                 f"val loss {metrics.get('val_loss', float('nan')):.3f} -> {model_dir}")
        staged = context.staging(cfg, "fused_embeddings")
        embed_fused(inputs, inputs_version, model_dir, staged, cfg.embed, query_mask,
                    tuple(cfg.index.splits))
        version = write_table(conform(spark.read.parquet(staged), GOLD_EMBEDDINGS), cfg.lake,
                              "gold.embeddings")
        shutil.rmtree(staged, ignore_errors=True)
    used = (read_table(spark, cfg.lake, "gold.embeddings")
            .groupBy(F.array_join(F.array_sort("modalities"), "+").alias("used")).count()
            .orderBy(F.desc("count")).collect())  # small: one row per combination of modalities
    rows = sum(r["count"] for r in used)
    log.info(f"gold.embeddings v{version}: {rows:,} patient-times; by modalities used: "
             + ", ".join(f"{r['used']} {r['count']:,}" for r in used))
    return {"model_version": model_version, "rows": rows, "version": version,
            "modalities_used": {r["used"]: r["count"] for r in used}}


JOB = Job("fuse", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
