"""The simulator's payloads: deterministic files, sized on request, served as recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.sandbox.simulator.payloads import write_payload
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.sandbox.simulator.helpers import fetch, submit_job


@pytest.mark.parametrize("shape", ["object", "array"])
def test_the_served_payload_matches_what_was_recorded(
    pinpointe_sim: PinpointeSimulator, shape: Any
) -> None:
    pinpointe_sim.payload_shape = shape
    pinpointe_sim.payload_records = 250
    job = submit_job(pinpointe_sim)
    response = fetch(pinpointe_sim, job.download_url)
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
    small = write_payload(tmp_path / "e.json", stat="9", records=100, min_bytes=100_000)
    assert 100_000 <= small.bytes < 100_000 + 256  # within one record: the bench's size
    assert len(json.loads((tmp_path / "e.json").read_bytes())["data"]["item"]) == small.records
