"""The one job interface: a name, typed options and a ``run(config, options) -> summary``.

A job module defines its options once, as a frozen dataclass (one field per ``--option``, its help
in the field's metadata), a ``run`` function, and ``JOB = Job(...)``. The same ``Job`` then serves
``rdt <job>`` (``jobs.cli``), ``python -m jobs.<module>`` and ``python jobs/<module>.py`` (both
through ``Job.main``, which is what ``spark-submit jobs/<module>.py`` and
``ray job submit -- python jobs/<module>.py`` run), ``rdt demo`` and the tests, with the same
options and the same result.

Example::

    @dataclass(frozen=True)
    class Options:
        patients: int | None = option("number of patients (default from config)")

    JOB = Job("generate", run, Options)     # rdt generate --patients 500 --lake /tmp/lake
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.config import Config, load_config
from jobs.console import Console, summary_paragraph
from rdt_spark.ingest import IngestAccountingError
from rdt_spark.omop_source import SourceError
from rdt_spark.settings import ConfigError

DEFAULT_CONFIG = "conf/local.yaml"


def option(help: str, default: Any = None, **argparse_kwargs: Any) -> Any:
    """A job option: a dataclass field whose metadata carries its ``--help`` text."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


class JobFailed(Exception):
    """A failure the user can act on: printed as one line, exit code 2, no traceback."""


# Failures that are the user's to fix (bad input, a missing prerequisite): one line, exit code 2.
USER_ERRORS = (JobFailed, ConfigError, SourceError, IngestAccountingError, FileNotFoundError)


@dataclass(frozen=True)
class NoOptions:
    """A job without options of its own (``--config`` and ``--lake`` only)."""


@dataclass(frozen=True)
class Job:
    name: str  # the `rdt` sub-command
    run: Callable[[Config, Any], dict]
    options: type = NoOptions

    @property
    def summary(self) -> str:
        """The first paragraph of the job module's docstring, without its ``rdt <job>:`` lead."""
        module = sys.modules.get(self.run.__module__)
        doc = ((module.__doc__ if module else None) or self.name).strip().split("\n\n")[0]
        return " ".join(doc.split()).removeprefix(f"rdt {self.name}: ")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file")
        parser.add_argument("--lake", help="override the lake root of the config")
        parser.add_argument("--verbose", action="store_true",
                            help="show library output (Spark, Ray, ScaNN) on the console too")
        parser.add_argument("--quiet", action="store_true",
                            help="no progress lines, only the closing summary (the default "
                                 "when stderr is not a terminal)")
        hints = typing.get_type_hints(self.options)
        for f in dataclasses.fields(self.options):
            kind, meta = hints[f.name], dict(f.metadata)
            flag = "--" + f.name.replace("_", "-")
            if kind is bool:
                parser.add_argument(flag, dest=f.name, action="store_true", **meta)
                continue
            inner = [a for a in typing.get_args(kind) if a is not type(None)]
            if typing.get_origin(kind) in (typing.Union, types.UnionType):
                kind = inner[0]
            required = f.default is dataclasses.MISSING
            parser.add_argument(flag, dest=f.name, type=kind, required=required,
                                default=None if required else f.default, **meta)

    def parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog or f"rdt {self.name}", description=self.summary)
        self.add_arguments(parser)
        return parser

    def options_from(self, args: argparse.Namespace) -> Any:
        return self.options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(self.options)})

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Run from a command line: ``python jobs/<module>.py [options]``; returns the exit code."""
        args = self.parser(prog=Path(sys.argv[0]).name).parse_args(argv)
        return run_from_args(self, args)


def run_from_args(job: Job, args: argparse.Namespace) -> int:
    """Load the config and run the job with its options; returns the exit code: 0, 2 for a
    failure the user can fix (named in one line), 1 for anything else (traceback in the log)."""
    try:
        cfg = load_config(args.config, {"lake": args.lake} if args.lake else {})
    except ConfigError as err:
        print(f"rdt: {err}", file=sys.stderr)
        return 2
    console = Console(cfg.run_dir, job.name, verbose=args.verbose, quiet=args.quiet)
    started = time.monotonic()
    with console:
        try:
            result = job.run(cfg, job.options_from(args))
        except USER_ERRORS as err:
            console.say(f"rdt {job.name}: {err}")
            return 2
        console.say(summary_paragraph(job.name, result, time.monotonic() - started))
    return console.exit_code
