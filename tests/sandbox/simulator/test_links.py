"""The simulator's signed links: an altered, unknown or expired link is refused."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.sandbox.simulator.helpers import fetch, submit_job


def test_a_tampered_unknown_or_expired_link_is_refused(pinpointe_sim: PinpointeSimulator) -> None:
    job = submit_job(pinpointe_sim)
    assert fetch(pinpointe_sim, job.download_url.replace("sig=", "sig=0")).status_code == 403
    expires = parse_qs(urlsplit(job.download_url).query)["expires"][0]
    longer = job.download_url.replace(f"expires={expires}", f"expires={int(expires) + 1}")
    assert fetch(pinpointe_sim, longer).status_code == 403
    assert fetch(pinpointe_sim, job.download_url.replace(job.token, "nope")).status_code == 404
    pinpointe_sim.link_ttl_s = -60
    expired = submit_job(pinpointe_sim)
    assert fetch(pinpointe_sim, expired.download_url).status_code == 410
