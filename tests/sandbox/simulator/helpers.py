"""What the simulator's own tests share: API requests to it, links fetched over HTTPS that
trust its CA, and reading the mails it sent."""

from __future__ import annotations

import email
import json
from email import policy
from email.message import EmailMessage
from typing import Any

import requests

from inbox_poller.sandbox.simulator.jobs import SimJob
from inbox_poller.sandbox.simulator.server import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    PinpointeSimulator,
)

NOTIFY = {"type": "email", "value": "exports@inbox.example"}


def api_request(method: str = "GetNewsletterContactDataSummaryAsync", **changes: Any) -> bytes:
    envelope: dict[str, Any] = {
        "username": DEFAULT_USERNAME,
        "usertoken": DEFAULT_TOKEN,
        "requesttype": "Newsletters",
        "requestmethod": method,
        "details": {"stat": "42", "notify": NOTIFY},
    }
    envelope.update(changes)
    return json.dumps(envelope).encode()


def submit_job(sim: PinpointeSimulator, **details: Any) -> SimJob:
    status, answer = sim.handle_api(
        api_request(details={"stat": "42", "notify": NOTIFY, **details})
    )
    assert (status, answer["status"]) == (200, "SUCCESS"), answer
    return sim.job(answer["data"]["jobid"]).wait_ready()


def https_session(sim: PinpointeSimulator) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(sim.ca_file)
    return session


def fetch(sim: PinpointeSimulator, url: str, **kwargs: Any) -> requests.Response:
    return https_session(sim).get(url, allow_redirects=False, timeout=10, **kwargs)


def parse_mail(mail: bytes) -> EmailMessage:
    message = email.message_from_bytes(mail, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def mail_texts(message: EmailMessage) -> str:
    return "\n".join(
        part.get_content() for part in message.walk() if part.get_content_maintype() == "text"
    )
