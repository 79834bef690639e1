"""The read budget: every mail read in a worker process within limits it cannot escape.

The red team's costly mails go through the real worker with the daemon's own limits: the
budget, not the test, bounds their time, and each must come out as the extractor's own
answer (read, or refused by a cap), never as a budget refusal. The backstop itself is
tested with a worker told to misbehave (``tests/loop/budget_targets.py``).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator

import pytest

from inbox_poller.errors import ExtractError, MailTooCostly, ReaderUnavailable
from inbox_poller.loop.budget import (
    PROGRESS_EVERY_S,
    READ_MEMORY_LIMIT,
    START_TIMEOUT_S,
    MailBudget,
    notification_from_json,
    notification_to_json,
)
from inbox_poller.matching.extract import extract
from tests import costly_mails
from tests.costly_mails import COSTLY_MAILS, JOB
from tests.loop.budget_targets import costly

TARGETS = "tests.loop.budget_targets"


@pytest.fixture(scope="module")
def budget() -> Iterator[MailBudget]:
    """One budget with the daemon's limits, shared by the tests of the costly mails."""
    shared = MailBudget()
    yield shared
    shared.close()


def _make(**kwargs: object) -> MailBudget:
    return MailBudget(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def budgets() -> Iterator[list[MailBudget]]:
    made: list[MailBudget] = []
    yield made
    for budget in made:
        budget.close()


# --- the red team's mails, under the daemon's budget --------------------------------------

REFUSED_BY_A_CAP = {
    "folded-from": "header field 'From' is 300,005 bytes (at most 32,768)",
    "encoded-subject": "header field 'Subject' is 280,010 bytes (at most 32,768)",
    "many-parts": "more than 1,000 MIME parts",
}


@pytest.mark.parametrize("name", sorted(REFUSED_BY_A_CAP))
def test_costly_headers_and_parts_are_refused_by_the_parsers_caps(
    budget: MailBudget, name: str
) -> None:
    with pytest.raises(MailTooCostly) as refused:
        budget.read(COSTLY_MAILS[name]())
    assert str(refused.value) == f"too costly to read: {REFUSED_BY_A_CAP[name]}"


def test_a_part_of_unclosed_tags_is_read_and_its_tail_taken_as_text(budget: MailBudget) -> None:
    notification = budget.read(costly_mails.html_anchors())
    assert notification.texts == (("<a " * 40_000).strip(),)
    assert any("start with a tag that never ends" in d for d in notification.defects)


def test_a_bz2_charset_is_never_decompressed(budget: MailBudget) -> None:
    raw = costly_mails.bz2_charset()
    notification = budget.read(raw)
    # the bomb's ~900 compressed bytes, read as windows-1252 text: no gigabyte of zeros
    [text] = notification.texts
    assert text.startswith("BZh9")
    assert len(text) < 2000


def test_a_punycode_charset_is_read_as_the_text_it_is(budget: MailBudget) -> None:
    [text] = budget.read(costly_mails.punycode_charset()).texts
    assert len(text) == 600_000 and text.isascii() and text.isalpha()


def test_distinct_labelled_job_ids_are_all_kept_in_order(budget: MailBudget) -> None:
    candidates = budget.read(costly_mails.job_id_regex()).candidate_job_ids
    assert candidates == tuple(str(100_000 + i) for i in range(22_000))


def test_links_ending_in_a_run_of_extensions_are_read(budget: MailBudget) -> None:
    notification = budget.read(costly_mails.file_extension_regex())
    assert len(notification.links) == 30
    assert notification.candidate_job_ids == ()  # 8 KB is no job ID, extensions or not


def test_a_long_run_of_spaces_after_an_angle_bracket_is_plain_text(budget: MailBudget) -> None:
    assert budget.read(costly_mails.angle_spaces()).texts == ("< x",)


def test_unclosed_comments_are_read_as_text(budget: MailBudget) -> None:
    notification = budget.read(costly_mails.html_comments())
    assert notification.texts == ("<!--" * 60_000,)


def test_nested_anchors_keep_a_bounded_label_each(budget: MailBudget) -> None:
    notification = budget.read(costly_mails.nested_anchors())
    assert {link.url for link in notification.links} == {"https://a.example/x"}
    assert max(len(link.text) for link in notification.links) <= 2 * 16


def test_every_costly_mail_is_answered_by_the_extractor_not_the_backstop(
    budget: MailBudget,
) -> None:
    """No costly mail may need the backstop: its caps are the second line, not the first."""
    refusals: dict[str, str] = {}
    for name, build in COSTLY_MAILS.items():
        try:
            budget.read(build())
        except MailTooCostly as exc:
            refusals[name] = str(exc)
    assert set(refusals) == set(REFUSED_BY_A_CAP), refusals
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)


@pytest.mark.parametrize(
    ("target", "text", "expected"),
    [
        ("from_address", costly_mails.from_address_regex_text(), ""),
        ("from_address", "a" * 245_000 + "@b", ""),
        ("angle_urls", "<" + " \n" * 122_000 + "x", "<" + " \n" * 49 + " "),
        ("job_ids", "Job " * 61_000, ""),
        ("job_ids", "job-" * 61_000 + " Job 123456", "123456"),
        ("file_extensions", "1" + ".json" * 49_000 + "x", "1" + ".json" * 19 + ".jso"),
        ("file_extensions", "1" + ".json" * 49_000, "1"),
    ],
)
def test_each_pattern_over_245_kb_is_linear_within_the_budget(
    budgets: list[MailBudget], target: str, text: str, expected: str
) -> None:
    budget = _make(target=f"{TARGETS}:{target}", time_limit_s=5.0)
    budgets.append(budget)
    notification = budget.read(text.encode("ascii"))
    seen = {
        "from_address": notification.sender or "",
        "angle_urls": "".join(notification.texts)[:100],
        "job_ids": ",".join(notification.candidate_job_ids),
        "file_extensions": notification.subject,
    }[target]
    assert seen == expected


# --- the backstop: time, memory, crashes ---------------------------------------------------


def test_a_mail_over_the_time_limit_is_refused_and_the_next_one_read(
    budgets: list[MailBudget],
) -> None:
    budget = _make(target=f"{TARGETS}:read", time_limit_s=1.0)
    budgets.append(budget)
    pings: list[float] = []
    with pytest.raises(MailTooCostly, match=r"^too costly to read: reading took more than 1 s"):
        budget.read(costly("sleep"), progress=lambda: pings.append(time.monotonic()))
    # the watchdog is fed while the worker is waited for: every slice of the wait
    assert len(pings) >= 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert max(gaps) < 2 * PROGRESS_EVERY_S + 0.25
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)
    assert budget.workers_started == 2


def test_a_busy_loop_is_stopped_too(budgets: list[MailBudget]) -> None:
    budget = _make(target=f"{TARGETS}:read", time_limit_s=1.0)
    budgets.append(budget)
    with pytest.raises(MailTooCostly, match="more than 1 s"):
        budget.read(costly("spin"))
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)


def test_a_mail_over_the_memory_limit_is_refused_and_the_next_one_read(
    budgets: list[MailBudget],
) -> None:
    budget = _make(target=f"{TARGETS}:read", memory_limit=256 << 20)
    budgets.append(budget)
    with pytest.raises(MailTooCostly, match="needs more than 256 MiB of memory"):
        budget.read(costly("hog"))
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)
    assert budget.workers_started == 2


def test_a_mail_that_kills_the_reader_twice_is_refused(budgets: list[MailBudget]) -> None:
    budget = _make(target=f"{TARGETS}:read")
    budgets.append(budget)
    with pytest.raises(MailTooCostly, match="the reading process died twice"):
        budget.read(costly("crash"))
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)
    assert budget.workers_started == 3


def test_a_worker_killed_from_outside_is_replaced_and_the_mail_read(
    budgets: list[MailBudget],
) -> None:
    budget = _make()
    budgets.append(budget)
    budget.start()
    worker = budget._worker
    assert worker is not None
    worker.kill()
    worker.wait()
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)
    assert budget.workers_started == 2


def test_the_worker_runs_limited_with_an_empty_environment(
    budgets: list[MailBudget], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAP_PASSWORD", "hunter2")  # a password_env secret stays home
    budget = _make(target=f"{TARGETS}:read")
    budgets.append(budget)
    seen = json.loads(budget.read(costly("limits")).subject)
    assert seen["limits"]["RLIMIT_AS"] == [READ_MEMORY_LIMIT, READ_MEMORY_LIMIT]
    assert seen["limits"]["RLIMIT_CORE"] == [0, 0]
    assert seen["limits"]["RLIMIT_FSIZE"] == [0, 0]
    assert 0 < seen["limits"]["RLIMIT_CPU"][0] < 60  # ends itself if the daemon is gone
    # -I and env={}: only what the interpreter sets itself
    assert "IMAP_PASSWORD" not in seen["environ"]
    assert set(seen["environ"]) <= {"LC_CTYPE"}


def test_what_a_library_prints_in_the_worker_never_reaches_the_protocol(
    budgets: list[MailBudget],
) -> None:
    budget = _make(target=f"{TARGETS}:read")
    budgets.append(budget)
    assert budget.read(costly("garbage")).subject == "costly"


def test_an_unreadable_mail_is_an_extract_error_as_in_process(budget: MailBudget) -> None:
    with pytest.raises(ExtractError, match="the mail is empty") as refused:
        budget.read(b"  \r\n")
    assert not isinstance(refused.value, MailTooCostly)


def test_a_worker_that_cannot_start_blames_no_mail(budgets: list[MailBudget]) -> None:
    budget = _make(target="tests.loop.no_such_module:read")
    budgets.append(budget)
    with pytest.raises(ReaderUnavailable, match="did not start"):
        budget.read(costly_mails.notification())


def test_a_worker_started_early_serves_the_first_mail(budgets: list[MailBudget]) -> None:
    budget = _make()
    budgets.append(budget)
    budget.start_soon().join(START_TIMEOUT_S)
    assert budget._worker is not None and budget._worker.poll() is None
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)
    assert budget.workers_started == 1


def test_an_early_start_and_the_first_read_start_one_worker_between_them(
    budgets: list[MailBudget],
) -> None:
    budget = _make()
    budgets.append(budget)
    budget.start_soon()  # not joined: whichever takes the lock first starts it
    assert budget.read(costly_mails.notification()).candidate_job_ids == (JOB,)
    assert budget.workers_started == 1


def test_an_early_start_that_fails_is_reported_by_the_first_read(
    budgets: list[MailBudget],
) -> None:
    budget = _make(target="tests.loop.no_such_module:read")
    budgets.append(budget)
    budget.start_soon().join(START_TIMEOUT_S)  # fails on its thread: nothing raised there
    assert budget.workers_started == 0
    with pytest.raises(ReaderUnavailable, match="did not start"):
        budget.read(costly_mails.notification())


def test_the_worker_ends_with_its_budget(budgets: list[MailBudget]) -> None:
    budget = _make()
    budgets.append(budget)
    budget.start()
    worker = budget._worker
    assert worker is not None
    budget.close()
    assert worker.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(worker.pid, 0)


# --- the answer -----------------------------------------------------------------------


def test_the_answer_round_trips_every_field() -> None:
    raw = costly_mails.mail(
        "Job ID: 482913075 https://exports.mypinpointe.com/r?u=https%3A%2F%2Fx.example%2Ff",
        Authentication_Results="mx.example; dmarc=pass header.from=mypinpointe.com",
    )
    notification = extract(raw)
    assert notification.auth_results and notification.from_domain and notification.links
    assert notification_from_json(json.loads(json.dumps(notification_to_json(notification)))) == (
        notification
    )


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"subject": "x"},
        {**notification_to_json(extract(costly_mails.notification())), "texts": [1]},
        {**notification_to_json(extract(costly_mails.notification())), "links": [["a", "b"]]},
        {**notification_to_json(extract(costly_mails.notification())), "sender": {"x": 1}},
    ],
)
def test_a_malformed_answer_is_refused_never_trusted(answer: object) -> None:
    with pytest.raises(MailTooCostly, match="malformed answer"):
        notification_from_json(answer)


def test_closing_during_a_read_blames_no_mail(budgets: list[MailBudget]) -> None:
    budget = _make(target=f"{TARGETS}:read")
    budgets.append(budget)
    budget.start()
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            budget.read(costly("sleep"))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.5)
    started = time.monotonic()
    budget.close()  # the daemon stopping: no wait for the whole budget
    reader.join(5)
    assert time.monotonic() - started < 3
    [error] = outcome
    assert isinstance(error, ReaderUnavailable)
