"""The simulator's notification styles: each carries the link, in the encodings it claims."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from inbox_poller.matching.extract import extract
from inbox_poller.matching.inspection import pending_exports
from inbox_poller.matching.match import match_notification
from inbox_poller.models import MailOutcome
from inbox_poller.sandbox.simulator.notifications import STYLES
from inbox_poller.sandbox.simulator.server import PinpointeSimulator, digest_link
from inbox_poller.urlpolicy import parse_host_rule
from tests.sandbox.simulator.helpers import fetch, mail_texts, parse_mail, submit_job


@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_style_carries_the_link_in_decodable_form(
    pinpointe_sim: PinpointeSimulator, style: str
) -> None:
    pinpointe_sim.notification_style = style
    job = submit_job(pinpointe_sim)
    mail = job.wait_delivered(10)
    assert pinpointe_sim.delivered == [mail]
    message = parse_mail(mail)
    text = mail_texts(message)
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
        message = parse_mail(submit_job(pinpointe_sim).wait_delivered(10))
        headers[style] = {
            f"{part.get_content_charset()}/{part['Content-Transfer-Encoding']}"
            for part in message.walk()
            if part.get_content_maintype() == "text"
        }
    assert headers["base64"] == {"utf-8/base64"}
    assert headers["quoted_printable"] == {"utf-8/quoted-printable"}
    assert headers["latin1"] == {"windows-1252/8bit", "iso-8859-1/quoted-printable"}
    assert headers["multipart"] == {"utf-8/7bit"}
    latin = parse_mail(pinpointe_sim.delivered[2])
    assert "Télécharger" in mail_texts(latin)
    assert "Télécharger".encode("cp1252") in pinpointe_sim.delivered[2]


def test_a_digest_names_each_job_in_a_link_of_its_own_that_still_downloads(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    pinpointe_sim.send_notifications = False
    jobs = [submit_job(pinpointe_sim, stat=stat) for stat in ("41", "42")]
    mail = pinpointe_sim.deliver_digest([job.job_id for job in jobs])
    assert pinpointe_sim.delivered == [mail]
    message = parse_mail(mail)
    assert "dmarc=pass" in message["Authentication-Results"]
    text = mail_texts(message).replace("&amp;", "&")
    for job in jobs:
        assert (job.mail, job.mails_sent, job.status) == (mail, 1, "complete")
        assert text.count(digest_link(job)) == 2  # in the text and in the HTML
        assert fetch(pinpointe_sim, digest_link(job)).status_code == 200
    rules = (parse_host_rule(pinpointe_sim.host_rule),)
    exports = pending_exports([job.job_id for job in jobs])
    match = match_notification(extract(mail), exports, rules)
    assert match.outcome is MailOutcome.MATCHED
    assert [p.download_url for p in match.pairings] == [digest_link(job) for job in jobs]
