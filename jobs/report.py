"""rdt report: one patient's twin report as a self-contained HTML page, readable when printed.

The page (``ray_training.report_pages``) shows the patient's course up to the asked time, the
neighbours' course continuing past "now", the time-to-flare Kaplan-Meier curve, every task's
forecast with its interval, the treatment responses per drug class (most promising first) and a
sentence per figure; only what ``ray_training.disclosure`` lets out reaches it (pseudonym,
neighbours only where ``privacy.neighbour_rows`` grants them, small cells suppressed). The page
needs no network: its charts are inline SVG.

Example: ``rdt report --subject 1234 --time 2019-06-30 --out report.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from jobs.config import Config
from jobs.job import Job, JobFailed, option
from jobs.query import parse_time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    subject: int = option("subject_id of the patient", dataclasses.MISSING)
    time: str = option("ISO date or time; the latest prediction time at or before it is used",
                       dataclasses.MISSING)
    out: str | None = option("the HTML file to write (default "
                             "<run_dir>/reports/twin-report-<pseudonym>-<date>.html)")
    k: int | None = option("number of neighbours per question (default from config)")


def sources(cfg: Config, k: int | None = None):
    """What report pages read, from the config (``rdt report`` and a server's pages)."""
    from ray_training.report_pages import ReportSources
    from rdt_spark.lake import table_path
    from rdt_spark.tasks import load_tasks

    return ReportSources(cfg.run_dir, table_path(cfg.lake, "silver.events"),
                         load_tasks(cfg.tokenize.tasks_file).drug_classes,
                         dataclasses.replace(cfg.query, k=k or cfg.query.k), cfg.privacy,
                         cfg.report)


def run(cfg: Config, opts: Options) -> dict:
    from ray_training.report_pages import report_page
    from ray_training.search import TwinIndex

    key = cfg.privacy.key(cfg.run_dir)
    index = TwinIndex.current(cfg.run_dir)
    log.info("index loaded; searching the neighbours and reading the patient's course")
    try:
        html, shown = report_page(sources(cfg, opts.k), index, key, opts.subject,
                                  parse_time(opts.time))
    except LookupError as err:
        raise JobFailed(str(err)) from None
    out = Path(opts.out or Path(cfg.run_dir) / "reports" /
               f"twin-report-{shown['patient']}-{shown['prediction_time'][:10]}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    staged.write_text(html, encoding="utf-8")
    os.replace(staged, out)  # a reader sees the previous page or this one, whole
    suppressed = sum(f["suppressed"] for f in shown["events"] + shown["treatment_response"])
    log.info(f"wrote a twin report of {len(html) / 1024:.0f} KiB to {out}: "
             f"{len(shown['events'])} event forecasts, {len(shown['treatment_response'])} drug "
             f"classes ({suppressed} forecasts suppressed under the minimum cell size "
             f"{cfg.query.min_cell_size}), neighbours "
             f"{'listed' if shown['neighbours'] is not None else 'withheld'}")
    return {"path": str(out), "bytes": len(html.encode()), "patient": shown["patient"],
            "prediction_time": shown["prediction_time"], "suppressed": suppressed}


JOB = Job("report", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
