"""``inspect-email``: the report's keys, the download URL it names, and safe terminal output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.errors import ExtractError
from inbox_poller.matching.inspection import (
    format_inspection,
    inspect_email,
    pending_exports,
)
from inbox_poller.models import ExportState
from inbox_poller.urlpolicy import HostRule, parse_host_rule

EML_DIR = Path(__file__).parents[1] / "data" / "eml"
CASES: list[dict[str, Any]] = [
    case
    for case in json.loads((EML_DIR / "cases.json").read_text())
    if "exports" not in case  # ledger states cannot be given on the command line
]
RULES: tuple[HostRule, ...] = (parse_host_rule(".mypinpointe.com"),)
JOB = "482913075"
DL = (
    f"https://exports.mypinpointe.com/files/{JOB}/contact-data.json.gz"
    "?expires=1767225600&sig=Zm9vYmFyYmF6"
)


def _report(name: str, pending: list[str]) -> dict[str, Any]:
    return inspect_email((EML_DIR / name).read_bytes(), pending, RULES)


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c['file']}-{'+'.join(c['pending']) or 'none'}" for c in CASES]
)
def test_corpus(case: dict[str, Any]) -> None:
    report = _report(case["file"], case["pending"])
    assert report["download_url"] == case["download_url"]
    if case["pending"]:
        assert report["match"]["outcome"] == case["outcome"]
    if "job_ids" in case:
        assert report["job_ids"] == case["job_ids"]
    if "pairs" in case:
        assert {p["job_id"]: p["download_url"] for p in report["pairing"]} == case["pairs"]
    json.dumps(report)  # JSON-able as it is


def test_the_report_has_every_documented_key() -> None:
    report = _report("01_multipart_alternative.eml", [JOB])
    assert {
        "sender",
        "subject",
        "message_id",
        "job_ids",
        "links",
        "match",
        "download_url",
        "pairing",
        "defects",
    } <= report.keys()
    assert report["sender"] == "notifications@na01.mypinpointe.com"
    assert report["subject"] == f"Your export {JOB} is ready"
    assert report["message_id"] == "<0001@na01.mypinpointe.com>"
    assert report["match"] == {
        "outcome": "matched",
        "job_id": JOB,
        "reason": f"job {JOB} (export 1) awaited this notification; the only acceptable link",
    }
    assert report["download_url"] == DL


def test_every_link_says_why_it_was_kept_or_refused() -> None:
    links = _report("19_json_gz_and_auxiliary_links.eml", [])["links"]
    by_url = {link["url"]: link for link in links}
    assert all(set(link) >= {"url", "kept", "reason"} for link in links)
    assert [link["url"] for link in links if link["kept"]] == [
        "https://exports.mypinpointe.com/d/Qk7xR2mZ9pLw/contact-data.json.gz"
        "?sig=c2VjcmV0LWludmVudGVk"
    ]
    assert by_url["https://twitter.com/pinpointe"]["reason"].startswith("host twitter.com")
    assert by_url["https://app.mypinpointe.com/login.php"]["reason"] == "login link"
    assert by_url["https://na01.mypinpointe.com/display.php?M=88231&C=4f1e"]["text"] == (
        "View this email in your browser"
    )


def _html_mail(url: str) -> bytes:
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"] = "notifications@na01.mypinpointe.com"
    mail["Subject"] = "Your export is ready"
    mail.set_content(f"Job ID: {JOB}\n")
    mail.add_alternative(f'<p>Job ID: {JOB}</p><a href="{url}">Download</a>', "html")
    return mail.as_bytes()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "https://na01.mypinpointe.com\\@evil.example/x.json",
            "backslashes (a client would connect to na01.mypinpointe.com; "
            "urllib.parse sees evil.example)",
        ),
        (
            "https://na01.mypinpointe.com@evil.example/x.json",
            "the URL carries user info (a client would connect to evil.example)",
        ),
        (
            "https://na01.mypinpointe.com%40evil.example/x.json",
            "it is percent-encoded: na01.mypinpointe.com%40evil.example reads "
            "na01.mypinpointe.com@evil.example",
        ),
        (
            "https://na01.mypinpo\u0456nte.com/x.json",
            "which a client would look up as na01.xn--mypinponte-32i.com",
        ),
    ],
)
def test_a_refused_link_names_the_host_a_client_would_reach(url: str, reason: str) -> None:
    report = inspect_email(_html_mail(url), [JOB], RULES)
    links = report["links"]
    assert isinstance(links, list)
    [link] = [link for link in links if link["url"] == url]
    assert not link["kept"]
    assert reason in link["reason"]
    assert reason in format_inspection(report)


def test_each_link_lists_the_links_it_was_unwrapped_from() -> None:
    links = _report("18_tracking_redirect_twice.eml", [JOB])["links"]
    by_url = {link["url"]: link for link in links}
    target = by_url[DL]
    assert target["kept"] and len(target["via"]) == 1
    tracker = by_url[target["via"][0]]
    assert tracker["reason"] == "tracking redirect; its target is judged instead"
    assert len(tracker["via"]) == 1 and "safelinks" in tracker["via"][0]


def test_without_pending_ids_the_would_be_link_is_named() -> None:
    report = _report("15_no_job_id.eml", [])
    assert report["match"]["outcome"] == "unmatched"
    assert report["download_url"].startswith("https://exports.mypinpointe.com/d/")
    assert report["download_reason"] == "the only acceptable link"


def test_defects_are_reported() -> None:
    report = _report("23_malformed_mime.eml", [JOB])
    assert any("CloseBoundaryNotFound" in d for d in report["defects"])
    assert report["match"]["outcome"] == "matched"


def test_pending_ids_become_submitted_exports_once_each() -> None:
    exports = pending_exports([" 111 ", "222", "111", ""])
    assert [(e.export_id, e.job_id, e.state) for e in exports] == [
        (1, "111", ExportState.SUBMITTED),
        (2, "222", ExportState.SUBMITTED),
    ]


def test_an_unreadable_mail_is_an_extract_error() -> None:
    with pytest.raises(ExtractError):
        inspect_email(b"", [], RULES)


def test_the_human_form_names_everything() -> None:
    text = format_inspection(_report("17_tracking_redirect_once.eml", [JOB]))
    assert "From:       notifications@na01.mypinpointe.com" in text
    assert f"Job IDs:    {JOB}" in text
    assert "tracking redirect; its target is judged instead" in text
    assert f"Match:      matched (job {JOB}):" in text
    assert f"Download:   {DL}" in text


def test_the_human_form_says_why_there_is_no_download() -> None:
    text = format_inspection(_report("31_two_links_none_singled_out.eml", [JOB]))
    assert "Match:      refused (job 482913075)" in text
    assert "Download:   none (job 482913075 (export 1): 2 acceptable links" in text


def test_the_human_form_escapes_terminal_controls_from_the_mail() -> None:
    raw = (
        b"From: x@example.org\r\nSubject: =?utf-8?b?G1szMW1yZWQbWzBtIOKArmdub3A=?=\r\n\r\n"
        b"https://a.mypinpointe.com/f\x1b[2J\r\n"
    )
    text = format_inspection(inspect_email(raw, [], RULES))
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[31mred" in text and "\\u202e" in text


DIGEST = "45_digest_two_exports.eml"
OTHER = "590174263"


def test_a_digest_shows_each_export_with_its_own_link() -> None:
    report = _report(DIGEST, [JOB, OTHER])
    assert report["match"]["outcome"] == "matched" and report["download_url"] is None
    assert [(p["job_id"], p["outcome"]) for p in report["pairing"]] == [
        (JOB, "matched"),
        (OTHER, "matched"),
    ]
    assert all(p["download_url"].split("/")[4] == p["job_id"] for p in report["pairing"])
    text = format_inspection(report)
    assert "Digest:     2 exports, each with its own link\n" in text
    assert f"  job {JOB}: matched, {report['pairing'][0]['download_url']}" in text
    assert f"  job {OTHER}: matched, {report['pairing'][1]['download_url']}" in text


def test_without_pending_ids_a_digest_shows_the_pairing_its_job_ids_would_get() -> None:
    report = _report(DIGEST, [])
    assert report["match"]["outcome"] == "unmatched"
    assert [p["job_id"] for p in report["pairing"]] == [JOB, OTHER]
    assert "each with its own link (if these were pending)" in format_inspection(report)


def test_a_refused_digest_shows_no_pairing() -> None:
    report = _report("46_digest_with_a_shared_link.eml", [JOB, OTHER])
    assert report["match"]["outcome"] == "refused" and report["pairing"] == []
    assert "Digest:" not in format_inspection(report)


def test_a_plain_notification_has_one_pairing_and_no_digest_lines() -> None:
    report = _report("01_multipart_alternative.eml", [JOB])
    assert [(p["job_id"], p["download_url"]) for p in report["pairing"]] == [(JOB, DL)]
    assert "Digest:" not in format_inspection(report)
