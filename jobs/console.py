"""What a job shows on the terminal, and where everything else goes.

The terminal gets our own progress lines (``[rdt 12:00:01] ingest: ...``: stages, counts,
figures, never identifiers or note text) and the job's report on stdout. Everything the libraries
underneath print (Spark's JVM and Ivy, Ray's loggers and core workers, ScaNN's absl lines) goes to
``<run_dir>/logs/<time>-<job>.log``: while a job runs, file descriptor 2 points at that file, so
native code and child processes (the Spark JVM started then) write there too, and our lines reach
the terminal through a copy of the original stderr. ``--verbose`` leaves stderr alone and lets
our loggers speak at DEBUG; Spark's own level is the config's ``spark.log.level`` (ERROR unless
set). Nothing logged at any level carries identifiers, dates of birth or note text
(``tests/test_logs.py`` scans a whole flow run at the most verbose).

An unexpected error is written to the log with its traceback; the terminal gets one line that
names the log.

**Scheduled runs stay quiet.** When stderr is not a terminal (cron, a cluster scheduler, a pipe)
or ``--quiet`` is given, our progress lines go to the log file only; the terminal gets the job's
closing summary (one paragraph of what the job wrote) and failures, both through ``Console.say``.
``Progress`` reports stages or records done, the rate and the time left, at most every few
seconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

OUR_LOGGERS = ("jobs", "rdt_spark", "ray_training", "__main__")  # __main__: a job run as a file
CONSOLE_FORMAT = "[rdt %(asctime)s] %(job)s: %(message)s"


_current_job: ContextVar[str] = ContextVar("current_job", default="rdt")


@contextlib.contextmanager
def labelled(job: str) -> Iterator[None]:
    """Progress lines logged inside this block name ``job`` (``rdt demo`` labels each step)."""
    token = _current_job.set(job)
    try:
        yield
    finally:
        _current_job.reset(token)


class _JobName(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job = _current_job.get()
        return True


def _writes_to_fd2(stream) -> bool:
    # False for a stream that is not the process's stderr (pytest's capsys, a notebook).
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


class Progress:
    """Stages or records done, the rate and the time left, logged at most every ``every``
    seconds (and at the end), e.g. ``demo: 3/9 stages, 0.05 stages/s, about 2 min left``."""

    def __init__(self, logger: logging.Logger, total: int, unit: str, every: float = 5.0):
        self.log, self.total, self.unit, self.every = logger, total, unit, every
        self.done, self.started, self._last = 0, time.monotonic(), float("-inf")

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last < self.every and self.done < self.total:
            return
        self._last = now
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.log.info(f"{self.done:,}/{self.total:,} {self.unit}, {rate:.3g} {self.unit}/s, "
                      f"{'done' if self.done >= self.total else 'about ' + _duration(left) + ' left'}"
                      + (f" ({detail})" if detail else ""))


def _duration(seconds: float) -> str:
    """``_duration(75) == "1.2 min"``; ``_duration(8) == "8 s"``."""
    if seconds == float("inf"):
        return "an unknown time"
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def summary_paragraph(job: str, result: dict, seconds: float) -> str:
    """One paragraph of what a job wrote, from the scalar figures of its result (no patient,
    not even a pseudonym: a key naming a subject or patient is left out)."""
    def scalar(value) -> bool:
        return isinstance(value, (str, int, float))

    def about_a_patient(key) -> bool:
        return "subject" in str(key) or "patient" in str(key)

    def shown(value) -> str:
        if isinstance(value, dict):  # a breakdown, e.g. rows per table
            return ", ".join(f"{k} {shown(v)}" for k, v in value.items()
                             if not about_a_patient(k))
        if isinstance(value, float):
            return f"{value:.3g}"
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    figures = [f"{key.replace('_', ' ')} {shown(value)}"
               for key, value in (result or {}).items()
               if not about_a_patient(key)
               and (scalar(value) or isinstance(value, dict) and 0 < len(value) <= 20
                    and all(scalar(v) for v in value.values()))]
    return (f"rdt {job} finished in {_duration(seconds)}"
            + (f": {'; '.join(figures)}." if figures else "."))


class Console:
    """A context manager around one job run; see the module doc."""

    def __init__(self, run_dir: str, job: str, verbose: bool = False, quiet: bool = False):
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.log_path = Path(run_dir) / "logs" / f"{stamp}-{job}.log"
        self.job, self.verbose = job, verbose
        # --verbose asks for everything; otherwise progress shows only where someone watches.
        self.quiet = not verbose and (quiet or not _is_terminal(sys.stderr))
        self.exit_code = 0
        self._saved_stderr: int | None = None
        self._handlers: list[tuple[logging.Logger, logging.Handler]] = []

    def __enter__(self) -> Console:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        log_file = open(self.log_path, "a", buffering=1)  # noqa: SIM115  closed in __exit__
        self._log_file = log_file
        terminal, self._own_terminal = sys.stderr, False
        if not self.verbose:
            self._saved_stderr = os.dup(2)
            if _writes_to_fd2(sys.stderr):
                terminal = os.fdopen(os.dup(self._saved_stderr), "w", buffering=1)
                self._own_terminal = True
            os.dup2(log_file.fileno(), 2)
        self._terminal = terminal
        to_file = logging.StreamHandler(log_file)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_terminal = logging.StreamHandler(terminal)
        to_terminal.setFormatter(logging.Formatter(CONSOLE_FORMAT, "%H:%M:%S"))
        to_terminal.addFilter(_JobName())
        if self.quiet:  # the log file still gets every line
            to_terminal.setLevel(logging.WARNING)
        self._label = _current_job.set(self.job)
        root = logging.getLogger()
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
        logging.getLogger("py4j").setLevel(logging.WARNING)  # a line per pooled socket at INFO
        self._attach(root, to_file)
        for name in OUR_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG if self.verbose else logging.INFO)
            self._attach(logger, to_terminal)
        return self

    def _attach(self, logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        self._handlers.append((logger, handler))

    def say(self, message: str) -> None:
        """A line for the user (a failure, the closing paragraph), on the terminal even when
        quiet; the log keeps the same line."""
        print(message, file=self._terminal, flush=True)
        print(message, file=self._log_file, flush=True)

    def __exit__(self, kind, error, tb) -> bool:
        suppressed = False
        if error is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            self._log_file.write("".join(traceback.format_exception(kind, error, tb)))
            first_line = (str(error).strip().splitlines() or [""])[0]  # a JVM error runs on
            self.say(f"rdt {self.job} failed: {kind.__name__}: {first_line} "
                      f"(details in {self.log_path})")
            self.exit_code = 1
            suppressed = True
        for logger, handler in self._handlers:
            logger.removeHandler(handler)
        _current_job.reset(self._label)
        sys.stderr.flush()
        if self._saved_stderr is not None:
            os.dup2(self._saved_stderr, 2)
            os.close(self._saved_stderr)
        if self._own_terminal:
            self._terminal.close()
        self._log_file.close()
        return suppressed
