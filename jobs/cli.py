"""`rdt <job>`: one sub-command per job of the registry, plus `rdt demo`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs import demo, run_all
from jobs.job import run_from_args
from jobs.registry import JOBS

COMMANDS = {**JOBS, demo.JOB.name: demo.JOB, run_all.JOB.name: run_all.JOB}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rdt", description="Rheumatic Digital Twin jobs")
    subs = top.add_subparsers(dest="job", required=True)
    for name, job in COMMANDS.items():
        job.add_arguments(subs.add_parser(name, help=job.summary, description=job.summary))
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_from_args(COMMANDS[args.job], args)


if __name__ == "__main__":
    sys.exit(main())
