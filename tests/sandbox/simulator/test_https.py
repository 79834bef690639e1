"""The simulator's HTTPS front: link faults on the wire, Range, redirects, the click tracker."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import zlib
from urllib.parse import quote

import pytest
import requests

from inbox_poller.sandbox.simulator.jobs import Faults
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.sandbox.simulator.helpers import fetch, https_session, submit_job


def test_first_requests_fail_then_succeed(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(fail_first=2, fail_status=429, retry_after="3"))
    job = submit_job(pinpointe_sim)
    statuses = [fetch(pinpointe_sim, job.download_url) for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "3"
    assert len(job.requests) == 3


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_links(pinpointe_sim: PinpointeSimulator, status: int) -> None:
    job = submit_job(pinpointe_sim)
    pinpointe_sim.set_faults(job.job_id, Faults(gone_status=status))
    assert fetch(pinpointe_sim, job.download_url).status_code == status


def test_a_truncated_body_is_short_of_its_content_length(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.payload_records = 2000
    pinpointe_sim.faults_for_next_job(Faults(truncate_first=1, truncate_at=1000))
    job = submit_job(pinpointe_sim)
    received = bytearray()

    def read_all() -> None:
        with fetch(pinpointe_sim, job.download_url, stream=True) as response:
            assert response.headers["Content-Length"] == str(job.bytes)
            for chunk in response.iter_content(100):
                received.extend(chunk)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        read_all()
    assert len(received) == 1000
    assert hashlib.sha256(fetch(pinpointe_sim, job.download_url).content).hexdigest() == job.sha256


def test_a_stall_outlasts_the_read_timeout(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(stall_first=1, stall_at=500, stall_s=3.0))
    job = submit_job(pinpointe_sim)
    started = time.monotonic()
    session = https_session(pinpointe_sim)

    def read_all() -> None:
        with session.get(job.download_url, stream=True, timeout=(5, 0.3)) as response:
            for _ in response.iter_content(4096):
                pass

    with pytest.raises(requests.exceptions.ConnectionError):
        read_all()
    assert time.monotonic() - started < 2.5


def test_invalid_json_keeps_a_consistent_length(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(invalid_json=True))
    job = submit_job(pinpointe_sim)
    response = fetch(pinpointe_sim, job.download_url)
    assert int(response.headers["Content-Length"]) == len(response.content) > job.bytes
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_gzip_serves_the_same_document(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.payload_records = 3000
    pinpointe_sim.faults_for_next_job(Faults(gzip=True))
    job = submit_job(pinpointe_sim)
    response = fetch(pinpointe_sim, job.download_url, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) == len(raw) < job.bytes
    assert hashlib.sha256(gzip.decompress(raw)).hexdigest() == job.sha256


def test_an_oversized_gzip_body_is_a_small_bomb(pinpointe_sim: PinpointeSimulator) -> None:
    size = 64 * 1024**2 + 5
    pinpointe_sim.faults_for_next_job(Faults(gzip=True, oversize_bytes=size))
    job = submit_job(pinpointe_sim)
    with fetch(pinpointe_sim, job.download_url, stream=True) as response:
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
    job = submit_job(pinpointe_sim)
    response = fetch(pinpointe_sim, job.download_url)
    assert len(response.content) == 200_000
    assert len(json.loads(response.content)["data"]["item"]) == job.records


def test_without_content_length_the_body_ends_at_close(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.faults_for_next_job(Faults(omit_content_length=True))
    job = submit_job(pinpointe_sim)
    response = fetch(pinpointe_sim, job.download_url)
    assert "Content-Length" not in response.headers
    assert hashlib.sha256(response.content).hexdigest() == job.sha256


def test_redirects_to_a_path_or_a_url(pinpointe_sim: PinpointeSimulator) -> None:
    job = submit_job(pinpointe_sim)
    mirror_path = job.mirror_url.removeprefix(pinpointe_sim.base_url)
    pinpointe_sim.set_faults(job.job_id, Faults(redirect_to=mirror_path, redirect_status=307))
    first = fetch(pinpointe_sim, job.download_url)
    assert (first.status_code, first.headers["Location"]) == (307, job.mirror_url)
    assert hashlib.sha256(fetch(pinpointe_sim, job.mirror_url).content).hexdigest() == job.sha256
    pinpointe_sim.set_faults(job.job_id, Faults(redirect_to="https://10.0.0.7/x.json"))
    assert fetch(pinpointe_sim, job.download_url).headers["Location"] == "https://10.0.0.7/x.json"


def test_ranges_resume_unless_the_validator_changed(pinpointe_sim: PinpointeSimulator) -> None:
    pinpointe_sim.payload_records = 500
    job = submit_job(pinpointe_sim)
    whole = fetch(pinpointe_sim, job.download_url)
    etag = whole.headers["ETag"]
    tail = fetch(
        pinpointe_sim, job.download_url, headers={"Range": "bytes=1000-", "If-Range": etag}
    )
    assert tail.status_code == 206
    assert tail.headers["Content-Range"] == f"bytes 1000-{job.bytes - 1}/{job.bytes}"
    assert whole.content[:1000] + tail.content == whole.content
    stale = fetch(
        pinpointe_sim, job.download_url, headers={"Range": "bytes=1000-", "If-Range": '"x"'}
    )
    assert (stale.status_code, len(stale.content)) == (200, job.bytes)
    beyond = fetch(pinpointe_sim, job.download_url, headers={"Range": f"bytes={job.bytes}-"})
    assert beyond.status_code == 416
    pinpointe_sim.set_faults(job.job_id, Faults(ignore_range=True))
    assert fetch(pinpointe_sim, job.download_url, headers={"Range": "bytes=10-"}).status_code == 200


def test_the_click_tracker_only_redirects_to_the_simulator(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    job = submit_job(pinpointe_sim)
    base = f"{pinpointe_sim.base_url}/click?u="
    tracked = fetch(pinpointe_sim, base + quote(job.download_url, safe=""))
    assert (tracked.status_code, tracked.headers["Location"]) == (302, job.download_url)
    assert fetch(pinpointe_sim, base + "https%3A%2F%2Fexample.com%2F").status_code == 400
