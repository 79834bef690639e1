"""The Pinpointe client: pure parsing of every answer shape, then real HTTPS calls."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from inbox_poller.errors import ApiAuthError, ApiError, ApiUnavailable
from inbox_poller.models import ExportRequest
from inbox_poller.net import parse_retry_after
from inbox_poller.pinpointe.answers import describe_account, extract_job_id, parse_job_statuses
from inbox_poller.pinpointe.client import PinpointeApi
from inbox_poller.pinpointe.envelope import (
    build_envelope,
    check_reply,
    decode_reply,
    excerpt,
    redact,
    submit_details,
)
from inbox_poller.ports import JOB_NOT_FOUND
from inbox_poller.sandbox.simulator.calls import ApiFault
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.plugins.pinpointe import SIM_NOTIFY_EMAIL, pinpointe_sim_config

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

HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title><style>body{color:red}</style></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)

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


# ---- other parsers --------------------------------------------------------------------------

STATUS_CASES: list[tuple[str, object, list[str], dict[str, str]]] = [
    (
        "item list",
        {"item": [{"jobid": "1", "status": "Waiting"}, {"jobid": "2", "status": "FAILED"}]},
        ["1", "2", "3"],
        {"1": "waiting", "2": "failed", "3": JOB_NOT_FOUND},
    ),
    ("bare list", [{"JobId": 5, "JobStatus": "complete"}], ["5"], {"5": "complete"}),
    ("single unlabelled", {"status": "processing"}, ["9"], {"9": "processing"}),
    (
        "mapping",
        {"7": "waiting", "8": {"status": "done"}},
        ["7", "8"],
        {"7": "waiting", "8": "done"},
    ),
    ("listing all", {"item": [{"id": "4", "state": "Queued"}]}, [], {"4": "queued"}),
]


@pytest.mark.parametrize(
    ("data", "job_ids", "expected"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_job_statuses_are_read_from_every_plausible_shape(
    data: object, job_ids: list[str], expected: dict[str, str]
) -> None:
    assert parse_job_statuses(data, job_ids) == expected


@pytest.mark.parametrize("data", [None, {}, {"item": []}, "waiting", [{"foo": "bar"}]])
def test_an_unreadable_status_answer_is_an_error_not_all_jobs_missing(data: object) -> None:
    with pytest.raises(ApiError) as caught:
        parse_job_statuses(data, ["1", "2"])
    assert caught.value.definitive is False


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"userid": "12", "username": "acme"}, "authenticated as acme (user id 12)"),
        ({"user_id": 12, "name": "acme"}, "authenticated as acme (user id 12)"),
        ({"item": [{"UserID": "3", "UserName": "x"}]}, "authenticated as x (user id 3)"),
        ("ok", "authenticated"),
        (None, "authenticated"),
    ],
)
def test_account_description(data: object, expected: str) -> None:
    assert describe_account(data) == expected


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now) == 60.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# ---- real calls against the simulator -------------------------------------------------------


def _api(sim: PinpointeSimulator, token: str | None = None, **config: Any) -> PinpointeApi:
    return PinpointeApi(
        pinpointe_sim_config(sim, **config), token or sim.token, ca_file=sim.ca_file
    )


def test_submit_posts_the_documented_envelope_and_returns_the_job_id(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi
) -> None:
    job_id = pinpointe_sim_api.submit(ExportRequest(stat="42"))
    assert job_id in pinpointe_sim.jobs
    [call] = pinpointe_sim.api_calls
    assert call.content_type == "application/json"
    assert (call.requesttype, call.requestmethod) == (
        "Newsletters",
        "GetNewsletterContactDataSummaryAsync",
    )
    # dates omitted (not sent empty) when the request has none; stat sent as a string
    assert call.details == {"stat": "42", "notify": {"type": "email", "value": SIM_NOTIFY_EMAIL}}
    assert pinpointe_sim_api.last_response is not None
    assert job_id in pinpointe_sim_api.last_response


def test_submit_sends_dates_when_given(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi
) -> None:
    job_id = pinpointe_sim_api.submit(ExportRequest("42", "20250101", "20250102"))
    job = pinpointe_sim.job(job_id)
    assert (job.startdate, job.enddate) == ("20250101", "20250102")


@pytest.mark.parametrize("shape", ["object", "string", "number"])
def test_submit_reads_each_simulated_response_shape(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi, shape: Any
) -> None:
    pinpointe_sim.submit_shape = shape
    job_id = pinpointe_sim_api.submit(ExportRequest(stat="7"))
    assert list(pinpointe_sim.jobs) == [job_id]


def test_check_describes_the_account(pinpointe_sim_api: PinpointeApi) -> None:
    assert pinpointe_sim_api.check() == "authenticated as sim-user (user id 4711)"


def test_a_wrong_token_is_an_auth_error(pinpointe_sim: PinpointeSimulator) -> None:
    api = _api(pinpointe_sim, token=CANARY)
    with pytest.raises(ApiAuthError) as caught:
        api.submit(ExportRequest(stat="42"))
    assert caught.value.status == 401
    assert caught.value.definitive is True
    assert CANARY not in str(caught.value)
    with pytest.raises(ApiAuthError):
        api.check()
    assert pinpointe_sim.jobs == {}


def test_a_refusal_is_definitive(pinpointe_sim: PinpointeSimulator) -> None:
    api = _api(pinpointe_sim)
    with pytest.raises(ApiError) as caught:
        api.submit(ExportRequest(stat="42", method="GetNoSuchThingAsync"))
    assert caught.value.status == 400
    assert caught.value.definitive is True
    assert "Unknown requesttype or requestmethod" in str(caught.value)


def test_a_connection_closed_after_the_request_is_unknown_and_not_retried(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi
) -> None:
    pinpointe_sim.queue_api_fault(ApiFault(close=True))
    with pytest.raises(ApiError) as caught:
        pinpointe_sim_api.submit(ExportRequest(stat="42"))
    assert caught.value.definitive is False
    assert "may have been processed" in str(caught.value)
    assert len(pinpointe_sim.api_calls) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_page_is_unknown_and_not_retried(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi, status: int
) -> None:
    pinpointe_sim.queue_api_fault(ApiFault(status=status, body=HTML_502, content_type="text/html"))
    with pytest.raises(ApiError) as caught:
        pinpointe_sim_api.submit(ExportRequest(stat="42"))
    assert caught.value.definitive is False
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert "502 Bad Gateway" in str(caught.value)
    assert len(pinpointe_sim.api_calls) == 1


def test_a_slow_answer_times_out_as_unknown_and_is_not_retried(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    # 1 s, not less: the TLS handshake runs under the connect timeout, min(10, timeout_s)
    api = _api(pinpointe_sim, timeout_s=1.0)
    pinpointe_sim.queue_api_fault(ApiFault(delay_s=30.0))  # stop() cuts the delay short
    with pytest.raises(ApiError) as caught:
        api.submit(ExportRequest(stat="42"))
    assert caught.value.definitive is False
    assert "no answer" in str(caught.value)
    assert len(pinpointe_sim.api_calls) == 1


def test_an_oversized_answer_is_refused(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi
) -> None:
    pinpointe_sim.queue_api_fault(ApiFault(body=b" " * (9 * 1024**2)))
    with pytest.raises(ApiError, match="exceeds") as caught:
        pinpointe_sim_api.submit(ExportRequest(stat="42"))
    assert caught.value.definitive is False


def test_without_the_ca_the_certificate_is_refused_before_sending(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    api = PinpointeApi(pinpointe_sim_config(pinpointe_sim), pinpointe_sim.token, ca_file=None)
    with pytest.raises(ApiError) as caught:
        api.submit(ExportRequest(stat="42"))
    assert "certificate verification failed" in str(caught.value)
    assert "pinpointe.ca_file" in str(caught.value)
    assert caught.value.definitive is True
    assert pinpointe_sim.api_calls == []


def test_a_closed_port_is_unavailable_and_retryable(pinpointe_sim: PinpointeSimulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = _api(pinpointe_sim, api_url=f"https://localhost:{port}/apijson.php")
    with pytest.raises(ApiUnavailable, match="cannot connect") as caught:
        api.submit(ExportRequest(stat="42"))
    assert caught.value.definitive is True
    assert caught.value.retryable is True


def test_rate_limiting_carries_retry_after(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi
) -> None:
    pinpointe_sim.queue_api_fault(
        ApiFault(status=429, body=b"slow down", content_type="text/plain")
    )
    with pytest.raises(ApiUnavailable) as caught:
        pinpointe_sim_api.check()
    assert caught.value.status == 429


def test_proxy_variables_and_netrc_are_ignored(
    pinpointe_sim: PinpointeSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # the suite's loopback guard fails the test if the proxy (a private address) is used
    monkeypatch.setenv("HTTPS_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine localhost login netrc-user password netrc-secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert _api(pinpointe_sim).check().startswith("authenticated")


def test_job_status_maps_known_and_unknown_jobs(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi
) -> None:
    pinpointe_sim.send_notifications = False
    job_id = pinpointe_sim_api.submit(ExportRequest(stat="42"))
    assert pinpointe_sim_api.job_status([job_id, "999"]) == {
        job_id: "waiting",
        "999": JOB_NOT_FOUND,
    }
    assert pinpointe_sim_api.job_status(["998"]) == {"998": JOB_NOT_FOUND}
    assert pinpointe_sim_api.job_status([]) == {job_id: "waiting"}
    assert pinpointe_sim.api_calls[-1].details == {}


def test_the_token_never_reaches_messages_or_logs(
    pinpointe_sim: PinpointeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    pinpointe_sim.token = CANARY
    api = _api(pinpointe_sim, token=CANARY)
    echo = json.dumps({"status": "FAILED", "errormessage": f"bad usertoken {CANARY}"}).encode()
    faults = [
        ApiFault(status=400, body=echo),
        ApiFault(
            status=502, body=f"<pre>usertoken={CANARY}</pre>".encode(), content_type="text/html"
        ),
        ApiFault(status=200, body=_submit_ok({"usertoken": CANARY})),
        ApiFault(close=True),
    ]
    messages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        assert api.check()
        api.submit(ExportRequest(stat="1"))
        for fault in faults:
            pinpointe_sim.queue_api_fault(fault)
            with pytest.raises(ApiError) as caught:
                api.submit(ExportRequest(stat="42"))
            messages.append(str(caught.value))
            messages.append(api.last_response or "")
        with pytest.raises(ApiAuthError) as auth:
            _api(pinpointe_sim, token=CANARY + "x").check()
        messages.append(str(auth.value))
    assert len(caplog.records) > 0
    assert any("answered HTTP" in record.getMessage() for record in caplog.records)
    for text in [*messages, caplog.text]:
        assert CANARY not in text
