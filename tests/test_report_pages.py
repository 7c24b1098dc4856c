"""Twin report pages: `rdt report` writes one self-contained HTML file, and the pages served by a
real uvicorn server (the report router behind a bearer-token check) render in Debian's chromium
(headless, driven by Selenium through chromium-driver): charts drawn, suppressed figures read as
suppressed, no console errors. Screenshots land in the test's tmp_path.

Every test reads the session flow's lake (``conftest.flow``); the pages run with a minimum cell
size of 20 so that some figures of a 400-patient registry are certainly suppressed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

MIN_CELL = 20
TOKEN = "test-token-for-the-report-pages"


def test_treatment_periods_break_at_gaps_longer_than_the_configured_days():
    from ray_training.patient_course import periods

    times = pd.Series(pd.to_datetime(["2019-01-01", "2019-03-01", "2019-06-01", "2020-06-01"],
                                      utc=True))
    assert periods(times, 180) == [(times[0], times[2]), (times[3], times[3])]
    assert periods(times.iloc[:0], 180) == []


@pytest.fixture(scope="module")
def example(flow):
    from jobs import demo

    cfg, _ = flow
    subject, at = demo.example_patient(cfg)
    return cfg.replace(query=dataclasses.replace(cfg.query, min_cell_size=MIN_CELL)), subject, at


def test_report_is_one_self_contained_page_of_the_disclosed_report(example, tmp_path):
    from jobs import report

    cfg, subject, at = example
    out = tmp_path / "report.html"
    result = report.run(cfg, report.Options(subject=subject, time=at, out=str(out)))
    page = out.read_text()
    assert result["path"] == str(out) and result["suppressed"] > 0
    # Nothing to fetch: no script, no stylesheet or image from elsewhere; charts are inline SVG.
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    assert page.count("<svg") == 6
    assert f"patient {result['patient']}" in page and f"patient {subject}<" not in page
    assert f"suppressed (fewer than {MIN_CELL})" in page
    assert "@media print" in page
    assert "neighbours withheld" in page  # privacy.neighbour_rows is off


def test_report_lists_pseudonymised_neighbours_only_where_granted(example):
    from jobs.report import sources
    from ray_training.report_pages import report_page
    from ray_training.search import TwinIndex
    from rdt_spark.pseudonyms import pseudonym

    cfg, subject, at = example
    granted = dataclasses.replace(sources(cfg), privacy=dataclasses.replace(
        cfg.privacy, neighbour_rows=True))
    key = cfg.privacy.key(cfg.run_dir)
    page, shown = report_page(granted, TwinIndex.current(cfg.run_dir), key, subject,
                              pd.Timestamp(at, tz="UTC"))
    assert 'id="neighbour-table"' in page and shown["patient"] == pseudonym(subject, key)
    assert all(f"<td>{n['patient']}</td>" in page for n in shown["neighbours"])
    assert "neighbours withheld" not in page


@pytest.fixture(scope="module")
def cohort_summary(example, tmp_path_factory):
    """An `rdt cohort` run whose selection is certainly small (men with a DAS28 above 6.5 at
    their latest visit), so its page must suppress counts."""
    from jobs import cohort

    cfg, _, _ = example
    criteria = tmp_path_factory.mktemp("criteria") / "few.yaml"
    criteria.write_text(yaml.safe_dump({"name": "report_pages_few", "include": {
        "sex": "M", "das28_above": 6.5}}))
    return cohort.run(cfg, cohort.Options(criteria=str(criteria)))


@pytest.fixture(scope="module")
def server(example, cohort_summary):
    """``rdt serve``'s app (the API and the report pages behind its bearer-token check) on a
    real uvicorn server on loopback."""
    import uvicorn

    from jobs.serve import served_app
    from ray_training.service import TwinState

    cfg, _, _ = example
    state = TwinState(cfg.run_dir, cfg.query, cfg.privacy, cfg.serve)
    served = uvicorn.Server(uvicorn.Config(served_app(cfg, state, TOKEN), host="127.0.0.1",
                                          port=0, log_level="warning"))
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not served.started:
        assert time.time() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = served.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/pages"
    served.should_exit = True
    thread.join(10)
    state.close()


def test_pages_refuse_a_request_without_the_bearer_token(server):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server}/", timeout=30)
    assert refused.value.code == 401


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver_path, "make test installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    # Every request the browser makes carries the token, as a client of the API would send it.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Bearer {TOKEN}"}})
    yield driver
    driver.quit()


def open_page(driver, url: str, screenshot: Path) -> None:
    """Load ``url``, check the console stayed clean, and save a full-page screenshot."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.set_window_size(1280, 1000)  # a page's height is measured from a fresh viewport
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 100, 16000))
    assert driver.save_screenshot(str(screenshot))
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_report_and_cohort_pages_render_in_chromium(server, browser, example, cohort_summary,
                                                   tmp_path):
    from selenium.webdriver.common.by import By

    _, subject, at = example
    open_page(browser, f"{server}/?subject={subject}", tmp_path / "search.png")
    visits = {a.text: a.get_attribute("href")
              for a in browser.find_elements(By.CSS_SELECTOR, "#visits a")}
    assert "report_pages_few" in browser.find_element(By.ID, "cohorts").text

    asked = max(day for day in visits if day <= at[:10])  # the visit the demo's query reads
    open_page(browser, visits[asked], tmp_path / "report.png")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Twin report: patient ")
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    assert len(charts) == 6
    for chart in charts:  # drawn: laid out at a size, with marks in it
        box = browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                                     "return [r.width, r.height];", chart)
        assert box[0] > 100 and box[1] > 100, box
        assert len(chart.find_elements(By.CSS_SELECTOR, "path")) > 10
    suppressed = [row for row in browser.find_elements(By.CSS_SELECTOR, "#response-table tr")
                  if "suppressed" in row.text]
    assert suppressed, "with 20 as the minimum cell size some drug class is suppressed"
    for row in suppressed:
        assert f"suppressed (fewer than {MIN_CELL})" in row.text and "0%" not in row.text
    assert browser.find_element(By.ID, "summary").text.count("\n") >= 2

    open_page(browser, f"{server}/cohorts/report_pages_few", tmp_path / "cohort.png")
    counts = [cohort_summary["judged"], cohort_summary["selected"],
              *cohort_summary["failing"].values(),
              *(r["patients"] for r in cohort_summary["by_sex_and_age"])]
    shown = browser.find_elements(By.CSS_SELECTOR, ".count")
    hidden = browser.find_elements(By.CSS_SELECTOR, ".suppressed")
    assert cohort_summary["selected"] is None  # men with DAS28 > 6.5: fewer than 20
    assert len(hidden) == sum(n is None for n in counts) > 0
    assert all(e.text == f"suppressed (fewer than {MIN_CELL})" for e in hidden)
    assert {f"{n:,}" for n in counts if n is not None} <= {e.text for e in shown}
    for name in ("search", "report", "cohort"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
