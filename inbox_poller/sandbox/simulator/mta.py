"""The simulated receiving MTA: the trace headers a notification gains on its way in.

Pinpointe only writes the mail (:mod:`.notifications`); the mailbox's own MTA adds
``Received`` and the ``Authentication-Results`` verdicts (DKIM, SPF, DMARC) that the
sender check reads. Nothing here is used in production.
"""

from __future__ import annotations

from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime


def stamp(
    message: EmailMessage, *, domain: str, date: datetime, authserv_id: str, dmarc: str | None
) -> bytes:
    """Return *message* as the mailbox receives it, trace headers first.

    *domain* is the sender's; *dmarc* is the verdict to stamp (DKIM passes only with
    it), or None for no ``Authentication-Results`` header at all.
    """
    trace = f"Received: from mta1.{domain} by {authserv_id}; {format_datetime(date)}\r\n"
    if dmarc is not None:
        dkim = "pass" if dmarc == "pass" else "fail"
        trace += (
            f"Authentication-Results: {authserv_id}; dkim={dkim} header.d={domain}; "
            f"spf=pass smtp.mailfrom={domain}; dmarc={dmarc} header.from={domain}\r\n"
        )
    return trace.encode("ascii") + message.as_bytes(policy=policy.SMTP)
