"""The simulated receiving MTA: the DMARC verdict it stamps, or no header at all."""

from __future__ import annotations

from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.sandbox.simulator.helpers import parse_mail, submit_job


def test_a_failed_dmarc_is_stamped_and_none_omits_the_header(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    pinpointe_sim.dmarc = "fail"
    failing = parse_mail(submit_job(pinpointe_sim).wait_delivered(10))
    assert "dmarc=fail" in failing["Authentication-Results"]
    pinpointe_sim.dmarc = None
    assert (
        parse_mail(submit_job(pinpointe_sim).wait_delivered(10))["Authentication-Results"] is None
    )
