"""Matching: link verdicts, job IDs, the download link, and every outcome (docs/matching.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.extract import extract
from inbox_poller.match import (
    choose_download_link,
    find_known_ids,
    judge_links,
    match_notification,
)
from inbox_poller.models import (
    Export,
    ExportRequest,
    ExportState,
    Link,
    LinkVerdict,
    MailOutcome,
    Notification,
)
from inbox_poller.urlpolicy import HostRule, parse_host_rule

EML_DIR = Path(__file__).parent / "data" / "eml"
CASES: list[dict[str, Any]] = json.loads((EML_DIR / "cases.json").read_text())
RULES: tuple[HostRule, ...] = (parse_host_rule(".mypinpointe.com"),)
WHEN = datetime(2025, 9, 2, 8, 0, tzinfo=UTC)
FILE = "https://exports.mypinpointe.com/files/482913075/data.json.gz?sig=abc"
ANON = "https://exports.mypinpointe.com/d/Qk7xR2mZ/data.json.gz?sig=abc"
"""A download link that names no job."""


def _export(
    export_id: int,
    job_id: str | None,
    state: ExportState = ExportState.SUBMITTED,
    download_url: str | None = None,
) -> Export:
    return Export(
        export_id=export_id,
        request=ExportRequest(stat="4711"),
        state=state,
        created_at=WHEN,
        updated_at=WHEN,
        job_id=job_id,
        download_url=download_url,
    )


def _case_exports(case: dict[str, Any]) -> list[Export]:
    exports = [_export(n, job) for n, job in enumerate(case["pending"], start=1)]
    for n, spec in enumerate(case.get("exports", []), start=100):
        state = ExportState(spec["state"])
        exports.append(_export(n, spec["job_id"], state, spec.get("download_url")))
    return exports


def _note(
    *texts: str, links: tuple[Link, ...] = (), subject: str = "", ids: tuple[str, ...] = ()
) -> Notification:
    return Notification(
        message_id=None,
        sender="n@na01.mypinpointe.com",
        subject=subject,
        texts=texts,
        links=links,
        candidate_job_ids=ids,
    )


# --- the corpus table ---------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"{c['file']}-{'+'.join(c['pending']) or 'none'}-{n}" for n, c in enumerate(CASES)],
)
def test_corpus(case: dict[str, Any]) -> None:
    notification = extract((EML_DIR / case["file"]).read_bytes())
    match = match_notification(notification, _case_exports(case), RULES)
    assert match.outcome.value == case["outcome"], match.reason
    expected_url = case["download_url"] if case["outcome"] == "matched" else None
    assert match.download_url == expected_url
    assert match.reason
    if "job_ids" in case:
        assert list(match.job_ids) == case["job_ids"]
    if "job_id" in case:
        assert match.job_id == case["job_id"]
    if "reason" in case:
        assert case["reason"] in match.reason
    if "link_reason" in case:
        assert any(case["link_reason"] in v.reason for v in match.links), match.links
    if match.outcome is MailOutcome.MATCHED:
        assert match.export_id is not None and match.job_id is not None


def test_the_table_covers_every_outcome() -> None:
    assert {c["outcome"] for c in CASES} == {o.value for o in MailOutcome}


# --- link verdicts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "text", "kept", "reason"),
    [
        (FILE, "Download", True, "allowed host"),
        ("https://na01.mypinpointe.com/x", "", True, "allowed host"),
        ("mailto:help@pinpointe.com", "Help", False, "mailto"),
        ("javascript:alert(1)", "Download", False, "javascript"),
        ("data:text/html,hi", "", False, "data"),
        ("tel:+15555550100", "", False, "tel"),
        ("files/x.json", "", False, "not an absolute"),
        ("http://exports.mypinpointe.com/f.json", "", False, "not https"),
        ("https://evil.example/f.json", "", False, "not in download.allowed_hosts"),
        ("https://evilmypinpointe.com/f.json", "", False, "not in download.allowed_hosts"),
        ("https://mypinpointe.com.evil.example/f", "", False, "not in download.allowed_hosts"),
        ("https://na01.mypinpointe.com@evil.example/", "", False, "user info"),
        ("https://203.0.113.7/f.json", "", False, "IP address"),
        ("https://[2001:db8::1]/f.json", "", False, "IP address"),
        ("https://exports.mypinpointe.com:8443/f.json", "", False, "not in download.allowed_hosts"),
        ("https://na01.mypinpointe.com/unsubscribe.php?M=1", "", False, "unsubscribe"),
        ("https://na01.mypinpointe.com/x?M=1", "Unsubscribe", False, "unsubscribe"),
        ("https://na01.mypinpointe.com/x", "Opt out of these mails", False, "unsubscribe"),
        ("https://na01.mypinpointe.com/preferences.php", "", False, "preferences"),
        ("https://na01.mypinpointe.com/x", "Manage your subscription", False, "preferences"),
        ("https://na01.mypinpointe.com/help/exports", "", False, "help"),
        ("https://na01.mypinpointe.com/x", "Need help?", False, "help"),
        ("https://na01.mypinpointe.com/support/", "", False, "support"),
        ("https://na01.mypinpointe.com/x", "Contact us", False, "support"),
        ("https://na01.mypinpointe.com/privacy", "", False, "privacy"),
        ("https://na01.mypinpointe.com/x", "Terms of service", False, "terms"),
        ("https://na01.mypinpointe.com/display.php?M=1", "", False, "view-in-browser"),
        (
            "https://na01.mypinpointe.com/x",
            "View this email in your browser",
            False,
            "view-in-browser",
        ),
        ("https://na01.mypinpointe.com/x", "Follow us on LinkedIn", False, "social"),
        ("https://na01.mypinpointe.com/images/logo.png", "", False, "logo"),
        ("https://www.mypinpointe.com/", "Pinpointe", False, "home page"),
        ("https://na01.mypinpointe.com/x", "Company logo", False, "logo"),
        ("https://app.mypinpointe.com/login.php", "", False, "login"),
        # words that look auxiliary but are not
        ("https://na01.mypinpointe.com/support-exports/1.json", "", True, "allowed host"),
        ("https://na01.mypinpointe.com/x", "Log in to download your export", True, "allowed host"),
        ("https://na01.mypinpointe.com/?token=abc", "", True, "allowed host"),
    ],
)
def test_link_verdicts(url: str, text: str, kept: bool, reason: str) -> None:
    (verdict,) = judge_links([Link(url, text, "href")], RULES)
    assert (verdict.kept, verdict.url) == (kept, url)
    assert reason in verdict.reason


@pytest.mark.parametrize(
    ("label", "kept", "reason"),
    [
        ("Unsubscribe:", False, "unsubscribe link"),
        ("Need help? See", False, "help link"),
        ("View this email online:", False, "view-in-browser link"),
        ("Sign in to get your file:", True, "allowed host"),
        ("Follow the link:", True, "allowed host"),
        ("Help with your download:", True, "allowed host"),
    ],
)
def test_words_before_a_url_in_running_text(label: str, kept: bool, reason: str) -> None:
    (verdict,) = judge_links([Link("https://na01.mypinpointe.com/x", label, "text")], RULES)
    assert (verdict.kept, verdict.reason) == (kept, reason)


def test_one_verdict_per_distinct_url_in_order() -> None:
    links = [Link(FILE, "Download", "href"), Link("mailto:x@y.z"), Link(FILE, "", "text")]
    assert [v.url for v in judge_links(links, RULES)] == [FILE, "mailto:x@y.z"]


def test_a_tracking_wrapper_gives_way_to_its_target() -> None:
    wrapper = "https://na01.mypinpointe.com/link.php?url=x"
    links = [Link(wrapper, "Download", "href"), Link(FILE, "Download", "unwrapped")]
    verdicts = judge_links(links, RULES)
    assert verdicts[0] == LinkVerdict(
        wrapper, False, "tracking redirect; its target is judged instead"
    )
    assert verdicts[1] == LinkVerdict(FILE, True, "allowed host")


def test_the_target_of_an_unsubscribe_link_is_refused_too() -> None:
    wrapper = "https://na01.mypinpointe.com/unsubscribe.php?redirect=x"
    home = "https://www.mypinpointe.com/thanks"
    verdicts = judge_links([Link(wrapper, "", "href"), Link(home, "", "unwrapped")], RULES)
    assert [(v.kept, v.reason) for v in verdicts] == [
        (False, "unsubscribe link"),
        (False, "unsubscribe link"),
    ]


def test_a_target_also_linked_directly_is_not_tainted_by_an_auxiliary_wrapper() -> None:
    wrapper = "https://na01.mypinpointe.com/unsubscribe.php?redirect=x"
    links = [Link(FILE, "Download", "href"), Link(wrapper, "", "href"), Link(FILE, "", "unwrapped")]
    assert judge_links(links, RULES)[0].kept


# --- the download link --------------------------------------------------------------


def _kept(*urls: str) -> list[LinkVerdict]:
    return [LinkVerdict(url, True, "allowed host") for url in urls]


@pytest.mark.parametrize(
    ("verdicts", "job_id", "url", "reason"),
    [
        ([], None, None, "no acceptable download link"),
        ([LinkVerdict(FILE, False, "not https")], "482913075", None, "no acceptable"),
        (_kept(FILE), None, FILE, "the only acceptable link"),
        (
            _kept("https://a.mypinpointe.com/d/111111", "https://a.mypinpointe.com/d/222222"),
            "222222",
            "https://a.mypinpointe.com/d/222222",
            "names job 222222",
        ),
        (
            _kept("https://a.mypinpointe.com/d?j=111", "https://a.mypinpointe.com/d%3Fj%3D222"),
            "222",
            "https://a.mypinpointe.com/d%3Fj%3D222",
            "names job 222",
        ),
        (
            _kept("https://a.mypinpointe.com/d/2222225", "https://a.mypinpointe.com/d/x222222"),
            "222222",
            None,
            "2 acceptable links and none singled out",
        ),
        (
            _kept("https://a.mypinpointe.com/account", "https://a.mypinpointe.com/f/data.json.gz"),
            None,
            "https://a.mypinpointe.com/f/data.json.gz",
            "to a file",
        ),
        (
            _kept("https://a.mypinpointe.com/link.php?M=1&L=2", "https://a.mypinpointe.com/d/Qk7x"),
            None,
            "https://a.mypinpointe.com/d/Qk7x",
            "not a click tracker",
        ),
        (
            _kept("https://a.mypinpointe.com/r/1", "https://a.mypinpointe.com/ls/click?x=2"),
            None,
            None,
            "2 acceptable links and none singled out",
        ),
        (
            _kept("https://a.mypinpointe.com/a.json", "https://a.mypinpointe.com/b.json"),
            None,
            None,
            "2 acceptable links and none singled out",
        ),
        (
            _kept(
                "https://a.mypinpointe.com/1",
                "https://a.mypinpointe.com/2",
                "https://a.mypinpointe.com/3",
            ),
            "9",
            None,
            "3 acceptable links",
        ),
    ],
)
def test_choose_download_link(
    verdicts: list[LinkVerdict], job_id: str | None, url: str | None, reason: str
) -> None:
    chosen, why = choose_download_link(verdicts, job_id)
    assert chosen == url
    assert reason in why


# --- job IDs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Export 482913075 ready", True),
        ("(482913075)", True),
        ("export_482913075.json", True),
        ("/files/482913075/", True),
        ("JOB-482913075-A", True),
        ("x482913075", False),
        ("4829130751", False),
        ("1482913075", False),
        ("48291307", False),
        ("", False),
    ],
)
def test_known_job_ids_are_whole_tokens(text: str, found: bool) -> None:
    assert bool(find_known_ids([text], ["482913075"])) is found


def test_known_job_ids_ignore_ascii_case_and_keep_non_ascii_text_aligned() -> None:
    assert find_known_ids(["İİİ Job ab-12X done"], ["AB-12x"]) == {"ab-12x"}


def test_job_ids_list_known_ones_first_then_other_candidates() -> None:
    note = _note("Job 999999 and our 482913075", ids=("999999",), links=(Link(FILE),))
    match = match_notification(note, [_export(1, "482913075")], RULES)
    assert match.job_ids == ("482913075", "999999")
    assert match.outcome is MailOutcome.MATCHED


def test_a_known_job_id_is_found_in_a_percent_encoded_link() -> None:
    link = Link("https://na01.mypinpointe.com/r?u=https%3A%2F%2Fx%2F482913075")
    match = match_notification(
        _note("ready", links=(link,)), [_export(1, "482913075"), _export(2, "5")], RULES
    )
    assert match.job_ids == ("482913075",)


def test_short_job_ids_count_only_when_labelled() -> None:
    exports = [_export(1, "42"), _export(2, "77")]
    bare = match_notification(_note("42 files", links=(Link(FILE),)), exports, RULES)
    assert bare.job_ids == ()
    labelled = match_notification(_note("x", links=(Link(FILE),), ids=("42",)), exports, RULES)
    assert labelled.job_ids == ("42",)


# --- outcomes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        (ExportState.SUBMITTED, MailOutcome.MATCHED),
        (ExportState.SUBMIT_UNKNOWN, MailOutcome.MATCHED),
        (ExportState.NOTIFIED, MailOutcome.DUPLICATE),
        (ExportState.DOWNLOADING, MailOutcome.DUPLICATE),
        (ExportState.VERIFIED, MailOutcome.DUPLICATE),
        (ExportState.ARCHIVED, MailOutcome.DUPLICATE),
        (ExportState.ACKNOWLEDGED, MailOutcome.DUPLICATE),
        (ExportState.SUBMIT_FAILED, MailOutcome.REFUSED),
        (ExportState.LINK_EXPIRED, MailOutcome.REFUSED),
        (ExportState.FAILED, MailOutcome.REFUSED),
    ],
)
def test_a_known_job_id_in_every_state(state: ExportState, outcome: MailOutcome) -> None:
    note = _note("Job 482913075", links=(Link(FILE),), ids=("482913075",))
    match = match_notification(note, [_export(7, "482913075", state)], RULES)
    assert (match.outcome, match.export_id, match.job_id) == (outcome, 7, "482913075")
    assert match.download_url == (FILE if outcome is MailOutcome.MATCHED else None)
    if outcome is not MailOutcome.MATCHED:
        assert state.value in match.reason


def test_a_known_job_without_an_acceptable_link_is_refused() -> None:
    note = _note("Job 482913075", links=(Link("http://exports.mypinpointe.com/f"),))
    match = match_notification(note, [_export(1, "482913075")], RULES)
    assert match.outcome is MailOutcome.REFUSED
    assert match.reason == "job 482913075 (export 1): no acceptable download link"


def test_two_of_our_exports_named_is_refused_as_ambiguous() -> None:
    note = _note("Jobs 482913075 and 590174263", links=(Link(FILE),))
    exports = [_export(1, "482913075"), _export(2, "590174263", ExportState.ARCHIVED)]
    match = match_notification(note, exports, RULES)
    assert match.outcome is MailOutcome.REFUSED
    assert "ambiguous" in match.reason and match.export_id is None


def test_a_reason_stays_short_however_many_jobs_are_named() -> None:
    ids = [str(700000 + n) for n in range(40)]
    match = match_notification(
        _note(" ".join(ids)), [_export(n, j) for n, j in enumerate(ids)], RULES
    )
    assert match.outcome is MailOutcome.REFUSED
    assert "and 35 more" in match.reason and len(match.reason) < 120


def test_an_orphaned_submit_adopts_the_one_unknown_job_id() -> None:
    note = _note("Job 604422917 done", links=(Link(ANON),), ids=("604422917",))
    exports = [_export(1, None, ExportState.SUBMIT_UNKNOWN), _export(2, "482913076")]
    match = match_notification(note, exports, RULES)
    assert (match.outcome, match.export_id, match.job_id) == (MailOutcome.MATCHED, 1, "604422917")
    assert "adopted" in match.reason


@pytest.mark.parametrize(
    ("ids", "exports", "reason"),
    [
        (("604422917",), [], "job ID 604422917 is not one of ours"),
        (("604422917", "604422918"), [_export(1, None, ExportState.SUBMITTING)], "are not ours"),
        (
            ("604422917",),
            [
                _export(1, None, ExportState.SUBMITTING),
                _export(2, None, ExportState.SUBMIT_UNKNOWN),
            ],
            "ambiguous",
        ),
        (("604422917",), [_export(1, "482913075")], "not one of ours"),
    ],
)
def test_unknown_job_ids_are_unmatched(
    ids: tuple[str, ...], exports: list[Export], reason: str
) -> None:
    match = match_notification(_note("x", links=(Link(ANON),), ids=ids), exports, RULES)
    assert match.outcome is MailOutcome.UNMATCHED
    assert reason in match.reason
    assert match.download_url is None and match.export_id is None


def test_an_orphan_is_not_adopted_without_a_single_download_link() -> None:
    links = (Link("https://a.mypinpointe.com/1"), Link("https://a.mypinpointe.com/2"))
    note = _note("x", links=links, ids=("604422917",))
    match = match_notification(note, [_export(1, None, ExportState.SUBMIT_UNKNOWN)], RULES)
    assert match.outcome is MailOutcome.UNMATCHED
    assert "2 acceptable links" in match.reason


@pytest.mark.parametrize(
    ("exports", "outcome", "reason"),
    [
        ([_export(1, "482913075")], MailOutcome.MATCHED, "only one waiting"),
        (
            [_export(1, "482913075"), _export(2, "4829")],
            MailOutcome.UNMATCHED,
            "2 exports are waiting",
        ),
        ([], MailOutcome.UNMATCHED, "no export is waiting"),
        (
            [_export(1, "482913075", ExportState.ARCHIVED)],
            MailOutcome.UNMATCHED,
            "no export is waiting",
        ),
        (
            [_export(1, "482913075"), _export(2, None, ExportState.SUBMIT_UNKNOWN)],
            MailOutcome.UNMATCHED,
            "ambiguous",
        ),
        (
            [_export(1, "482913075", ExportState.ACKNOWLEDGED, ANON), _export(2, "590174263")],
            MailOutcome.UNMATCHED,
            "already stored for export 1 (job 482913075, acknowledged): a repeat",
        ),
        (
            [_export(1, "482913075", ExportState.LINK_EXPIRED, ANON), _export(2, "590174263")],
            MailOutcome.UNMATCHED,
            "link_expired",
        ),
    ],
)
def test_a_mail_without_job_id(exports: list[Export], outcome: MailOutcome, reason: str) -> None:
    match = match_notification(_note("Your export is ready", links=(Link(ANON),)), exports, RULES)
    assert match.outcome is outcome
    assert reason in match.reason


def test_a_mail_without_job_id_and_several_links_is_unmatched() -> None:
    links = (Link("https://a.mypinpointe.com/1"), Link("https://a.mypinpointe.com/2"))
    match = match_notification(_note("ready", links=links), [_export(1, "482913075")], RULES)
    assert match.outcome is MailOutcome.UNMATCHED
    assert match.reason == "no job ID and 2 acceptable links and none singled out"


def test_a_mail_with_neither_job_id_nor_kept_link_is_not_a_notification() -> None:
    links = (Link("https://na01.mypinpointe.com/unsubscribe.php"), Link("mailto:x@y.z"))
    match = match_notification(_note("News", links=links), [_export(1, "482913075")], RULES)
    assert match.outcome is MailOutcome.UNMATCHED
    assert match.reason == "not a notification: no job ID and no download link"
    assert len(match.links) == 2
