"""`rdt <job>`: one sub-command per job, all reading the same validated YAML config."""

from __future__ import annotations

import argparse
import sys

from jobs import demo, embed, evaluate, export_meds, generate, index, ingest, query, tokenize, train
from jobs.config import ConfigError, load_config
from rdt_spark.ingest import IngestAccountingError
from rdt_spark.omop_source import SourceError

JOBS = {
    "generate": generate, "ingest": ingest, "tokenize": tokenize, "train": train,
    "embed": embed, "index": index, "query": query, "evaluate": evaluate, "demo": demo,
    "export-meds": export_meds,
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rdt", description="Rheumatic Digital Twin jobs")
    subs = top.add_subparsers(dest="job", required=True)
    for name, job in JOBS.items():
        sub = subs.add_parser(name, help=(job.__doc__ or "").strip().splitlines()[0])
        sub.add_argument("--config", default="conf/local.yaml", help="YAML config file")
        sub.add_argument("--lake", help="override the lake root of the config")
        job.add_arguments(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = {"lake": args.lake} if args.lake else {}
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"rdt: {err}", file=sys.stderr)
        return 2
    try:
        JOBS[args.job].run(cfg, args)
    except (SourceError, IngestAccountingError) as err:
        # Bad input is the user's to fix: say which file, table and column, without a trace.
        print(f"rdt {args.job}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
