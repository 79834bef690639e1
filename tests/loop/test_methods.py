"""Every Pinpointe async export method, in every format its documentation allows, end to end.

Submitted from the CLI (a separate process) and from a schedule, against the simulator
and the real Dovecot: each is archived exactly once with a manifest line that says
method, format, records and checksum; a second pass changes nothing. Red-team payloads
(a truncated CSV, a ragged row, XML entity bombs and external entities, an HTML page for
a JSON request) are refused with a clear reason and nothing archived.
"""

from __future__ import annotations

import hashlib
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inbox_poller.archive_reader import ArchiveReader, verify
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportState
from inbox_poller.sandbox.simulator.jobs import Faults
from inbox_poller.wiring import build_submitter
from tests.plugins.loop import LoopEnv

pytestmark = pytest.mark.dovecot

CASES = [
    ("GetNewsletterContactDataSummaryAsync", ["--stat", "4711"], "json", True),
    ("GetNewsletterStatsAsync", ["--list", "12"], "json", True),
    ("GetNewsletterStatsAsync", ["--list", "12"], "csv", True),
    ("GetNewsletterStatsAsync", ["--list", "12"], "xml", True),
    (
        "GetListSubscribersAsync",
        ["--list", "3", "--list", "5", "--status", "active", "--custom-fields", "all"],
        "json",
        True,
    ),
    ("GetSegmentSubscribersAsync", ["--segment", "7", "--include-membership"], "json", False),
    ("GetSegmentSubscribersAsync", ["--segment", "7", "--segment", "8"], "csv", False),
    ("GetTagSubscribersAsync", ["--tag", "9"], "json", False),
    ("GetTagSubscribersAsync", ["--tag", "9", "--status", "bounced"], "csv", False),
]
RECORDS = 57


def _submit(env: LoopEnv, method: str, args: list[str], fmt: str, dated: bool) -> str:
    command = ["submit", "--method", method, *args]
    if fmt != "json":
        command += ["--format", fmt]
    if dated:
        command += ["--start", "20261101", "--end", "20261102"]
    result = env.cli(*command)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    env.sim.job(job_id).wait_delivered(30)
    return job_id


def _files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("method", "args", "fmt", "dated"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES]
)
def test_each_method_and_format_is_archived_once_from_the_cli(
    loop_env: LoopEnv, method: str, args: list[str], fmt: str, dated: bool
) -> None:
    loop_env.sim.payload_records = RECORDS
    job_id = _submit(loop_env, method, args, fmt, dated)
    job = loop_env.sim.job(job_id)
    assert job.method == method and job.format == fmt
    if method == "GetNewsletterStatsAsync":
        assert job.details["listid"] == 12  # an int, as its page says
        assert job.details["startdate"] == "2026-11-01T00:00:00Z"
        assert job.details["enddate"] == "2026-11-01T23:59:59Z"
    parts = loop_env.loop()
    try:
        report = parts.poller.run_once(parts.mailbox)
        assert report.archived == [job_id], report
        before = _files(loop_env.archive_dir)
        again = parts.poller.run_once(parts.mailbox)
        assert again.archived == [] and again.failed == []
        assert _files(loop_env.archive_dir) == before
    finally:
        parts.close()

    (line,) = loop_env.manifest()
    assert line["method"] == method
    assert line["format"] == fmt and line["requested_format"] == fmt
    assert line["records"] == job.records == RECORDS
    assert line["sha256"] == job.sha256
    assert line["path"].startswith(f"{method}/") and line["path"].endswith(f"_job-{job_id}.{fmt}")
    reader = ArchiveReader(loop_env.archive_dir)
    (entry,) = reader.manifest()
    records = list(reader.records(entry))
    assert len(records) == RECORDS
    assert all(isinstance(value, str) for value in records[0].values())
    assert verify(loop_env.archive_dir).ok
    exports = loop_env.cli("exports")
    assert exports.returncode == 0 and job_id in exports.stdout


def test_a_json_body_for_a_csv_request_is_stored_as_json(loop_env: LoopEnv) -> None:
    body = b'{"status":"SUCCESS","data":{"item":[{"a":"1"},{"a":"2"}]}}\n'
    loop_env.sim.faults_for_next_job(Faults(replace_body=body))
    job_id = _submit(loop_env, "GetSegmentSubscribersAsync", ["--segment", "7"], "csv", False)
    parts = loop_env.loop()
    try:
        assert parts.poller.run_once(parts.mailbox).archived == [job_id]
    finally:
        parts.close()
    (line,) = loop_env.manifest()
    assert line["format"] == "json" and line["requested_format"] == "csv"
    assert line["path"].endswith(".json") and line["records"] == 2


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<response><data><item>&lol3;</item></data></response>
"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<response><data><item>&xxe;</item></data></response>
"""
HTML = b"<!DOCTYPE html>\n<html><head><title>Login</title></head><body>Sign in</body></html>\n"

RED_TEAM = [
    ("GetNewsletterStatsAsync", ["--list", "12"], "csv", b"a,b\r\n1,2\r\n3,", "truncated"),
    ("GetNewsletterStatsAsync", ["--list", "12"], "csv", b'a,b\r\n"1,2\r\n', "unexpected end"),
    ("GetNewsletterStatsAsync", ["--list", "12"], "csv", b"a,b\r\n1,2\r\n3,4,5\r\n", "3 columns"),
    ("GetNewsletterStatsAsync", ["--list", "12"], "xml", BOMB, "DTDForbidden"),
    ("GetNewsletterStatsAsync", ["--list", "12"], "xml", EXTERNAL, "DTDForbidden"),
    ("GetNewsletterStatsAsync", ["--list", "12"], "json", HTML, "an HTML page arrived"),
    ("GetNewsletterContactDataSummaryAsync", ["--stat", "4711"], "json", HTML, "HTML page"),
]


@pytest.mark.parametrize(
    ("method", "args", "fmt", "body", "reason"),
    RED_TEAM,
    ids=["truncated-csv", "open-quote", "ragged-csv", "xml-bomb", "xml-external", "html", "html2"],
)
def test_a_bad_payload_is_refused_with_a_reason_and_nothing_archived(
    loop_env: LoopEnv, method: str, args: list[str], fmt: str, body: bytes, reason: str
) -> None:
    loop_env.sim.faults_for_next_job(Faults(replace_body=body))
    job_id = _submit(loop_env, method, args, fmt, method != "GetSegmentSubscribersAsync")
    parts = loop_env.loop()
    try:
        report = parts.poller.run_once(parts.mailbox)
        assert report.archived == [] and report.failed, report
        export = parts.store.export_by_job_id(job_id)
    finally:
        parts.close()
    assert export is not None
    assert export.state is ExportState.FAILED
    assert reason in (export.reason or ""), export.reason
    assert loop_env.manifest() == []
    assert [p for p in loop_env.archive_dir.rglob("*") if p.is_file()] == []


SCHEDULES = """
[[export]]
name = "contact"
stat = "4711"
cron = "0 4 * * *"

[[export]]
name = "stats-xml"
method = "GetNewsletterStatsAsync"
list = 12
format = "xml"
cron = "0 4 * * *"

[[export]]
name = "stats-csv"
method = "GetNewsletterStatsAsync"
list = 12
format = "csv"
cron = "0 4 * * *"

[[export]]
name = "list-subscribers"
method = "GetListSubscribersAsync"
list = [3, 5]
status = "active"
include_membership = true
cron = "0 4 * * *"

[[export]]
name = "segment"
method = "GetSegmentSubscribersAsync"
segment = [7]
custom_fields = "all"
format = "csv"
cron = "0 4 * * *"
window = "none"

[[export]]
name = "tag"
method = "GetTagSubscribersAsync"
tag = [9]
cron = "0 4 * * *"
window = "none"

[[export]]
name = "stats-json"
method = "GetNewsletterStatsAsync"
list = 12
cron = "0 4 * * *"

[[export]]
name = "segment-json"
method = "GetSegmentSubscribersAsync"
segment = 7
cron = "0 4 * * *"
window = "none"

[[export]]
name = "tag-csv"
method = "GetTagSubscribersAsync"
tag = [9, 10]
status = "unsubscribed"
format = "csv"
cron = "0 4 * * *"
window = "none"
"""


def test_every_method_from_a_schedule_is_archived_once(loop_env: LoopEnv) -> None:
    loop_env.config_path.write_text(
        loop_env.config_path.read_text(encoding="utf-8") + textwrap.dedent(SCHEDULES),
        encoding="utf-8",
    )
    config = loop_env.config()
    now = datetime(2026, 11, 2, 4, 0, 30, tzinfo=UTC)
    with Store(config.state_path) as store:
        submitter = build_submitter(config, store)
        first = submitter.submit_due(config.schedules, now)
        # a second fire of the same windows and a restart submit nothing twice
        assert submitter.submit_due(config.schedules, now + timedelta(minutes=5)) == []
    assert len(first) == 9
    jobs = {export.job_id or "" for export in first}
    for job_id in jobs:
        assert job_id is not None
        loop_env.sim.job(job_id).wait_delivered(30)
    with Store(config.state_path) as store:
        assert build_submitter(config, store).submit_due(config.schedules, now) == []
    parts = loop_env.loop()
    try:
        report = parts.poller.run_once(parts.mailbox)
        assert sorted(report.archived) == sorted(jobs), report
        assert parts.poller.run_once(parts.mailbox).archived == []
    finally:
        parts.close()
    lines = loop_env.manifest()
    assert sorted((line["method"], line["format"]) for line in lines) == sorted(
        [
            ("GetNewsletterContactDataSummaryAsync", "json"),
            ("GetNewsletterStatsAsync", "xml"),
            ("GetNewsletterStatsAsync", "csv"),
            ("GetListSubscribersAsync", "json"),
            ("GetSegmentSubscribersAsync", "csv"),
            ("GetTagSubscribersAsync", "json"),
            ("GetNewsletterStatsAsync", "json"),
            ("GetSegmentSubscribersAsync", "json"),
            ("GetTagSubscribersAsync", "csv"),
        ]
    )
    assert all(line["records"] == loop_env.sim.payload_records for line in lines)
    assert verify(loop_env.archive_dir).ok


def test_a_sends_schedule_archives_each_send_once_across_restarts(loop_env: LoopEnv) -> None:
    loop_env.config_path.write_text(
        loop_env.config_path.read_text(encoding="utf-8")
        + '\n[[export]]\nname = "recent-sends-daily"\nsends = "last-7-days"\n'
        'cron = "0 4 * * *"\nwindow = "previous-day"\n',
        encoding="utf-8",
    )
    config = loop_env.config()
    now = datetime.now(UTC)
    started = int(now.timestamp())
    loop_env.sim.sends = [
        {"newsletterid": nid, "name": name, "statid": stat, "starttime": str(started - age)}
        for nid, name, stat, age in (
            ("31", "Spring", "4711", 3600),
            ("32", "Summer", "4712", 86400),
            ("33", "Old", "4000", 30 * 86400),
        )
    ]
    with Store(config.state_path) as store:
        first = build_submitter(config, store).submit_due(config.schedules, now)
    with Store(config.state_path) as store:  # a restart
        assert build_submitter(config, store).submit_due(config.schedules, now) == []
    assert sorted(export.request.stat for export in first) == ["4711", "4712"]
    for export in first:
        assert export.job_id is not None
        loop_env.sim.job(export.job_id).wait_delivered(30)
    parts = loop_env.loop()
    try:
        assert len(parts.poller.run_once(parts.mailbox).archived) == 2
    finally:
        parts.close()
    shown = loop_env.cli("exports")
    assert "schedule recent-sends-daily, send 4711 (newsletter 31 'Spring'" in shown.stdout
    assert sorted(line["stat"] for line in loop_env.manifest()) == ["4711", "4712"]
