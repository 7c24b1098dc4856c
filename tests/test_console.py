"""What a job shows on a terminal: progress with rate and time left, quiet when scheduled, and a
closing paragraph of what it wrote."""

from __future__ import annotations

import logging

from jobs.console import Console, Progress, summary_paragraph


def test_progress_reports_done_rate_and_time_left(caplog):
    log = logging.getLogger("jobs.test_progress")
    with caplog.at_level(logging.INFO, logger="jobs.test_progress"):
        progress = Progress(log, 4, "stages", every=0)
        progress.advance()
        progress.advance(3, detail="last")
    first, last = (r.getMessage() for r in caplog.records)
    assert first.startswith("1/4 stages, ") and "stages/s, about " in first and first.endswith(" left")
    assert last.startswith("4/4 stages, ") and last.endswith("done (last)")


def test_closing_summary_names_figures_and_never_a_subject():
    text = summary_paragraph("generate", {"simulated": 1200, "rows": {"omop.person": 1200},
                                          "subject_id": 42, "patient": 7, "neighbours": [1, 2],
                                          "query": {"patient": 135931849816017535, "k": 50}}, 75)
    assert text == ("rdt generate finished in 1.2 min: simulated 1,200; rows omop.person 1,200; "
                    "query k 50.")


def test_console_is_quiet_without_a_terminal_but_keeps_every_line_in_the_log(tmp_path, capsys):
    log = logging.getLogger("jobs.test_quiet")
    with Console(str(tmp_path), "quiet-job") as console:  # pytest's stderr is no terminal
        log.info("a progress line")
        console.say("rdt quiet-job finished in 1 s.")
    assert console.quiet
    err = capsys.readouterr().err
    assert "a progress line" not in err and "rdt quiet-job finished in 1 s." in err
    assert "a progress line" in console.log_path.read_text()
