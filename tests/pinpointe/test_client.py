"""The Pinpointe client over real HTTPS against the simulator: calls, failures, secrecy."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import pytest

from inbox_poller.errors import ApiAuthError, ApiError, ApiUnavailable
from inbox_poller.methods import make_request
from inbox_poller.models import ExportRequest
from inbox_poller.pinpointe.client import PinpointeApi
from inbox_poller.ports import JOB_NOT_FOUND
from inbox_poller.sandbox.simulator.calls import ApiFault
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.pinpointe.samples import HTML_502
from tests.plugins.pinpointe import SIM_NOTIFY_EMAIL, pinpointe_sim_config

CANARY = "tok-CANARY-5d1e9a7c3b"


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def _submit_ok(data: object) -> bytes:
    return _body({"status": "SUCCESS", "data": data})


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
    # issue 12: an unknown method is refused before sending (methods.py); the server's
    # refusal is now that of a list the account does not have
    api = _api(pinpointe_sim)
    with pytest.raises(ApiError) as caught:
        api.submit(make_request("GetNewsletterStatsAsync", {"list": "999999"}))
    assert caught.value.status == 400
    assert caught.value.definitive is True
    assert "invalid argument list id" in str(caught.value)


def test_an_unknown_method_is_refused_before_anything_is_sent(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    api = _api(pinpointe_sim)
    with pytest.raises(ApiError) as caught:
        api.submit(ExportRequest(stat="42", method="GetNoSuchThingAsync"))
    assert caught.value.definitive is True
    assert "unknown method 'GetNoSuchThingAsync'" in str(caught.value)
    assert pinpointe_sim.api_calls == []


@pytest.mark.parametrize(
    ("method", "options", "fmt", "details"),
    [
        (
            "GetNewsletterStatsAsync",
            {"list": "12"},
            "csv",
            {"listid": 12, "format": "csv", "startdate": "2026-11-01T00:00:00Z",
             "enddate": "2026-11-01T23:59:59Z"},
        ),
        (
            "GetListSubscribersAsync",
            {"list": ["3", "5"], "status": "active", "custom_fields": "all"},
            None,
            {"list": ["3", "5"], "status": "active", "customfields": ["all"],
             "startdate": "20261101", "enddate": "20261102"},
        ),
        (
            "GetSegmentSubscribersAsync",
            {"segment": [7], "include_membership": True},
            "csv",
            {"segmentid": ["7"], "include_membership": True, "format": "csv"},
        ),
        ("GetTagSubscribersAsync", {"tag": "9", "custom_fields": "1,2"}, None,
         {"tagid": ["9"], "customfields": ["1", "2"]}),
    ],
)  # fmt: skip
def test_every_method_is_accepted_by_the_simulator_with_its_documented_fields(
    pinpointe_sim: PinpointeSimulator,
    method: str,
    options: dict[str, object],
    fmt: str | None,
    details: dict[str, object],
) -> None:
    api = _api(pinpointe_sim)
    dated = "startdate" in details
    start, end = ("20261101", "20261102") if dated else (None, None)
    job_id = api.submit(make_request(method, options, fmt, start, end))
    call = pinpointe_sim.api_calls[-1]
    assert call.requestmethod == method
    sent = dict(call.details or {})
    assert sent.pop("notify") == {"type": "email", "value": "exports@inbox.example"}
    assert sent == details
    assert pinpointe_sim.job(job_id).format == (fmt or "json")


def test_newsletters_sent_reads_every_page(pinpointe_sim: PinpointeSimulator) -> None:
    now = int(time.time())
    pinpointe_sim.sends = [
        {"newsletterid": str(n), "name": f"news {n}", "statid": str(7000 + n),
         "starttime": str(now - n * 3600)}
        for n in range(1, 1203)
    ] + [{"newsletterid": "1", "name": "old", "statid": "1", "starttime": str(now - 9 * 86400)},
         {"newsletterid": "2", "name": "draft", "statid": "0", "starttime": str(now)}]  # fmt: skip
    sends = _api(pinpointe_sim).newsletters_sent(7)
    # the last 7 days only: older sends and sends without a stat ID are left out
    assert [send.statid for send in sends] == [str(7000 + n) for n in range(1, 168)]
    assert pinpointe_sim.sent_calls == 1
    # more than a page (SEND_PAGE_LIMIT = 500): every page is read
    pinpointe_sim.sends = [{"statid": str(8000 + n), "starttime": str(now)} for n in range(1201)]
    assert len(_api(pinpointe_sim).newsletters_sent(1)) == 1201
    assert pinpointe_sim.sent_calls == 1 + 3


def test_every_call_goes_on_a_fresh_connection(
    pinpointe_sim: PinpointeSimulator, pinpointe_sim_api: PinpointeApi
) -> None:
    # the simulator closes each connection after its answer, as the client asks, without
    # saying so in the answer (RFC 9112 allows it): a connection kept open in the pool
    # would be taken for the next call while it closes, and that submit would end "may
    # have been processed"
    calls = 60
    for _ in range(calls):
        pinpointe_sim_api.submit(ExportRequest(stat="42"))
    peers = [call.peer for call in pinpointe_sim.api_calls]
    assert len(peers) == calls
    assert len(set(peers)) == calls


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
