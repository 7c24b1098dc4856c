import numpy as np
import pytest

from ray_training import forecasts as fc


def test_wilson_interval_matches_known_values():
    low, high = fc.wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert fc.wilson_interval(0, 20)[0] == 0.0


def test_share_is_suppressed_below_the_minimum_cell_size_with_no_counts():
    f = fc.share("flare", np.array([True] * 9), 10)
    assert f.suppressed and f.share is None and f.events is None and f.usable == 9


def test_share_counts_events_among_usable_neighbours():
    f = fc.share("flare", np.array([True] * 6 + [False] * 6), 10)
    assert not f.suppressed and (f.usable, f.events, f.share) == (12, 6, 0.5)
    assert f.ci_low < 0.5 < f.ci_high


def test_kaplan_meier_without_censoring_is_the_empirical_survival():
    days = np.arange(1, 21) * 30.0  # one event a month, 20 neighbours, nobody censored
    t = fc.time_to_event(days, np.full(20, 9999.0), [3, 6, 12], 10)
    assert t.events == 20 and t.median_days == pytest.approx(300.0)  # S drops to 0.5 at day 300
    three = t.curve[0]
    assert three.at_risk == 17 and three.survival == pytest.approx(0.85)  # 3 events by day 91
    assert t.low_days < t.median_days < t.high_days


def test_kaplan_meier_counts_censored_neighbours_as_at_risk_until_they_leave():
    events = np.array([np.nan] * 10 + [100.0] * 10)
    follow_up = np.array([50.0] * 10 + [2000.0] * 10)  # ten leave at day 50 without an event
    t = fc.time_to_event(events, follow_up, [1, 6], 10)
    # Half the cohort was censored early: all 10 still at risk at day 100 have the event.
    assert t.median_days == pytest.approx(100.0)
    assert t.curve[0].at_risk == 20 and t.curve[1].survival is None  # 0 at risk: not shown


def test_time_to_event_is_suppressed_with_too_few_neighbours():
    t = fc.time_to_event(np.array([10.0] * 5), np.array([20.0] * 5), [3], 10)
    assert t.suppressed and t.median_days is None and t.curve == []


def test_response_shares_cover_each_eular_category():
    categories = np.array(["good"] * 5 + ["moderate"] * 5 + ["none"] * 10, dtype=object)
    r = fc.response("eular/tnf", "tnf", np.isin(categories, ["good", "moderate"]), categories,
                    10, "matched")
    assert not r.suppressed and r.responded.share == 0.5
    assert r.categories["none"].share == 0.5
    assert r.categories["good"].share == 0.25 and r.categories["good"].usable == 20
    few = fc.response("eular/tnf", "tnf", np.array([True] * 9), np.array(["good"] * 9), 10, "")
    assert few.suppressed and all(c.suppressed for c in few.categories.values())


def test_course_reports_median_and_interquartile_range_of_known_values():
    c = fc.course("das28", 6, np.array([1.0, 2.0, 3.0, 4.0, 5.0] * 2 + [np.nan] * 3), 10)
    assert not c.suppressed and c.usable == 10 and c.median == 3.0
    assert (c.q25, c.q75) == (2.0, 4.0)
    assert fc.course("das28", 6, np.array([1.0] * 9 + [np.nan]), 10).suppressed
