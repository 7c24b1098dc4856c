"""Who sees individuals, and small cells: what a twin report may show."""

import json

from hypothesis import given
from hypothesis import strategies as st

from ray_training.disclosure import disclosed_forecast, disclosed_report, is_small
from ray_training.forecasts import Forecast, wilson_interval
from ray_training.twin import format_report
from rdt_spark.pseudonyms import PrivacyConfig, PseudonymKey, pseudonym

KEY = PseudonymKey(b"0123456789abcdef", "test")
SOURCE_IDS = [424242, 515151, 626262]


def forecast_dict(usable: int, events: int, neighbours: int = 50, m: int = 10) -> dict:
    if usable < m:
        return vars(Forecast("flare", neighbours, usable, None, None, None, None, True, "small"))
    low, high = wilson_interval(events, usable)
    return vars(Forecast("flare", neighbours, usable, events, events / usable, low, high, False,
                         "share"))


def report(usable: int = 43, events: int = 3) -> dict:
    flare = forecast_dict(usable, events)
    return {"subject_id": SOURCE_IDS[0], "requested_time": "2020-01-01T00:00:00+00:00",
            "prediction_time": "2019-12-31T00:00:00+00:00", "model_version": "events-1",
            "index_version": "idx-1", "k": 50, "filters": "",
            "neighbours": [{"subject_id": s, "prediction_time": "2018-01-01T00:00:00+00:00",
                            "similarity": 0.9, "outcomes": {"flare": True}}
                           for s in SOURCE_IDS[1:]],
            "neighbours_found": len(SOURCE_IDS) - 1,
            "events": [flare],
            "time_to_event": {"neighbours": 43, "events": 38, "median_days": 90.0,
                              "low_days": 60.0, "high_days": 120.0, "suppressed": False,
                              "note": "km", "curve": [
                                  {"month": 6, "days": 182.6, "at_risk": 12, "survival": 0.3,
                                   "low": 0.2, "high": 0.4},
                                  {"month": 12, "days": 365.2, "at_risk": 4, "survival": None,
                                   "low": None, "high": None}]},
            "treatment_response": [{"task": "eular_response_6m/methotrexate",
                                    "drug_class": "methotrexate", "usable": 43,
                                    "responded": flare, "suppressed": False, "note": "",
                                    "categories": {c: forecast_dict(usable, events)
                                                   for c in ("good", "moderate", "none")}}],
            "course": [{"measure": "das28", "month": 6, "usable": 7, "median": 3.1, "q25": 2.5,
                        "q75": 4.0, "suppressed": True}]}


def test_reports_show_aggregates_only_unless_the_config_grants_neighbour_rows():
    shown = disclosed_report(report(), PrivacyConfig(), KEY, 10)
    assert shown["neighbours"] is None and "privacy.neighbour_rows" in shown["neighbours_note"]
    assert shown["events"][0]["usable"] == 43 and shown["neighbours_found"] == "<10"
    assert shown["time_to_event"]["events"] == ">33"  # 5 without a flare: a small cell
    assert [p["at_risk"] for p in shown["time_to_event"]["curve"]] == [12, "<10"]
    assert shown["treatment_response"][0]["responded"]["events"] == "<10"
    assert shown["course"][0]["usable"] == "<10" and shown["course"][0]["median"] is None
    granted = disclosed_report(report(), PrivacyConfig(neighbour_rows=True), KEY, 10)
    assert [n["patient"] for n in granted["neighbours"]] == [pseudonym(s, KEY)
                                                             for s in SOURCE_IDS[1:]]
    for disclosed in (shown, granted):
        assert disclosed["patient"] == pseudonym(SOURCE_IDS[0], KEY)
        text = json.dumps(disclosed) + format_report(disclosed)
        assert not [s for s in SOURCE_IDS if str(s) in text]
        assert "subject_id" not in text


def test_a_suppressed_forecast_hides_its_small_usable_count_too():
    f = disclosed_forecast(forecast_dict(usable=7, events=2), 10)
    assert f["suppressed"] and f["usable"] == "<10" and f["events"] is None and f["share"] is None
    assert "7" not in json.dumps(f)


def test_small_event_counts_inside_a_shown_forecast_become_bounds():
    few = disclosed_forecast(forecast_dict(usable=43, events=3), 10)
    assert few["events"] == "<10" and few["share"] is None and not few["suppressed"]
    assert few["ci_low"] <= wilson_interval(1, 43)[0] and few["ci_high"] >= wilson_interval(9, 43)[1]
    most = disclosed_forecast(forecast_dict(usable=43, events=38), 10)
    assert most["events"] == ">33" and most["share"] is None  # 5 without the event
    plain = disclosed_forecast(forecast_dict(usable=43, events=20), 10)
    assert plain == forecast_dict(usable=43, events=20)
    assert "<10" in format_report(disclosed_report(report(43, 3), PrivacyConfig(), KEY, 10))


@given(usable=st.integers(0, 60), data=st.data(), m=st.integers(2, 15))
def test_a_disclosed_forecast_is_the_same_for_every_count_it_does_not_rule_out(usable, data, m):
    events = data.draw(st.integers(0, usable))
    shown = disclosed_forecast(forecast_dict(usable, events, m=m), m)
    numbers = [v for k, v in shown.items() if k in ("neighbours", "usable", "events")]
    assert not [n for n in numbers if isinstance(n, int) and is_small(n, m)]
    if shown["events"] is None or isinstance(shown["events"], int):
        return
    # Whatever the published facts allow, publishing it would have given the same output.
    for other in range(usable + 1):
        if (is_small(other, m), is_small(usable - other, m)) == (
                is_small(events, m), is_small(usable - events, m)):
            assert disclosed_forecast(forecast_dict(usable, other, m=m), m) == shown
