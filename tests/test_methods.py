"""The catalogue of methods: options, formats and date forms defined once (inbox_poller.methods)."""

from __future__ import annotations

import pytest

from inbox_poller.methods import (
    METHODS,
    build_details,
    canonical,
    make_request,
    parse_options,
    request_options,
    target,
)
from inbox_poller.models import CONTACT_DATA_METHOD, ExportRequest

NOTIFY = {"type": "email", "value": "box@example.com"}


def test_the_headline_method_sends_what_it_always_sent() -> None:
    request = make_request(CONTACT_DATA_METHOD, {"stat": 4711}, None, "20250101", "20250102")
    assert request == ExportRequest("4711", "20250101", "20250102")
    assert build_details(request, "box@example.com") == {
        "stat": "4711",
        "startdate": "20250101",
        "enddate": "20250102",
        "notify": NOTIFY,
    }


def test_stats_dates_are_zulu_and_the_end_is_the_windows_last_second() -> None:
    request = make_request("GetNewsletterStatsAsync", {"list": "12"}, "xml", "20250813", "20250814")
    assert build_details(request, "box@example.com") == {
        "listid": 12,
        "startdate": "2025-08-13T00:00:00Z",
        "enddate": "2025-08-13T23:59:59Z",
        "format": "xml",
        "notify": NOTIFY,
    }


def test_unused_optional_elements_are_left_out_never_sent_empty() -> None:
    request = make_request("GetSegmentSubscribersAsync", {"segment": ["7"]})
    assert build_details(request, "box@example.com") == {"segmentid": ["7"], "notify": NOTIFY}
    flagged = make_request("GetTagSubscribersAsync", {"tag": 9, "include_membership": False})
    assert "include_membership" not in build_details(flagged, "box@example.com")


def test_list_subscribers_send_every_filter_in_its_documented_form() -> None:
    request = make_request(
        "GetListSubscribersAsync",
        {"list": [3, "5"], "status": "Active", "include_membership": True, "custom_fields": "all"},
        None,
        "20250101",
        "20250201",
    )
    assert build_details(request, "b@example.com") == {
        "list": ["3", "5"],
        "status": "active",
        "include_membership": True,
        "customfields": ["all"],
        "startdate": "20250101",
        "enddate": "20250201",
        "notify": {"type": "email", "value": "b@example.com"},
    }
    assert request_options(request)["list"] == ["3", "5"]


@pytest.mark.parametrize(
    ("name", "options", "fmt", "message"),
    [
        ("GetSegmentSubscribersAsync", {"segment": [7]}, "xml", "does not take format 'xml'"),
        (CONTACT_DATA_METHOD, {"stat": "1"}, "csv", "does not take format 'csv'"),
        ("GetListSubscribersAsync", {"list": [1]}, "csv", "allows json"),
        ("GetListSubscribersAsync", {"segment": [1], "list": [2]}, None, "takes no 'segment'"),
        ("GetListSubscribersAsync", {}, None, "needs 'list'"),
        ("GetListSubscribersAsync", {"list": []}, None, "at least one ID"),
        ("GetListSubscribersAsync", {"list": ["1", "1"]}, None, "listed twice"),
        ("GetListSubscribersAsync", {"list": ["x"]}, None, "'x' is not an ID"),
        ("GetNewsletterStatsAsync", {"list": ["1", "2"]}, None, "expected one ID"),
        ("GetTagSubscribersAsync", {"tag": [1], "status": "gone"}, None, "expected one of any"),
        ("GetTagSubscribersAsync", {"tag": [1], "include_membership": "yes"}, None, "true or"),
        ("GetTagSubscribersAsync", {"tag": [1], "custom_fields": "a,b"}, None, "not an ID"),
        ("GetNoSuchAsync", {}, None, "unknown method"),
    ],
)
def test_a_wrong_option_or_format_is_refused_naming_it(
    name: str, options: dict[str, object], fmt: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(name, options, fmt)


def test_a_method_without_dates_refuses_them() -> None:
    with pytest.raises(ValueError, match="takes no dates"):
        make_request("GetSegmentSubscribersAsync", {"segment": [7]}, None, "20250101", "20250102")


def test_options_are_canonical_so_equal_requests_compare_equal() -> None:
    one = make_request("GetListSubscribersAsync", {"status": "active", "list": [3]})
    two = make_request("GetListSubscribersAsync", {"list": ["3"], "status": "ACTIVE"})
    assert one == two
    assert one.options == canonical({"list": ["3"], "status": "active"})


def test_targets_name_the_export_safely() -> None:
    assert target(ExportRequest("4711")) == "stat-4711"
    many = make_request("GetListSubscribersAsync", {"list": [1, 2, 3, 4, 5, 6]})
    assert target(many) == "list-1+2+3+4+more"
    assert target(make_request("GetTagSubscribersAsync", {"tag": 9})) == "tag-9"


def test_every_method_documents_json_and_its_date_form() -> None:
    for method in METHODS.values():
        assert "json" in method.formats
        assert method.target.required
    assert METHODS["GetTagSubscribersAsync"].inferred
