"""The simulator's notification styles: each carries the link, in the encodings it claims."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from inbox_poller.sandbox.simulator.notifications import STYLES
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.sandbox.simulator.helpers import mail_texts, parse_mail, submit_job


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
