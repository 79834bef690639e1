"""Builders of the simulator's export-ready notification mails, one per style.

Pinpointe's real notification format is unknown (docs/pinpointe-api.md, gap 1), so the
simulator sends many plausible ones, and the extractor must cope with all of them:
HTML and text alternatives, text only, HTML only behind a click-tracking redirect,
a job ID only inside the link or nowhere at all, base64 and quoted-printable
transfer encodings, and a non-UTF-8 charset with 8-bit text. A digest
(:func:`build_digest`) announces several exports in one mail.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import NamedTuple
from urllib.parse import quote

HOME_URL = "https://www.pinpointe.example/"
LOGO_URL = "https://www.pinpointe.example/images/logo.png"
HELP_URL = "https://help.pinpointe.example/support/solutions"
UNSUBSCRIBE_URL = "https://www.pinpointe.example/unsubscribe.php"


@dataclass(frozen=True)
class MailParams:
    """Everything a style needs to write one notification."""

    job_id: str
    download_url: str
    click_url: str
    """The click tracker's base URL; ``?u=<quoted target>`` is appended."""
    sender: str
    recipient: str
    message_id: str
    date: datetime
    stat: str
    records: int
    expires_at: datetime


class Style(NamedTuple):
    """One notification style: how to build it, and whether its link must name the job ID."""

    build: Callable[[MailParams], EmailMessage]
    job_id_in_link: bool = False


def _headers(params: MailParams, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = params.sender
    message["To"] = params.recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(params.date)
    message["Message-ID"] = params.message_id
    return message


def _subject(params: MailParams) -> str:
    return f"Your Pinpointe export is ready (Job ID {params.job_id})"


def _text(params: MailParams, *, with_job_id: bool = True, url: str | None = None) -> str:
    job_line = f"Job ID: {params.job_id}\n" if with_job_id else ""
    return (
        "Hello,\n\n"
        "The contact data summary you requested is ready.\n\n"
        f"{job_line}"
        f"Stat ID: {params.stat}\n"
        f"Records: {params.records}\n\n"
        "Download your file here:\n"
        f"{url or params.download_url}\n\n"
        f"The link is valid until {format_datetime(params.expires_at, usegmt=True)}.\n\n"
        f"Help: {HELP_URL}\n"
        "-- \nPinpointe\n"
    )


def _html(params: MailParams, *, with_job_id: bool = True, url: str | None = None) -> str:
    href = html.escape(url or params.download_url, quote=True)
    job_line = f"<p>Job ID: <b>{params.job_id}</b></p>" if with_job_id else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Export ready</title></head>"
        "<body>"
        f'<p><a href="{HOME_URL}"><img src="{LOGO_URL}" alt="Pinpointe"></a></p>'
        "<p>Hello,</p><p>The contact data summary you requested is ready.</p>"
        f"{job_line}<p>Stat ID: {params.stat} &middot; Records: {params.records}</p>"
        f'<p><a href="{href}" style="color:#fff;background:#0a6">Download your export</a></p>'
        f"<p>The link is valid until {format_datetime(params.expires_at, usegmt=True)}.</p>"
        f'<p><a href="{HELP_URL}">Help</a> | '
        f'<a href="{UNSUBSCRIBE_URL}?e={quote(params.recipient)}">Unsubscribe</a></p>'
        "</body></html>\n"
    )


def _alternative(
    params: MailParams, subject: str, text: str, body: str, cte: str = "7bit"
) -> EmailMessage:
    message = _headers(params, subject)
    message.set_content(text, cte=cte)
    message.add_alternative(body, subtype="html", cte=cte)
    message.set_boundary(f"=_pinpointe_{params.job_id}_alt")
    return message


def build_multipart(params: MailParams) -> EmailMessage:
    """HTML and text alternatives (7bit, unwrapped) with logo, help and unsubscribe links."""
    return _alternative(params, _subject(params), _text(params), _html(params))


def build_text_only(params: MailParams) -> EmailMessage:
    """A single text/plain part with a bare URL."""
    message = _headers(params, _subject(params))
    message.set_content(_text(params), cte="7bit")
    return message


def build_html_tracked(params: MailParams) -> EmailMessage:
    """HTML only; the download link is wrapped in a click-tracking redirect."""
    tracked = f"{params.click_url}?u={quote(params.download_url, safe='')}&m={params.job_id}"
    message = _headers(params, _subject(params))
    message.set_content(_html(params, url=tracked), subtype="html", cte="7bit")
    return message


def build_job_id_in_link(params: MailParams) -> EmailMessage:
    """The job ID appears only in the link's query, never in the subject or the text."""
    text = _text(params, with_job_id=False)
    body = _html(params, with_job_id=False)
    return _alternative(params, "Your Pinpointe export is ready", text, body)


def build_no_job_id(params: MailParams) -> EmailMessage:
    """No job ID anywhere: the mail can only be matched when one export is pending."""
    text = _text(params, with_job_id=False)
    body = _html(params, with_job_id=False)
    return _alternative(params, "Your Pinpointe export is ready", text, body)


def build_base64(params: MailParams) -> EmailMessage:
    """HTML and text alternatives, both base64-encoded."""
    return _alternative(params, _subject(params), _text(params), _html(params), cte="base64")


def build_quoted_printable(params: MailParams) -> EmailMessage:
    """HTML and text alternatives, both quoted-printable (long URLs get soft line breaks)."""
    return _alternative(
        params, _subject(params), _text(params), _html(params), cte="quoted-printable"
    )


def build_latin1(params: MailParams) -> EmailMessage:
    """French wording: 8-bit windows-1252 text and quoted-printable ISO-8859-1 HTML."""
    subject = f"Votre exportation Pinpointe est prête (Job ID {params.job_id})"
    text = (
        "Bonjour,\n\nLe résumé des contacts demandé est prêt.\n\n"
        f"Job ID : {params.job_id}\nStat ID : {params.stat}\n\n"
        f"Télécharger le fichier : {params.download_url}\n\n« Pinpointe » — équipe\n"
    )
    href = html.escape(params.download_url, quote=True)
    body = (
        "<html><body><p>Bonjour,</p><p>Le résumé des contacts demandé est prêt.</p>"
        f"<p>Job ID : {params.job_id}</p>"
        f'<p><a href="{href}">Télécharger</a> · <a href="{HELP_URL}">Aide</a></p>'
        "</body></html>\n"
    )
    message = _headers(params, subject)
    message.set_content(text, charset="windows-1252", cte="8bit")
    message.add_alternative(body, subtype="html", charset="iso-8859-1", cte="quoted-printable")
    message.set_boundary(f"=_pinpointe_{params.job_id}_latin1")
    return message


def build_digest(entries: Sequence[MailParams]) -> EmailMessage:
    """One mail announcing several exports, each with its own link naming its job ID.

    The headers (sender, recipient, Message-ID, date) are the first entry's. Each link
    must name its job (``jobid=`` in its query): that is what pairs it with its export.
    """
    first = entries[0]
    subject = f"{len(entries)} of your Pinpointe exports are ready"
    text = "Hello,\n\nThese contact data summaries you requested are ready.\n\n"
    rows = ""
    for entry in entries:
        text += (
            f"Job ID {entry.job_id} (stat {entry.stat}, {entry.records} records):\n"
            f"{entry.download_url}\n\n"
        )
        href = html.escape(entry.download_url, quote=True)
        rows += (
            f"<tr><td>Job ID {entry.job_id} (stat {entry.stat}, {entry.records} records)</td>"
            f'<td><a href="{href}">Download</a></td></tr>'
        )
    text += f"The links are valid for 7 days.\n\nHelp: {HELP_URL}\n-- \nPinpointe\n"
    body = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Exports ready</title>"
        f'</head><body><p><a href="{HOME_URL}"><img src="{LOGO_URL}" alt="Pinpointe"></a></p>'
        f"<p>These contact data summaries you requested are ready.</p><table>{rows}</table>"
        f'<p><a href="{HELP_URL}">Help</a> | '
        f'<a href="{UNSUBSCRIBE_URL}?e={quote(first.recipient)}">Unsubscribe</a></p>'
        "</body></html>\n"
    )
    return _alternative(first, subject, text, body)


STYLES: dict[str, Style] = {
    "multipart": Style(build_multipart),
    "text": Style(build_text_only),
    "html_tracked": Style(build_html_tracked),
    "job_id_in_link": Style(build_job_id_in_link, job_id_in_link=True),
    "no_job_id": Style(build_no_job_id),
    "base64": Style(build_base64),
    "quoted_printable": Style(build_quoted_printable),
    "latin1": Style(build_latin1),
}
"""Every style the simulator can send, by name."""
