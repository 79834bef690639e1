"""The simulator's state and controls: API strictness, job status, and mail delivery."""

from __future__ import annotations

import time

import pytest

from inbox_poller.sandbox.simulator.server import DEFAULT_USERNAME, PinpointeSimulator
from tests.sandbox.simulator.helpers import NOTIFY, api_request, parse_mail, submit_job


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not JSON"),
        (api_request(username=""), 400, "missing: username"),
        (api_request(details=[]), 400, "details must be an object"),
        (api_request(usertoken="wrong"), 401, "Unable to verify user credentials"),
        (api_request(username="other"), 401, "Unable to verify user credentials"),
        (api_request("NoSuchMethod"), 400, "Unknown requesttype"),
        (api_request(details={"stat": 42, "notify": NOTIFY}), 400, "Invalid stat"),
        (api_request(details={"notify": NOTIFY}), 400, "Invalid stat"),
        (api_request(details={"stat": "42", "startdate": "", "notify": NOTIFY}), 400, "startdate"),
        (
            api_request(details={"stat": "42", "enddate": "20250231", "notify": NOTIFY}),
            400,
            "enddate",
        ),
        (
            api_request(
                details={
                    "stat": "1",
                    "startdate": "20250301",
                    "enddate": "20250101",
                    "notify": NOTIFY,
                }
            ),
            400,
            "date range",
        ),
        (api_request(details={"stat": "42", "format": "json", "notify": NOTIFY}), 400, "format"),
        (api_request(details={"stat": "42"}), 400, "notify"),
        (
            api_request(details={"stat": "42", "notify": {"type": "webhook", "value": "x"}}),
            400,
            "email",
        ),
        (
            api_request(details={"stat": "42", "notify": {"type": "email", "value": ""}}),
            400,
            "e-mail",
        ),
        (api_request("AsyncJobStatus", requesttype="API", details={"jobids": "1"}), 400, "jobids"),
        (
            api_request("AsyncJobStatus", requesttype="API", details={"jobids": ["1"]}),
            400,
            "Jobs not",
        ),
    ],
)
def test_the_api_refuses_what_pinpointe_would(
    pinpointe_sim: PinpointeSimulator, body: bytes, status: int, message: str
) -> None:
    got_status, answer = pinpointe_sim.handle_api(body)
    assert got_status == status
    assert answer["status"] == "FAILED"
    assert message in answer["errormessage"]
    assert pinpointe_sim.jobs == {}


def test_requesttype_is_matched_case_insensitively(pinpointe_sim: PinpointeSimulator) -> None:
    status, answer = pinpointe_sim.handle_api(
        api_request("apitest", requesttype="authentication", details={})
    )
    assert (status, answer["data"]["username"]) == (200, DEFAULT_USERNAME)


def test_job_status_follows_the_notification(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.send_notifications = False
    job = submit_job(pinpointe_sim)
    query = api_request("AsyncJobStatus", requesttype="API", details={"jobids": [job.job_id]})
    assert pinpointe_sim.handle_api(query)[1]["data"]["item"][0]["status"] == "waiting"
    pinpointe_sim.deliver_notification(job.job_id)
    assert pinpointe_sim.handle_api(query)[1]["data"]["item"][0]["status"] == "complete"


def test_delivery_can_be_delayed_replaced_suppressed_and_repeated(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    inbox: list[bytes] = []
    pinpointe_sim.deliver = inbox.append
    pinpointe_sim.notify_delay_s = 0.3
    started = time.monotonic()
    job = submit_job(pinpointe_sim)
    job.wait_delivered(10)
    assert time.monotonic() - started >= 0.3
    assert len(inbox) == 1
    assert pinpointe_sim.delivered == []
    pinpointe_sim.send_notifications = False
    quiet = submit_job(pinpointe_sim)
    time.sleep(0.1)
    assert (quiet.mail, len(inbox)) == (None, 1)
    again = pinpointe_sim.deliver_notification(job.job_id)
    assert parse_mail(again)["Message-ID"] != parse_mail(inbox[0])["Message-ID"]
    assert job.mails_sent == 2


def test_a_mail_can_beat_the_submit_answer(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.notify_before_response = True
    status, answer = pinpointe_sim.handle_api(api_request())
    assert status == 200
    assert len(pinpointe_sim.delivered) == 1
    assert answer["data"]["jobid"] in pinpointe_sim.delivered[0].decode()


def test_a_failing_deliver_callback_is_recorded(pinpointe_sim: PinpointeSimulator) -> None:
    def refuse(mail: bytes) -> None:
        raise OSError("mailbox full")

    pinpointe_sim.deliver = refuse
    job = submit_job(pinpointe_sim)
    deadline = time.monotonic() + 10
    while job.error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.error == "OSError: mailbox full"
    assert job.mail is None


def _method(method: str, requesttype: str, **details: object) -> bytes:
    return api_request(method, requesttype=requesttype, details={**details, "notify": NOTIFY})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_method("GetNewsletterStatsAsync", "Newsletters"), "Missing required field: listid"),
        (_method("GetNewsletterStatsAsync", "Newsletters", listid="12"), "expected an integer"),
        (_method("GetNewsletterStatsAsync", "Newsletters", listid=999999), "invalid argument list"),
        (
            _method("GetNewsletterStatsAsync", "Newsletters", listid=1, startdate="20250101"),
            "expected YYYY-MM-DDTHH:MM:SSZ",
        ),
        (_method("GetNewsletterStatsAsync", "Newsletters", listid=1, format="pdf"), "format"),
        (_method("GetListSubscribersAsync", "Lists", list="3"), "expected an array"),
        (_method("GetListSubscribersAsync", "Lists", list=[]), "at least one ID"),
        (_method("GetListSubscribersAsync", "Lists", list=[3]), "strings of digits"),
        (_method("GetListSubscribersAsync", "Lists", list=["3"], format="csv"), "Unknown param"),
        (_method("GetListSubscribersAsync", "Lists", list=["3"], status="x"), "Invalid status"),
        (
            _method("GetListSubscribersAsync", "Lists", list=["3"], include_membership="1"),
            "boolean",
        ),
        (_method("GetSegmentSubscribersAsync", "Segments", segmentid=["1"], format="xml"), "json"),
        (
            _method("GetSegmentSubscribersAsync", "Segments", segmentid=["1"], startdate="2"),
            "Unknown parameter: startdate",
        ),
        (_method("GetTagSubscribersAsync", "Tags", tagid=["999999"]), "invalid argument tag id"),
        (_method("GetTagSubscribersAsync", "Tags"), "Missing required field: tagid"),
        (
            api_request("GetNewslettersSent", details={"intervalcount": 7}),
            "Invalid intervalcount",
        ),
        (
            api_request("GetNewslettersSent", details={"intervalcount": "7", "intervalunits": "d"}),
            "Invalid intervalunits",
        ),
    ],
)
def test_every_method_refuses_what_its_page_forbids(
    pinpointe_sim: PinpointeSimulator, body: bytes, message: str
) -> None:
    status, answer = pinpointe_sim.handle_api(body)
    assert (status, answer["status"]) == (400, "FAILED")
    assert message in answer["errormessage"]
    assert pinpointe_sim.jobs == {}
