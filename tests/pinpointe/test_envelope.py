"""The Pinpointe envelope, pure: every answer shape decoded and judged, every request built."""

from __future__ import annotations

import json

import pytest

from inbox_poller.errors import ApiAuthError, ApiError, ApiUnavailable
from inbox_poller.models import ExportRequest
from inbox_poller.pinpointe.answers import extract_job_id
from inbox_poller.pinpointe.envelope import (
    build_envelope,
    check_reply,
    decode_reply,
    excerpt,
    redact,
    submit_details,
)
from tests.pinpointe.samples import HTML_502

CANARY = "tok-CANARY-5d1e9a7c3b"


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def _submit_ok(data: object) -> bytes:
    return _body({"status": "SUCCESS", "data": data})


# ---- success shapes -------------------------------------------------------------------------

SUCCESS_CASES: list[tuple[str, int, str, bytes, str]] = [
    ("bare string", 200, "application/json", _submit_ok("123456789"), "123456789"),
    ("bare number", 200, "application/json", _submit_ok(123456789), "123456789"),
    ("integral float", 200, "application/json", _submit_ok(42.0), "42"),
    ("jobid", 200, "application/json", _submit_ok({"jobid": "77", "elapsed": "0.1"}), "77"),
    ("jobId number", 200, "application/json", _submit_ok({"jobId": 78}), "78"),
    ("job_id", 200, "application/json", _submit_ok({"job_id": "abc-79"}), "abc-79"),
    ("JobID", 200, "application/json", _submit_ok({"JobID": "80"}), "80"),
    ("id", 200, "application/json", _submit_ok({"id": "81", "timestamp": "x"}), "81"),
    ("jobid beats id", 200, "application/json", _submit_ok({"id": "1", "JOBID": "82"}), "82"),
    ("item list", 200, "application/json", _submit_ok({"item": [{"jobid": "83"}]}), "83"),
    ("nested object", 200, "application/json", _submit_ok({"result": {"Job-Id": 84}}), "84"),
    ("list of one", 200, "application/json", _submit_ok(["85"]), "85"),
    ("padded string", 200, "application/json", _submit_ok("  86 "), "86"),
    (
        "lower-case status",
        200,
        "application/json",
        _body({"status": "success", "data": "87"}),
        "87",
    ),
    ("JSON sent as HTML", 200, "text/html; charset=UTF-8", _submit_ok("88"), "88"),
    ("byte order mark", 200, "application/json", b"\xef\xbb\xbf" + _submit_ok("89"), "89"),
    ("HTTP 201", 201, "application/json", _submit_ok({"jobid": "90"}), "90"),
]


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected"),
    [case[1:] for case in SUCCESS_CASES],
    ids=[case[0] for case in SUCCESS_CASES],
)
def test_every_success_shape_yields_the_job_id_as_a_string(
    status: int, content_type: str, body: bytes, expected: str
) -> None:
    assert extract_job_id(check_reply(decode_reply(status, content_type, body))) == expected


# ---- failure shapes -------------------------------------------------------------------------

FAILURE_CASES: list[tuple[str, int, str, bytes, type[ApiError], bool, tuple[str, ...]]] = [
    (
        "400 FAILED",
        400,
        "application/json",
        _body({"status": "FAILED", "errormessage": "Invalid stat"}),
        ApiError,
        True,
        ("HTTP 400", "FAILED", "Invalid stat"),
    ),
    (
        "legacy 200 FAILED",
        200,
        "application/json",
        _body({"status": "FAILED", "errormessage": "no access to lists"}),
        ApiError,
        True,
        ("no access to lists",),
    ),
    (
        "ERROR with a list",
        200,
        "application/json",
        _body({"status": "ERROR", "errormessage": ["first problem", "second problem"]}),
        ApiError,
        True,
        ("ERROR", "first problem; second problem"),
    ),
    (
        "errordetail joined",
        400,
        "application/json",
        _body({"status": "FAILED", "errormessage": "system error", "errordetail": "db down"}),
        ApiError,
        True,
        ("system error; db down",),
    ),
    (
        "401 FAILED",
        401,
        "application/json",
        _body({"status": "FAILED", "errormessage": "Unable to verify user credentials"}),
        ApiAuthError,
        True,
        ("HTTP 401", "credentials"),
    ),
    (
        "legacy 200 auth failure",
        200,
        "application/json",
        _body({"status": "FAILED", "errormessage": ["Unable to verify user credentials."]}),
        ApiAuthError,
        True,
        ("credentials",),
    ),
    (
        "401 HTML",
        401,
        "text/html",
        b"<h1>Unauthorized</h1>",
        ApiAuthError,
        True,
        ("HTTP 401", "Unauthorized"),
    ),
    (
        "400 plain text",
        400,
        "text/plain",
        b"Bad Request",
        ApiError,
        True,
        ("HTTP 400", "Bad Request"),
    ),
    (
        "429 JSON",
        429,
        "application/json",
        _body({"status": "FAILED", "errormessage": "slow down"}),
        ApiUnavailable,
        True,
        ("HTTP 429",),
    ),
    (
        "500 FAILED",
        500,
        "application/json",
        _body({"status": "FAILED", "errormessage": "system error"}),
        ApiError,
        False,
        ("HTTP 500", "system error", "may have been processed"),
    ),
    (
        "502 HTML page",
        502,
        "text/html",
        HTML_502,
        ApiError,
        False,
        ("HTTP 502", "502 Bad Gateway", "text/html", "may have been processed"),
    ),
    (
        "200 HTML page",
        200,
        "text/html",
        b"<html><body>Maintenance</body></html>",
        ApiError,
        False,
        ("HTTP 200", "Maintenance"),
    ),
    ("200 empty body", 200, "", b"", ApiError, False, ("an empty body", "no content type")),
    (
        "200 JSON array",
        200,
        "application/json",
        b'["SUCCESS"]',
        ApiError,
        False,
        ("not a JSON envelope",),
    ),
    (
        "200 odd status",
        200,
        "application/json",
        _body({"status": "QUEUED", "data": "5"}),
        ApiError,
        False,
        ("QUEUED", "may have been processed"),
    ),
    (
        "200 no status",
        200,
        "application/json",
        _body({"data": "5"}),
        ApiError,
        False,
        ("no status",),
    ),
    (
        "302 redirect",
        302,
        "text/html",
        b"<a href='https://elsewhere/'>moved</a>",
        ApiError,
        False,
        ("HTTP 302", "api_url"),
    ),
    (
        "SUCCESS outside 2xx",
        500,
        "application/json",
        _submit_ok("5"),
        ApiError,
        False,
        ("HTTP 500",),
    ),
]


@pytest.mark.parametrize(
    ("status", "content_type", "body", "kind", "definitive", "phrases"),
    [case[1:] for case in FAILURE_CASES],
    ids=[case[0] for case in FAILURE_CASES],
)
def test_every_failure_shape_is_a_clear_error_with_the_right_certainty(
    status: int,
    content_type: str,
    body: bytes,
    kind: type[ApiError],
    definitive: bool,
    phrases: tuple[str, ...],
) -> None:
    with pytest.raises(ApiError) as caught:
        check_reply(decode_reply(status, content_type, body))
    assert type(caught.value) is kind
    assert caught.value.definitive is definitive
    assert caught.value.status == status
    for phrase in phrases:
        assert phrase in str(caught.value)
    assert "<" not in str(caught.value)  # tags stripped from excerpts


UNUSABLE_DATA: list[tuple[str, object, str]] = [
    ("no data", None, "without a recognisable job ID"),
    ("boolean", True, "without a recognisable job ID"),
    ("only elapsed", {"elapsed": "0.2", "timestamp": "2025-01-01"}, "recognisable"),
    ("empty string", "", "recognisable"),
    ("path-like", "../../etc/passwd", "unusable job ID"),
    ("spaces", "Job queued", "unusable job ID"),
    ("several", {"item": [{"jobid": "1"}, {"jobid": "2"}]}, "several job IDs"),
    ("too long", "9" * 80, "unusable job ID"),
]


@pytest.mark.parametrize(
    ("data", "phrase"), [c[1:] for c in UNUSABLE_DATA], ids=[c[0] for c in UNUSABLE_DATA]
)
def test_success_without_a_usable_job_id_is_not_definitive(data: object, phrase: str) -> None:
    with pytest.raises(ApiError) as caught:
        extract_job_id(data)
    assert caught.value.definitive is False
    assert phrase in str(caught.value)
    assert "may exist" in str(caught.value)


def test_a_long_unreadable_body_is_quoted_only_briefly() -> None:
    with pytest.raises(ApiError) as caught:
        check_reply(decode_reply(503, "text/html", b"<p>" + b"overloaded " * 5000 + b"</p>"))
    assert len(str(caught.value)) < 400
    assert "overloaded" in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        f"<html>request was {{'usertoken': '{CANARY}'}}</html>".encode(),
        _body({"status": "FAILED", "errormessage": f"bad token {CANARY}"}),
        _body({"status": "FAILED", "errormessage": [f"echo: {CANARY}"], "token": CANARY}),
        _body({"status": "SUCCESS", "data": {"usertoken": CANARY}}),
    ],
    ids=["html echo", "message", "list", "success echo"],
)
def test_an_echoed_token_is_redacted_from_every_message(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        extract_job_id(check_reply(decode_reply(400, "text/html", body, secrets=[CANARY])))
    assert CANARY not in str(caught.value)
    with pytest.raises(ApiError) as caught:
        extract_job_id(check_reply(decode_reply(200, "application/json", body, secrets=[CANARY])))
    assert CANARY not in str(caught.value)


def test_redact_replaces_plain_and_json_escaped_secrets_but_not_tiny_ones() -> None:
    assert redact("a s3/cr3t b", ["s3/cr3t"]) == "a *** b"
    assert redact('{"t": "s3\\/cr3t"}', ["s3/cr3t"]) == '{"t": "***"}'
    assert redact("abc", ["b"]) == "abc"


def test_excerpt_flattens_html_and_whitespace() -> None:
    assert excerpt("<p>a\n\n  b</p><script>var x;</script>") == "a b"


# ---- request building -----------------------------------------------------------------------


def test_submit_details_omit_unused_dates_and_send_strings() -> None:
    details = submit_details(ExportRequest(stat="42"), "box@example.com")
    assert details == {"stat": "42", "notify": {"type": "email", "value": "box@example.com"}}
    dated = submit_details(ExportRequest("42", "20250101", "20250102"), "box@example.com")
    assert dated["startdate"] == "20250101"
    assert dated["enddate"] == "20250102"


@pytest.mark.parametrize(
    "request_",
    [
        ExportRequest(stat="4 2"),
        ExportRequest(stat=""),
        ExportRequest(stat="42", startdate="2025-01-01"),
        ExportRequest(stat="42", enddate="20250230"),
        ExportRequest(stat="42", startdate=""),
    ],
    ids=["stat with space", "empty stat", "dashed date", "no such day", "empty date"],
)
def test_bad_requests_are_refused_before_anything_is_sent(request_: ExportRequest) -> None:
    with pytest.raises(ApiError, match="nothing was sent") as caught:
        submit_details(request_, "box@example.com")
    assert caught.value.definitive is True


def test_envelope_has_exactly_the_documented_fields() -> None:
    envelope = build_envelope("user", "tok", "API", "AsyncJobStatus", {})
    assert list(envelope) == ["username", "usertoken", "requesttype", "requestmethod", "details"]
