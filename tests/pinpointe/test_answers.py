"""Reading job statuses and the account out of a successful answer's ``data``, pure."""

from __future__ import annotations

import pytest

from inbox_poller.errors import ApiError
from inbox_poller.pinpointe.answers import describe_account, parse_job_statuses
from inbox_poller.ports import JOB_NOT_FOUND

# ---- other parsers --------------------------------------------------------------------------

STATUS_CASES: list[tuple[str, object, list[str], dict[str, str]]] = [
    (
        "item list",
        {"item": [{"jobid": "1", "status": "Waiting"}, {"jobid": "2", "status": "FAILED"}]},
        ["1", "2", "3"],
        {"1": "waiting", "2": "failed", "3": JOB_NOT_FOUND},
    ),
    ("bare list", [{"JobId": 5, "JobStatus": "complete"}], ["5"], {"5": "complete"}),
    ("single unlabelled", {"status": "processing"}, ["9"], {"9": "processing"}),
    (
        "mapping",
        {"7": "waiting", "8": {"status": "done"}},
        ["7", "8"],
        {"7": "waiting", "8": "done"},
    ),
    ("listing all", {"item": [{"id": "4", "state": "Queued"}]}, [], {"4": "queued"}),
]


@pytest.mark.parametrize(
    ("data", "job_ids", "expected"), [c[1:] for c in STATUS_CASES], ids=[c[0] for c in STATUS_CASES]
)
def test_job_statuses_are_read_from_every_plausible_shape(
    data: object, job_ids: list[str], expected: dict[str, str]
) -> None:
    assert parse_job_statuses(data, job_ids) == expected


@pytest.mark.parametrize("data", [None, {}, {"item": []}, "waiting", [{"foo": "bar"}]])
def test_an_unreadable_status_answer_is_an_error_not_all_jobs_missing(data: object) -> None:
    with pytest.raises(ApiError) as caught:
        parse_job_statuses(data, ["1", "2"])
    assert caught.value.definitive is False


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"userid": "12", "username": "acme"}, "authenticated as acme (user id 12)"),
        ({"user_id": 12, "name": "acme"}, "authenticated as acme (user id 12)"),
        ({"item": [{"UserID": "3", "UserName": "x"}]}, "authenticated as x (user id 3)"),
        ("ok", "authenticated"),
        (None, "authenticated"),
    ],
)
def test_account_description(data: object, expected: str) -> None:
    assert describe_account(data) == expected
