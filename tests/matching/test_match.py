"""Matching: link verdicts, job IDs, the download link, and every outcome (docs/matching.md)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.ledger.schema import summary_from_json, summary_to_json
from inbox_poller.matching.extract import extract
from inbox_poller.matching.match import (
    MatchOptions,
    awaiting_link,
    match_notification,
    mentioned_exports,
)
from inbox_poller.matching.summary import notification_from_summary, summarize
from inbox_poller.matching.verdicts import judge_links
from inbox_poller.models import (
    Export,
    ExportRequest,
    ExportState,
    Link,
    MailOutcome,
    Notification,
)
from inbox_poller.urlpolicy import HostRule, parse_host_rule

EML_DIR = Path(__file__).parents[1] / "data" / "eml"
CASES: list[dict[str, Any]] = json.loads((EML_DIR / "cases.json").read_text())
CASES_BY_FILE = {c["file"]: c for c in CASES if c["outcome"] == "matched"}
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
    exports = _case_exports(case)
    match = match_notification(notification, exports, RULES)
    assert match.outcome.value == case["outcome"], match.reason
    # the reader hands over the mentions it worked out already: the same decision
    mentions = mentioned_exports(notification, exports)
    assert match_notification(notification, exports, RULES, mentions=mentions) == match
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
    if "pairs" in case:  # a digest: each export with its own link, no single one
        assert {p.job_id: p.download_url for p in match.pairings} == case["pairs"]
        assert match.export_id is None and match.job_id is None
    elif match.outcome is MailOutcome.MATCHED:
        assert match.export_id is not None and match.job_id is not None


def test_the_table_covers_every_outcome() -> None:
    assert {c["outcome"] for c in CASES} == {o.value for o in MailOutcome}


@pytest.mark.parametrize("name", sorted({c["file"] for c in CASES}))
def test_a_mail_rebuilt_from_its_stored_summary_is_judged_the_same(name: str) -> None:
    notification = extract((EML_DIR / name).read_bytes())
    stored = summary_from_json(summary_to_json(summarize(notification)))
    rebuilt = notification_from_summary(stored)
    assert rebuilt.links == notification.links
    assert judge_links(rebuilt.links, RULES) == judge_links(notification.links, RULES)


def test_a_summary_stored_before_via_existed_still_ties_targets_to_wrappers() -> None:
    notification = extract((EML_DIR / "17_tracking_redirect_once.eml").read_bytes())
    row = json.loads(summary_to_json(summarize(notification)))
    row["links"] = [link[:3] for link in row["links"]]
    rebuilt = notification_from_summary(summary_from_json(json.dumps(row)))
    assert [link.via for link in rebuilt.links] == [link.via for link in notification.links]
    match = match_notification(rebuilt, [_export(1, "482913075")], RULES)
    assert match.download_url == CASES_BY_FILE["17_tracking_redirect_once.eml"]["download_url"]


# --- job IDs --------------------------------------------------------------------


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
        # its link expired, and this mail offers another: tried (issue 9, red-team 2)
        (ExportState.LINK_EXPIRED, MailOutcome.MATCHED),
        (ExportState.FAILED, MailOutcome.REFUSED),  # the job failed, not a link
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


# --- digests (issue 9) -------------------------------------------------------------

JOB_A, JOB_B = "482913075", "590174263"
LINK_A = f"https://exports.mypinpointe.com/files/{JOB_A}/data.json.gz?sig=a"
LINK_B = f"https://exports.mypinpointe.com/files/{JOB_B}/data.json.gz?sig=b"
DIGEST = _note(f"Job {JOB_A} and job {JOB_B} are ready", links=(Link(LINK_A), Link(LINK_B)))


def test_a_digest_pairs_each_export_with_its_own_link() -> None:
    match = match_notification(DIGEST, [_export(1, JOB_A), _export(2, JOB_B)], RULES)
    assert match.outcome is MailOutcome.MATCHED
    assert (match.export_id, match.job_id, match.download_url) == (None, None, None)
    assert [(p.export_id, p.job_id, p.outcome, p.download_url) for p in match.pairings] == [
        (1, JOB_A, MailOutcome.MATCHED, LINK_A),
        (2, JOB_B, MailOutcome.MATCHED, LINK_B),
    ]
    assert match.reason.startswith("a digest of 2 of our exports")


def test_a_digest_judges_each_export_in_its_own_state() -> None:
    exports = [_export(1, JOB_A), _export(2, JOB_B, ExportState.ARCHIVED, LINK_B)]
    match = match_notification(DIGEST, exports, RULES)
    assert match.outcome is MailOutcome.MATCHED
    assert [p.outcome for p in match.pairings] == [MailOutcome.MATCHED, MailOutcome.DUPLICATE]
    both_done = [_export(1, JOB_A, ExportState.ACKNOWLEDGED), exports[1]]
    assert match_notification(DIGEST, both_done, RULES).outcome is MailOutcome.DUPLICATE
    neither = [_export(1, JOB_A, ExportState.SUBMIT_FAILED), _export(2, JOB_B, ExportState.FAILED)]
    refused = match_notification(DIGEST, neither, RULES)
    assert refused.outcome is MailOutcome.REFUSED
    assert "2 refused" in refused.reason


@pytest.mark.parametrize(
    ("links", "why"),
    [
        ((Link(LINK_A),), "job B is in no link"),
        ((Link(LINK_A), Link(LINK_B), Link(LINK_A + "&again=1")), "job A is in two links"),
        (
            (Link(f"https://exports.mypinpointe.com/b.zip?jobs={JOB_A},{JOB_B}"),),
            "one link names both",
        ),
        (
            (Link(LINK_A), Link(LINK_B), Link(f"https://x.mypinpointe.com/{JOB_A}-{JOB_B}.zip")),
            "one more link names both",
        ),
        ((Link("http://exports.mypinpointe.com/" + JOB_A), Link(LINK_B)), "job A's link refused"),
    ],
)
def test_anything_less_than_a_one_to_one_pairing_stays_refused(
    links: tuple[Link, ...], why: str
) -> None:
    note = _note(f"Jobs {JOB_A} and {JOB_B}", links=links)
    match = match_notification(note, [_export(1, JOB_A), _export(2, JOB_B)], RULES)
    assert match.outcome is MailOutcome.REFUSED, why
    assert "ambiguous" in match.reason and match.pairings == ()


def test_short_job_ids_are_never_paired() -> None:
    links = (
        Link("https://a.mypinpointe.com/f/42.json"),
        Link("https://a.mypinpointe.com/f/77.json"),
    )
    note = _note("x", links=links, ids=("42", "77"))
    match = match_notification(note, [_export(1, "42"), _export(2, "77")], RULES)
    assert match.outcome is MailOutcome.REFUSED


# --- a link that failed, and a later mail's link (issue 9, red-team finding 2) ------------

SPOOF = "https://na01.mypinpointe.com/exports/whatever.json"


def _failed(state: ExportState, link: str | None = SPOOF, *, link_failed: bool = True) -> Export:
    export = _export(7, JOB_A, state, link)
    return replace(export, failed_links=(link,) if link and link_failed else ())


def test_a_duplicate_keeps_its_new_link_while_the_export_is_in_progress() -> None:
    note = _note(f"Job {JOB_A}", links=(Link(LINK_A),))
    for state in (ExportState.NOTIFIED, ExportState.DOWNLOADING, ExportState.VERIFIED):
        match = match_notification(note, [_export(7, JOB_A, state, SPOOF)], RULES)
        assert match.outcome is MailOutcome.DUPLICATE
        assert match.download_url is None  # nothing to download now
        assert match.pairings[0].download_url == LINK_A  # kept in case the current one fails
        assert "kept in case the current one fails" in match.reason
    same = match_notification(note, [_export(7, JOB_A, ExportState.NOTIFIED, LINK_A)], RULES)
    assert same.pairings[0].download_url is None
    done = match_notification(note, [_export(7, JOB_A, ExportState.ARCHIVED, SPOOF)], RULES)
    assert done.pairings[0].download_url is None


@pytest.mark.parametrize(
    ("export", "outcome", "reason"),
    [
        (_failed(ExportState.LINK_EXPIRED), MailOutcome.MATCHED, "offers another link"),
        (_failed(ExportState.FAILED), MailOutcome.MATCHED, "offers another link"),
        (_failed(ExportState.FAILED, link_failed=False), MailOutcome.REFUSED, "not acted on"),
        (_failed(ExportState.FAILED, None), MailOutcome.REFUSED, "not acted on"),
        (_failed(ExportState.LINK_EXPIRED, LINK_A), MailOutcome.REFUSED, "already failed"),
    ],
)
def test_a_later_mail_for_an_export_whose_link_failed(
    export: Export, outcome: MailOutcome, reason: str
) -> None:
    note = _note(f"Job {JOB_A}", links=(Link(LINK_A),))
    match = match_notification(note, [export], RULES)
    assert (match.outcome, match.export_id) == (outcome, 7)
    assert reason in match.reason
    assert match.download_url == (LINK_A if outcome is MailOutcome.MATCHED else None)


def test_a_link_that_failed_before_is_never_offered_again() -> None:
    export = replace(_failed(ExportState.LINK_EXPIRED, LINK_B), failed_links=(LINK_A, LINK_B))
    note = _note(f"Job {JOB_A}", links=(Link(LINK_A),))
    assert match_notification(note, [export], RULES).outcome is MailOutcome.REFUSED


def test_a_resubmitted_export_is_not_notified_again() -> None:
    note = _note(f"Job {JOB_A}", links=(Link(LINK_A),))
    successor = replace(_export(8, "111222333"), replaces=7)
    match = match_notification(note, [_failed(ExportState.LINK_EXPIRED), successor], RULES)
    assert match.outcome is MailOutcome.REFUSED and "resubmitted" in match.reason
    told = MatchOptions(resubmitted=frozenset({7}))
    alone = match_notification(note, [_failed(ExportState.LINK_EXPIRED)], RULES, told)
    assert alone.outcome is MailOutcome.REFUSED


def test_a_job_less_mail_may_bring_another_link_to_the_only_export_waiting() -> None:
    note = _note("Your export is ready", links=(Link(ANON),))
    match = match_notification(note, [_failed(ExportState.LINK_EXPIRED)], RULES)
    assert (match.outcome, match.export_id, match.download_url) == (MailOutcome.MATCHED, 7, ANON)
    assert "its link failed" in match.reason
    repeat = _note("Your export is ready", links=(Link(SPOOF),))
    assert (
        "a repeat" in match_notification(repeat, [_failed(ExportState.LINK_EXPIRED)], RULES).reason
    )
    two = [_failed(ExportState.LINK_EXPIRED), _export(8, "590174263")]
    assert "2 exports are waiting" in match_notification(note, two, RULES).reason


def test_awaiting_link_leaves_out_what_no_notification_can_change() -> None:
    exports = [
        _export(1, "1001"),
        _export(2, None, ExportState.SUBMIT_UNKNOWN),
        replace(_failed(ExportState.LINK_EXPIRED), export_id=3),
        replace(_failed(ExportState.LINK_EXPIRED), export_id=4),
        replace(_export(5, "1005"), replaces=4),
        replace(_failed(ExportState.FAILED, link_failed=False), export_id=6),
        _export(7, "1007", ExportState.ARCHIVED),
    ]
    assert [e.export_id for e in awaiting_link(exports)] == [1, 2, 3, 5]
    assert [e.export_id for e in awaiting_link(exports, {3})] == [1, 2, 5]


# --- switches: by elimination, adoption (issue 9) -------------------------------------


def test_matching_by_elimination_can_be_switched_off() -> None:
    off = MatchOptions(by_elimination=False)
    note = _note("Your export is ready", links=(Link(ANON),))
    match = match_notification(note, [_export(1, JOB_A)], RULES, off)
    assert match.outcome is MailOutcome.UNMATCHED
    assert "[matching] by_elimination" in match.reason
    named = _note(f"Job {JOB_A}", links=(Link(ANON),))
    assert match_notification(named, [_export(1, JOB_A)], RULES, off).outcome is (
        MailOutcome.MATCHED
    )


def test_adoption_needs_leave_to_adopt() -> None:
    note = _note("Job 604422917 done", links=(Link(ANON),), ids=("604422917",))
    exports = [_export(1, None, ExportState.SUBMIT_UNKNOWN)]
    refused = match_notification(note, exports, RULES, MatchOptions(may_adopt=False))
    assert refused.outcome is MailOutcome.UNMATCHED
    assert "authenticated sender" in refused.reason
    assert match_notification(note, exports, RULES).outcome is MailOutcome.MATCHED
