"""The Pinpointe simulator itself: API strictness, payloads, link faults and mail styles."""

from __future__ import annotations

import email
import gzip
import hashlib
import json
import time
import zlib
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests

from inbox_poller.sandbox.simulator.notifications import STYLES
from inbox_poller.sandbox.simulator.server import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    Faults,
    PinpointeSimulator,
    SimJob,
    write_payload,
)

NOTIFY = {"type": "email", "value": "exports@inbox.example"}


def _envelope(method: str = "GetNewsletterContactDataSummaryAsync", **changes: Any) -> bytes:
    envelope: dict[str, Any] = {
        "username": DEFAULT_USERNAME,
        "usertoken": DEFAULT_TOKEN,
        "requesttype": "Newsletters",
        "requestmethod": method,
        "details": {"stat": "42", "notify": NOTIFY},
    }
    envelope.update(changes)
    return json.dumps(envelope).encode()


def _submit(sim: PinpointeSimulator, **details: Any) -> SimJob:
    status, answer = sim.handle_api(_envelope(details={"stat": "42", "notify": NOTIFY, **details}))
    assert (status, answer["status"]) == (200, "SUCCESS"), answer
    return sim.job(answer["data"]["jobid"]).wait_ready()


def _session(sim: PinpointeSimulator) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(sim.ca_file)
    return session


def _get(sim: PinpointeSimulator, url: str, **kwargs: Any) -> requests.Response:
    return _session(sim).get(url, allow_redirects=False, timeout=10, **kwargs)


# ---- the API ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not JSON"),
        (_envelope(username=""), 400, "missing: username"),
        (_envelope(details=[]), 400, "details must be an object"),
        (_envelope(usertoken="wrong"), 401, "Unable to verify user credentials"),
        (_envelope(username="other"), 401, "Unable to verify user credentials"),
        (_envelope("NoSuchMethod"), 400, "Unknown requesttype"),
        (_envelope(details={"stat": 42, "notify": NOTIFY}), 400, "Invalid stat"),
        (_envelope(details={"notify": NOTIFY}), 400, "Invalid stat"),
        (_envelope(details={"stat": "42", "startdate": "", "notify": NOTIFY}), 400, "startdate"),
        (
            _envelope(details={"stat": "42", "enddate": "20250231", "notify": NOTIFY}),
            400,
            "enddate",
        ),
        (
            _envelope(
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
        (_envelope(details={"stat": "42", "format": "json", "notify": NOTIFY}), 400, "format"),
        (_envelope(details={"stat": "42"}), 400, "notify"),
        (
            _envelope(details={"stat": "42", "notify": {"type": "webhook", "value": "x"}}),
            400,
            "email",
        ),
        (
            _envelope(details={"stat": "42", "notify": {"type": "email", "value": ""}}),
            400,
            "e-mail",
        ),
        (_envelope("AsyncJobStatus", requesttype="API", details={"jobids": "1"}), 400, "jobids"),
        (
            _envelope("AsyncJobStatus", requesttype="API", details={"jobids": ["1"]}),
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
        _envelope("apitest", requesttype="authentication", details={})
    )
    assert (status, answer["data"]["username"]) == (200, DEFAULT_USERNAME)


def test_job_status_follows_the_notification(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.send_notifications = False
    job = _submit(pinpointe_sim)
    query = _envelope("AsyncJobStatus", requesttype="API", details={"jobids": [job.job_id]})
    assert pinpointe_sim.handle_api(query)[1]["data"]["item"][0]["status"] == "waiting"
    pinpointe_sim.deliver_notification(job.job_id)
    assert pinpointe_sim.handle_api(query)[1]["data"]["item"][0]["status"] == "complete"


# ---- payloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["object", "array"])
def test_the_served_payload_matches_what_was_recorded(
    pinpointe_sim: PinpointeSimulator, shape: Any
) -> None:
    pinpointe_sim.payload_shape = shape
    pinpointe_sim.payload_records = 250
    job = _submit(pinpointe_sim)
    response = _get(pinpointe_sim, job.download_url)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(job.bytes)
    assert hashlib.sha256(response.content).hexdigest() == job.sha256
    document = json.loads(response.content)
    items = document["data"]["item"] if shape == "object" else document
    assert len(items) == job.records == 250
    assert {item["event"] for item in items} == {"open", "click"}


def test_payloads_are_deterministic_and_sized_on_request(tmp_path: Path) -> None:
    first = write_payload(tmp_path / "a.json", stat="9", records=0)
    assert json.loads((tmp_path / "a.json").read_bytes()) == {
        "status": "SUCCESS",
        "data": {"item": []},
    }
    one = write_payload(tmp_path / "b.json", stat="9", records=12_345, shape="array")
    two = write_payload(tmp_path / "c.json", stat="9", records=12_345, shape="array")
    assert one == two
    assert first.records == 0
    assert len(json.loads((tmp_path / "b.json").read_bytes())) == 12_345
    big = write_payload(tmp_path / "d.json", stat="9", records=10, min_bytes=3 * 1024**2)
    assert big.bytes >= 3 * 1024**2
    assert big.bytes == (tmp_path / "d.json").stat().st_size
    assert len(json.loads((tmp_path / "d.json").read_bytes())["data"]["item"]) == big.records


# ---- link checks and faults ---------------------------------------------------------------------


def test_a_tampered_unknown_or_expired_link_is_refused(pinpointe_sim: PinpointeSimulator) -> None:
    job = _submit(pinpointe_sim)
    assert _get(pinpointe_sim, job.download_url.replace("sig=", "sig=0")).status_code == 403
    expires = parse_qs(urlsplit(job.download_url).query)["expires"][0]
    longer = job.download_url.replace(f"expires={expires}", f"expires={int(expires) + 1}")
    assert _get(pinpointe_sim, longer).status_code == 403
    assert _get(pinpointe_sim, job.download_url.replace(job.token, "nope")).status_code == 404
    pinpointe_sim.link_ttl_s = -60
    expired = _submit(pinpointe_sim)
    assert _get(pinpointe_sim, expired.download_url).status_code == 410


def test_first_requests_fail_then_succeed(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(fail_first=2, fail_status=429, retry_after="3"))
    job = _submit(pinpointe_sim)
    statuses = [_get(pinpointe_sim, job.download_url) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "3"
    assert len(job.requests) == 3


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_links(pinpointe_sim: PinpointeSimulator, status: int) -> None:
    job = _submit(pinpointe_sim)
    pinpointe_sim.set_faults(job.job_id, Faults(gone_status=status))
    assert _get(pinpointe_sim, job.download_url).status_code == status


def test_a_truncated_body_is_short_of_its_content_length(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.payload_records = 2000
    pinpointe_sim.faults_for_next_job(Faults(truncate_first=1, truncate_at=1000))
    job = _submit(pinpointe_sim)
    received = bytearray()

    def read_all() -> None:
        with _get(pinpointe_sim, job.download_url, stream=True) as response:
            assert response.headers["Content-Length"] == str(job.bytes)
            for chunk in response.iter_content(100):
                received.extend(chunk)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        read_all()
    assert len(received) == 1000
    assert hashlib.sha256(_get(pinpointe_sim, job.download_url).content).hexdigest() == job.sha256


def test_a_stall_outlasts_the_read_timeout(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(stall_first=1, stall_at=500, stall_s=3.0))
    job = _submit(pinpointe_sim)
    started = time.monotonic()
    session = _session(pinpointe_sim)

    def read_all() -> None:
        with session.get(job.download_url, stream=True, timeout=(5, 0.3)) as response:
            for _ in response.iter_content(4096):
                pass

    with pytest.raises(requests.exceptions.ConnectionError):
        read_all()
    assert time.monotonic() - started < 2.5


def test_invalid_json_keeps_a_consistent_length(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(invalid_json=True))
    job = _submit(pinpointe_sim)
    response = _get(pinpointe_sim, job.download_url)
    assert int(response.headers["Content-Length"]) == len(response.content) > job.bytes
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_gzip_serves_the_same_document(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.payload_records = 3000
    pinpointe_sim.faults_for_next_job(Faults(gzip=True))
    job = _submit(pinpointe_sim)
    response = _get(pinpointe_sim, job.download_url, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) == len(raw) < job.bytes
    assert hashlib.sha256(gzip.decompress(raw)).hexdigest() == job.sha256


def test_an_oversized_gzip_body_is_a_small_bomb(pinpointe_sim: PinpointeSimulator) -> None:
    size = 64 * 1024**2 + 5
    pinpointe_sim.faults_for_next_job(Faults(gzip=True, oversize_bytes=size))
    job = _submit(pinpointe_sim)
    with _get(pinpointe_sim, job.download_url, stream=True) as response:
        wire = int(response.headers["Content-Length"])
        decoded = 0
        decoder = zlib.decompressobj(wbits=31)
        for chunk in response.raw.stream(1024**2, decode_content=False):
            while chunk:
                decoded += len(decoder.decompress(chunk))
                chunk = decoder.unused_data
                if decoder.eof:
                    decoder = zlib.decompressobj(wbits=31)
    assert wire < 1024**2
    assert decoded == size


def test_an_oversized_plain_body_is_still_valid_json(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(oversize_bytes=200_000))
    job = _submit(pinpointe_sim)
    response = _get(pinpointe_sim, job.download_url)
    assert len(response.content) == 200_000
    assert len(json.loads(response.content)["data"]["item"]) == job.records


def test_without_content_length_the_body_ends_at_close(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(omit_content_length=True))
    job = _submit(pinpointe_sim)
    response = _get(pinpointe_sim, job.download_url)
    assert "Content-Length" not in response.headers
    assert hashlib.sha256(response.content).hexdigest() == job.sha256


def test_redirects_to_a_path_or_a_url(pinpointe_sim: PinpointeSimulator) -> None:
    job = _submit(pinpointe_sim)
    mirror_path = job.mirror_url.removeprefix(pinpointe_sim.base_url)
    pinpointe_sim.set_faults(job.job_id, Faults(redirect_to=mirror_path, redirect_status=307))
    first = _get(pinpointe_sim, job.download_url)
    assert (first.status_code, first.headers["Location"]) == (307, job.mirror_url)
    assert hashlib.sha256(_get(pinpointe_sim, job.mirror_url).content).hexdigest() == job.sha256
    pinpointe_sim.set_faults(job.job_id, Faults(redirect_to="https://10.0.0.7/x.json"))
    assert _get(pinpointe_sim, job.download_url).headers["Location"] == "https://10.0.0.7/x.json"


def test_ranges_resume_unless_the_validator_changed(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.payload_records = 500
    job = _submit(pinpointe_sim)
    whole = _get(pinpointe_sim, job.download_url)
    etag = whole.headers["ETag"]
    tail = _get(pinpointe_sim, job.download_url, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes 1000-{job.bytes - 1}/{job.bytes}"
    assert whole.content[:1000] + tail.content == whole.content
    stale = _get(
        pinpointe_sim, job.download_url, headers={"Range": "bytes=1000-", "If-Range": '"x"'}
    )
    assert (stale.status_code, len(stale.content)) == (200, job.bytes)
    beyond = _get(pinpointe_sim, job.download_url, headers={"Range": f"bytes={job.bytes}-"})
    assert beyond.status_code == 416
    pinpointe_sim.set_faults(job.job_id, Faults(ignore_range=True))
    assert _get(pinpointe_sim, job.download_url, headers={"Range": "bytes=10-"}).status_code == 200


def test_the_click_tracker_only_redirects_to_the_simulator(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    job = _submit(pinpointe_sim)
    base = f"{pinpointe_sim.base_url}/click?u="
    tracked = _get(pinpointe_sim, base + quote(job.download_url, safe=""))
    assert (tracked.status_code, tracked.headers["Location"]) == (302, job.download_url)
    assert _get(pinpointe_sim, base + "https%3A%2F%2Fexample.com%2F").status_code == 400


# ---- notifications ------------------------------------------------------------------------------


def _parse(mail: bytes) -> EmailMessage:
    message = email.message_from_bytes(mail, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _texts(message: EmailMessage) -> str:
    return "\n".join(
        part.get_content() for part in message.walk() if part.get_content_maintype() == "text"
    )


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_carries_the_link_in_decodable_form(
    pinpointe_sim: PinpointeSimulator, style: str
) -> None:
    pinpointe_sim.notification_style = style
    job = _submit(pinpointe_sim)
    mail = job.wait_delivered(10)
    assert pinpointe_sim.delivered == [mail]
    message = _parse(mail)
    text = _texts(message)
    assert message["From"] == "Pinpointe <noreply@mypinpointe.example>"
    assert message["To"] == "exports@inbox.example"
    assert "dmarc=pass header.from=mypinpointe.example" in message["Authentication-Results"]
    assert job.download_url in unquote(text.replace("&amp;", "&"))
    assert (job.download_url in text.replace("&amp;", "&")) is (style != "html_tracked")
    has_id_param = "jobid=" in job.download_url
    assert has_id_param is STYLES[style].job_id_in_link
    if style in ("job_id_in_link", "no_job_id"):
        assert job.job_id not in message["Subject"]
        plain = text.replace("&amp;", "&").replace(job.download_url, "")
        assert job.job_id not in plain
    else:
        assert job.job_id in message["Subject"]


def test_encodings_and_charsets_are_really_used(pinpointe_sim: PinpointeSimulator) -> None:
    headers: dict[str, set[str]] = {}
    for style in ("base64", "quoted_printable", "latin1", "multipart"):
        pinpointe_sim.notification_style = style
        message = _parse(_submit(pinpointe_sim).wait_delivered(10))
        headers[style] = {
            f"{part.get_content_charset()}/{part['Content-Transfer-Encoding']}"
            for part in message.walk()
            if part.get_content_maintype() == "text"
        }
    assert headers["base64"] == {"utf-8/base64"}
    assert headers["quoted_printable"] == {"utf-8/quoted-printable"}
    assert headers["latin1"] == {"windows-1252/8bit", "iso-8859-1/quoted-printable"}
    assert headers["multipart"] == {"utf-8/7bit"}
    latin = _parse(pinpointe_sim.delivered[2])
    assert "Télécharger" in _texts(latin)
    assert "Télécharger".encode("cp1252") in pinpointe_sim.delivered[2]


def test_delivery_can_be_delayed_replaced_suppressed_and_repeated(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    inbox: list[bytes] = []
    pinpointe_sim.deliver = inbox.append
    pinpointe_sim.notify_delay_s = 0.3
    started = time.monotonic()
    job = _submit(pinpointe_sim)
    job.wait_delivered(10)
    assert time.monotonic() - started >= 0.3
    assert len(inbox) == 1
    assert pinpointe_sim.delivered == []
    pinpointe_sim.send_notifications = False
    quiet = _submit(pinpointe_sim)
    time.sleep(0.1)
    assert (quiet.mail, len(inbox)) == (None, 1)
    again = pinpointe_sim.deliver_notification(job.job_id)
    assert _parse(again)["Message-ID"] != _parse(inbox[0])["Message-ID"]
    assert job.mails_sent == 2


def test_a_mail_can_beat_the_submit_answer(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.notify_before_response = True
    status, answer = pinpointe_sim.handle_api(_envelope())
    assert status == 200
    assert len(pinpointe_sim.delivered) == 1
    assert answer["data"]["jobid"] in pinpointe_sim.delivered[0].decode()


def test_a_failed_dmarc_is_stamped_and_none_omits_the_header(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    pinpointe_sim.dmarc = "fail"
    failing = _parse(_submit(pinpointe_sim).wait_delivered(10))
    assert "dmarc=fail" in failing["Authentication-Results"]
    pinpointe_sim.dmarc = None
    assert _parse(_submit(pinpointe_sim).wait_delivered(10))["Authentication-Results"] is None


def test_a_failing_deliver_callback_is_recorded(pinpointe_sim: PinpointeSimulator) -> None:
    def refuse(mail: bytes) -> None:
        raise OSError("mailbox full")

    pinpointe_sim.deliver = refuse
    job = _submit(pinpointe_sim)
    deadline = time.monotonic() + 10
    while job.error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.error == "OSError: mailbox full"
    assert job.mail is None
