"""Job IDs: what a mail labels as one, and known job IDs searched for as whole tokens."""

from __future__ import annotations

import random
import string

import pytest

from inbox_poller.matching.jobids import (
    ascii_lower,
    find_candidate_job_ids,
    find_known_ids,
    header_job_ids,
    url_job_ids,
)
from inbox_poller.models import Link

# --- candidates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Job ID: 123456", ["123456"]),
        ("job #123456 done", ["123456"]),
        ("jobid=123456", ["123456"]),
        ("JobId: AB-12.cd", ["AB-12.cd"]),
        ("job_id 123456", ["123456"]),
        ("Job 123456 finished.", ["123456"]),
        ("Your export 123456 is ready", ["123456"]),
        ("export id 123456", ["123456"]),
        ("Export-ID: 123456", ["123456"]),
        ("Async job 123456", ["123456"]),
        ("Request ID: 778899", ["778899"]),
        ('{"jobId": "123456"}', ["123456"]),
        ("Auftragsnummer (Job-ID): 123456", ["123456"]),
        ("Votre export n° 123456 est prêt", ["123456"]),
        ("Your export “123456” is ready", ["123456"]),
        ("Job No. 123456", ["123456"]),
        ("Job IDs: 111222, 333444 and 555666", ["111222", "333444", "555666"]),
        ("Job ID: 123456. Job ID: 123456", ["123456"]),
        # not job IDs
        ("Your export is ready", []),
        ("Export 2025-09-01 ready", []),
        ("Your export (1.2 MB) is ready", []),
        ("Export 100% complete", []),
        ("Request 2 of 3", []),
        ("Stat ID: 4711", []),
        ("Job: Export of stat 4711", []),
        ("Job 12", []),
        ("See https://a.mypinpointe.com/export_123456.json", []),
    ],
)
def test_labelled_job_ids_in_text(text: str, ids: list[str]) -> None:
    assert list(find_candidate_job_ids(text, [], [])) == ids


@pytest.mark.parametrize(
    ("url", "ids"),
    [
        ("https://a.mypinpointe.com/d?jobid=123456&sig=x", ["123456"]),
        ("https://a.mypinpointe.com/d?job_id=123456", ["123456"]),
        ("https://a.mypinpointe.com/d?jobId=123456", ["123456"]),
        ("https://a.mypinpointe.com/d?export_id=A-123", ["A-123"]),
        ("https://a.mypinpointe.com/d?Job-ID=123456", ["123456"]),
        ("https://a.mypinpointe.com/jobs/123456/file.json", ["123456"]),
        ("https://a.mypinpointe.com/d?id=123456&m=123456", []),
        ("https://a.mypinpointe.com/exports/2025/09/f.json", []),
    ],
)
def test_job_ids_labelled_in_links(url: str, ids: list[str]) -> None:
    assert url_job_ids(url) == ids
    assert list(find_candidate_job_ids("", [], [Link(url)])) == ids


@pytest.mark.parametrize(
    ("name", "value", "ids"),
    [
        ("X-Job-ID", "482913075", ["482913075"]),
        ("X-Pinpointe-Export-Id", "<482913075>", ["482913075"]),
        ("X-Async-Job", "a1 b2 c33 d44 e55 f66 g77", ["c33", "d44", "e55", "f66", "g77"]),
        ("X-Mailer", "482913075", []),
        ("Job-ID", "482913075", []),
    ],
)
def test_job_ids_from_vendor_headers(name: str, value: str, ids: list[str]) -> None:
    assert header_job_ids([(name, value)]) == ids


# --- known job IDs --------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Job ID: AB-12x",
        "already lower 123",
        "İstanbul JOB 42",
        "ÀÉÎ ẞ ß KELVIN \u212a",
        "\x00Z\x7f",
    ],
)
def test_ascii_lower_changes_ascii_letters_only_and_keeps_every_index(text: str) -> None:
    table = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
    assert ascii_lower(text) == text.translate(table)


def _whole_tokens(texts: list[str], job_ids: list[str]) -> set[str]:
    """The rule, written plainly: a job ID at a position where no alphanumeric ASCII
    character precedes it and, if it ends with one, none follows."""
    found = set()
    for job_id in {j.lower() for j in job_ids if j}:
        if not job_id[0].isascii() or not job_id[0].isalnum():
            continue  # never found bare: it does not start with an alphanumeric run
        for text in texts:
            lower = text.translate(str.maketrans(string.ascii_uppercase, string.ascii_lowercase))
            for start in range(len(lower)):
                before = lower[start - 1] if start else ""
                end = start + len(job_id)
                after = lower[end] if end < len(lower) else ""
                if (
                    lower.startswith(job_id, start)
                    and not (before.isascii() and before.isalnum())
                    and not (after.isascii() and after.isalnum() and job_id[-1].isalnum())
                ):
                    found.add(job_id)
    return found


def test_known_job_ids_are_found_as_the_plain_rule_finds_them() -> None:
    # find_known_ids looks up only the runs that start a job ID; it must find what
    # scanning every position finds, on texts dense with near misses
    rnd = random.Random(13)
    alphabet = "ab1-_.X0 9Z/é?=%"
    for _ in range(3000):
        texts = ["".join(rnd.choices(alphabet, k=rnd.randint(0, 40))) for _ in range(3)]
        ids = ["".join(rnd.choices("ab1-_.X09", k=rnd.randint(1, 6))) for _ in range(4)]
        ids += [t[i : i + rnd.randint(1, 6)] for t in texts if t for i in [rnd.randrange(len(t))]]
        assert find_known_ids(texts, ids) == _whole_tokens(texts, ids), (texts, ids)
