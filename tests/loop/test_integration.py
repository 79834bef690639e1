"""The whole loop against a real Dovecot and the Pinpointe simulator over verified HTTPS.

Every test here needs Dovecot: without it they are skipped on a developer's
machine and fail in CI (see tests/plugins/dovecot.py).
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from inbox_poller.crashpoints import CRASH_EXIT_STATUS, POINTS
from inbox_poller.download.fetcher import SafeDownloader
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest, ExportState
from inbox_poller.sandbox.simulator.jobs import Faults
from inbox_poller.wiring import build_submitter
from tests.costly_mails import COSTLY_MAILS
from tests.plugins.loop import LoopEnv
from tests.plugins.powerloss import export_states, lose_unsynced
from tests.plugins.promtool import parse, value

pytestmark = pytest.mark.dovecot

KEYWORD = b"$ExportArchived"


def _state(env: LoopEnv, job_id: str) -> ExportState:
    export = Store(env.root / "state" / "state.db").export_by_job_id(job_id)
    assert export is not None
    return export.state


def test_full_loop_through_the_cli(server_loop_env: LoopEnv) -> None:
    # on Dovecot and on Courier (INBOX. namespace, no MOVE), with processed_folder =
    # "Processed": Courier refuses that name as written; INBOX.Processed is used there
    env = server_loop_env
    job_id = env.submit()
    served = env.sim.job(job_id)

    first = env.cli("run", "--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "archived 1, acknowledged 1" in first.stdout

    [path] = env.archived_files()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256
    assert path.stat().st_mode & 0o777 == 0o600
    [line] = env.manifest()
    assert line["job_id"] == job_id
    assert line["sha256"] == served.sha256
    assert line["bytes"] == served.bytes
    assert line["records"] == served.records
    assert (line["stat"], line["startdate"], line["enddate"]) == ("4242", "20261101", "20261102")
    assert line["method"] == "GetNewsletterContactDataSummaryAsync"
    assert env.archive_dir / line["path"] == path
    assert line["message_id"].startswith("<export-")
    for key in ("submitted_at", "archived_at"):
        assert line[key]
    # acknowledged last: moved out of the folder, with the keyword, never marked \Seen
    assert env.messages() == {}
    [flags] = env.messages(env.processed).values()
    assert KEYWORD in flags
    assert b"\\Seen" not in flags
    assert _state(env, job_id) is ExportState.ACKNOWLEDGED

    second = env.cli("run", "--once")
    assert second.returncode == 0
    assert "read 0 mail(s)" in second.stdout
    assert "archived 0, acknowledged 0" in second.stdout
    assert len(env.manifest()) == 1
    assert env.archived_files() == [path]


def test_a_processed_folder_that_cannot_be_created_never_stops_archiving(
    loop_env: LoopEnv,
) -> None:
    env = loop_env
    env.write_config(move=False, imap_extra='processed_folder = "~Processed"')  # refused
    job_id = env.submit()

    first = env.cli("run", "--once")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "archived 1, acknowledged 0" in first.stdout
    assert len(env.manifest()) == 1
    assert _state(env, job_id) is ExportState.ARCHIVED
    [flags] = env.messages().values()  # the keyword is stored; the mail is not moved
    assert KEYWORD in flags
    status = env.cli("status", "--json")
    problems = json.loads(status.stdout)["problems"]
    assert any(
        "archived mail cannot be acknowledged" in p and "Invalid mailbox name" in p
        for p in problems
    ), problems

    env.write_config()  # fixed: the acknowledgement is retried and succeeds
    second = env.cli("run", "--once")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "archived 0, acknowledged 1" in second.stdout
    assert env.messages() == {}
    assert _state(env, job_id) is ExportState.ACKNOWLEDGED
    problems = json.loads(env.cli("status", "--json").stdout)["problems"]
    assert not any("acknowledged" in p for p in problems), problems


def test_every_notification_style_is_archived(loop_env: LoopEnv) -> None:
    from inbox_poller.sandbox.simulator.notifications import STYLES

    env = loop_env
    jobs = []
    for number, style in enumerate(sorted(STYLES)):
        env.sim.notification_style = style
        jobs.append((style, env.submit(stat=str(100 + number))))
    parts = env.loop()
    report = parts.poller.run_once(parts.mailbox)
    archived = set(report.archived)
    no_job_id_styles = {style for style, _ in jobs if "no_job" in style}
    expected = {job for style, job in jobs if style not in no_job_id_styles}
    assert expected <= archived, report
    for line in env.manifest():
        assert line["sha256"] == env.sim.job(line["job_id"]).sha256


def test_uidvalidity_change_rescans_without_rearchiving(loop_env: LoopEnv) -> None:
    env = loop_env
    env.write_config(move=False)
    job_id = env.submit()
    assert env.cli("run", "--once").returncode == 0
    [flags] = env.messages().values()
    assert KEYWORD in flags
    raw = env.sim.job(job_id).mail
    assert raw is not None
    # delete and re-create the folder: Dovecot gives it a new, larger UIDVALIDITY
    env.dovecot.delete_folder(env.folder)
    env.dovecot.create_folder(env.folder)
    env.dovecot.append(env.folder, raw)

    result = env.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    assert "read 1 mail(s)" in result.stdout
    assert "archived 0, acknowledged 1" in result.stdout
    assert len(env.archived_files()) == 1
    assert len(env.manifest()) == 1
    [flags] = env.messages().values()
    assert KEYWORD in flags


def _hostile(env: LoopEnv, job_id: str, link: str) -> bytes:
    return (
        "From: Pinpointe <noreply@mypinpointe.example>\r\n"
        "To: exports@inbox.example\r\n"
        f"Subject: Your export {job_id} is ready\r\n"
        f"Message-ID: <hostile-{abs(hash(link))}@evil.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Download your file: {link}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("https://downloads.evil.example/x.json", "not in download.allowed_hosts"),
        ("http://localhost:{port}/exports/x.json", "not https"),
        ("https://user@localhost:{port}/exports/x.json", "user info"),
        ("https://10.1.2.3/exports/x.json", "IP address"),
    ],
)
def test_hostile_links_are_refused_and_leave_nothing(
    loop_env: LoopEnv, link: str, reason: str
) -> None:
    env = loop_env
    env.sim.send_notifications = False
    parts = env.loop()
    export = build_submitter(env.config(), parts.store).submit(ExportRequest("77"))
    assert export.job_id is not None
    job_id = export.job_id
    env.dovecot.append(env.folder, _hostile(env, job_id, link.format(port=env.sim.port)))
    report = parts.poller.run_once(parts.mailbox)
    assert report.archived == []
    assert len(report.refused) == 1
    assert reason in report.refused[0]
    assert env.archived_files() == []
    assert env.sim.job(job_id).requests == []  # nothing was fetched
    assert _state(env, job_id) is ExportState.SUBMITTED  # still waiting for the real mail
    [flags] = env.messages().values()
    assert KEYWORD not in flags  # left in place, untouched


def test_unknown_job_id_is_left_in_place_and_logged_once(loop_env: LoopEnv) -> None:
    env = loop_env
    env.submit()
    stranger = _hostile(env, "31337", f"https://{env.sim.host_rule}/exports/other.json")
    env.dovecot.append(env.folder, stranger)
    parts = env.loop()
    report = parts.poller.run_once(parts.mailbox)
    assert report.unmatched == 1
    assert len(report.archived) == 1
    assert len(env.messages()) == 1  # the stranger stays, the notification was moved
    again = parts.poller.run_once(parts.mailbox)
    assert (again.mails_seen, again.unmatched) == (0, 0)


def test_redirect_to_a_private_address_is_refused_before_connecting(loop_env: LoopEnv) -> None:
    env = loop_env
    internal = "metadata.internal.test"
    env.write_config(download_extra="")
    config_text = env.config_path.read_text(encoding="utf-8")
    env.config_path.write_text(
        config_text.replace(
            f'allowed_hosts = ["{env.sim.host_rule}"]',
            f'allowed_hosts = ["{env.sim.host_rule}", "{internal}:{env.sim.port}"]',
        ),
        encoding="utf-8",
    )
    env.sim.faults_for_next_job(Faults(redirect_to=f"https://{internal}:{env.sim.port}/x.json"))
    job_id = env.submit()
    parts = env.loop()
    looked_up: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        looked_up.append(host)
        # the cloud metadata address: link-local, refused even with allow_private_addresses
        return ["169.254.169.254"] if host == internal else ["127.0.0.1"]

    config = env.config()
    parts.archiver.downloader = SafeDownloader(
        config.download, ca_file=config.download_ca, resolver=resolver
    )
    report = parts.poller.run_once(parts.mailbox)
    assert report.archived == []
    assert internal in looked_up
    assert any("169.254.169.254" in line for line in report.failed), report.failed
    assert env.archived_files() == []
    assert env.part_files() == []
    assert _state(env, job_id) is ExportState.FAILED
    assert len(env.sim.job(job_id).requests) == 1  # only the first hop was fetched


@pytest.mark.parametrize(
    ("faults", "outcome"),
    [
        (Faults(fail_first=1, fail_status=500), ExportState.ACKNOWLEDGED),
        (Faults(fail_first=1, fail_status=429, retry_after="0"), ExportState.ACKNOWLEDGED),
        (Faults(truncate_first=1, truncate_at=1000), ExportState.ACKNOWLEDGED),
        (Faults(gzip=True), ExportState.ACKNOWLEDGED),
        (Faults(truncate_first=99, truncate_at=1000), ExportState.NOTIFIED),
        (Faults(invalid_json=True), ExportState.FAILED),
        (Faults(oversize_bytes=3_000_000), ExportState.FAILED),
        (Faults(gone_status=410), ExportState.LINK_EXPIRED),
        (Faults(gone_status=404), ExportState.LINK_EXPIRED),
    ],
)
def test_download_faults(loop_env: LoopEnv, faults: Faults, outcome: ExportState) -> None:
    env = loop_env
    env.write_config(download_extra="max_bytes = 2000000")
    env.sim.faults_for_next_job(faults)
    job_id = env.submit()
    served = env.sim.job(job_id)
    parts = env.loop()
    parts.poller.run_once(parts.mailbox)
    assert _state(env, job_id) is outcome
    assert env.part_files() == []
    if outcome is ExportState.ACKNOWLEDGED:
        [path] = env.archived_files()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256
        [line] = env.manifest()
        assert line["sha256"] == served.sha256
    else:
        assert env.archived_files() == []
        assert env.manifest() == []
        [flags] = env.messages().values()
        assert KEYWORD not in flags


@pytest.mark.parametrize("point", POINTS)
def test_crash_at_every_step_resumes_to_exactly_one_archive(loop_env: LoopEnv, point: str) -> None:
    env = loop_env
    submit_args = ("submit", "--stat", "4242", "--start", "20261101", "--end", "20261102")
    if point.startswith("submit:"):
        crashed = env.cli(*submit_args, crash_at=point)
        assert crashed.returncode == CRASH_EXIT_STATUS, crashed.stderr
        if point == "submit:before-post":
            # never reached Pinpointe: a visible trace, and nothing else
            assert env.sim.jobs == {}
            listing = env.cli("exports")
            assert "submitting" in listing.stdout
            assert env.cli("run", "--once").returncode == 0
            assert env.archived_files() == []
            return
        job_id = next(iter(env.sim.jobs))
        env.sim.job(job_id).wait_delivered(30)
    else:
        job_id = env.submit()
        crashed = env.cli("run", "--once", crash_at=point)
        assert crashed.returncode == CRASH_EXIT_STATUS, crashed.stdout + crashed.stderr

    for _ in range(3):
        resumed = env.cli("run", "--once")
        if _state(env, job_id) is ExportState.ACKNOWLEDGED:
            break
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _state(env, job_id) is ExportState.ACKNOWLEDGED

    served = env.sim.job(job_id)
    [path] = env.archived_files()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256
    [line] = env.manifest()
    assert line["job_id"] == job_id
    assert env.part_files() == []
    downloads = len(served.requests)
    assert downloads <= 2  # at most the interrupted one and the one that finished
    assert env.messages() == {}
    [flags] = env.messages(env.processed).values()
    assert KEYWORD in flags

    idle = env.cli("run", "--once")
    assert "read 0 mail(s)" in idle.stdout
    assert "archived 0, acknowledged 0" in idle.stdout
    assert len(served.requests) == downloads
    assert len(env.manifest()) == 1


POWER_LOSS_POINTS = {
    # point: whether the ledger's durable image is behind the ledger the crash left
    "download:after-verified": True,  # "verified" is relaxed: the export is downloading
    "archive:after-rename": True,  # the file is published, the ledger still downloading
    "archive:before-manifest-line": False,  # the offset's durable commit covers the rest
    "download:after-manifest": False,
    "ack:before-mark": False,  # "archived" (relaxed) was synced before acknowledging
}


@pytest.mark.parametrize("point", POWER_LOSS_POINTS)
def test_a_power_failure_at_any_step_of_a_download_resumes_to_exactly_one_archive(
    loop_env: LoopEnv, point: str
) -> None:
    """The process crashes at *point* and the ledger loses every commit since its last
    durable point, as a power failure would (reliability.md §6.1: three steps of a
    download are committed without their fsync). One export, so that what the image lost
    at each point is known (a second download's commits would land at any moment); after
    the restarts, one archive, one manifest line and one acknowledgement."""
    env = loop_env
    jobs = [env.submit()]
    image = env.root / "durable-ledger.db"
    crashed = env.cli("run", "--once", crash_at=point, ledger_image=image)
    assert crashed.returncode == CRASH_EXIT_STATUS, crashed.stdout + crashed.stderr
    ledger = env.root / "state" / "state.db"
    behind = export_states(image) != export_states(ledger)
    assert behind is POWER_LOSS_POINTS[point], (export_states(image), export_states(ledger))
    lose_unsynced(ledger, image)
    _resumes_to_one_archive_each(env, jobs)


BATCH_POINTS = (
    "mail:mid-batch",
    "download:after-verified",
    "archive:mid-manifest-line",
    "download:after-manifest",
    "ack:before-mark",
    "ack:after-mark",
)


@pytest.mark.parametrize("point", BATCH_POINTS)
def test_a_crash_inside_a_batch_resumes_to_exactly_one_archive_per_export(
    loop_env: LoopEnv, point: str
) -> None:
    """Three notifications in one pass: their mails recorded in one ledger batch, their
    payloads downloaded two at a time, their mails acknowledged in one set. A crash in the
    middle of any of these ends, after a restart, in one archive per export."""
    env = loop_env
    jobs = [env.submit(stat) for stat in ("4242", "4343", "4444")]
    crashed = env.cli("run", "--once", crash_at=point)
    assert crashed.returncode == CRASH_EXIT_STATUS, crashed.stdout + crashed.stderr
    _resumes_to_one_archive_each(env, jobs)


def _resumes_to_one_archive_each(env: LoopEnv, jobs: list[str]) -> None:
    """After a crash: restarts end with one archive, one manifest line and one
    acknowledgement per export, each payload downloaded at most twice, and a run more
    changes nothing."""
    for _ in range(3):
        resumed = env.cli("run", "--once")
        if all(_state(env, job) is ExportState.ACKNOWLEDGED for job in jobs):
            break
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [_state(env, job) for job in jobs] == [ExportState.ACKNOWLEDGED] * len(jobs)

    assert sorted(line["job_id"] for line in env.manifest()) == sorted(jobs)
    assert len(env.archived_files()) == len(jobs)
    served = {env.sim.job(job).sha256 for job in jobs}
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in env.archived_files()} == served
    assert env.part_files() == []
    assert all(len(env.sim.job(job).requests) <= 2 for job in jobs)
    assert env.messages() == {}
    moved = env.messages(env.processed)
    assert len(moved) == len(jobs) and all(KEYWORD in flags for flags in moved.values())

    idle = env.cli("run", "--once")
    assert "read 0 mail(s)" in idle.stdout
    assert "archived 0, acknowledged 0" in idle.stdout
    assert len(env.manifest()) == len(jobs)


def test_json_logs_are_keyed_and_never_carry_secrets(loop_env: LoopEnv) -> None:
    env = loop_env
    job_id = env.submit()
    link = env.sim.job(job_id).download_url
    query = link.split("?", 1)[1]
    result = env.cli("--log-format", "json", "-v", "run", "--once")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(e.get("job_id") == job_id and "archived" in e["message"] for e in lines)
    assert any("uid" in e and "acknowledged" in e["message"] for e in lines)
    everything = result.stdout + result.stderr
    for secret in (env.dovecot.password, env.sim.token, query):
        assert secret not in everything


def test_a_digest_archives_each_export_once(loop_env: LoopEnv) -> None:
    env = loop_env
    env.sim.send_notifications = False
    parts = env.loop()
    submitter = build_submitter(env.config(), parts.store)
    jobs = [submitter.submit(ExportRequest(stat, "20261101", "20261102")) for stat in ("41", "42")]
    job_ids = [export.job_id for export in jobs if export.job_id is not None]
    parts.close()
    env.sim.deliver_digest(job_ids)

    first = env.cli("run", "--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "archived 2, acknowledged 1" in first.stdout
    lines = {line["job_id"]: line for line in env.manifest()}
    assert sorted(lines) == sorted(job_ids)
    for job_id in job_ids:
        served = env.sim.job(job_id)
        assert lines[job_id]["sha256"] == served.sha256
        assert lines[job_id]["stat"] == served.stat
        assert len(served.requests) == 1  # each link downloaded once
        assert _state(env, job_id) is ExportState.ACKNOWLEDGED
    assert len(env.archived_files()) == 2
    assert env.messages() == {}
    [flags] = env.messages(env.processed).values()  # the one digest, acknowledged once
    assert KEYWORD in flags

    second = env.cli("run", "--once")
    assert "read 0 mail(s)" in second.stdout
    assert "archived 0, acknowledged 0" in second.stdout
    assert len(env.manifest()) == 2


def test_a_spoofed_mail_with_a_dead_link_does_not_shut_out_the_real_one(
    loop_env: LoopEnv,
) -> None:
    # issue 9, red-team finding 2: no job ID, a link on an allowed host that answers 404,
    # matched by elimination to the only export waiting; then the real notification
    env = loop_env
    env.sim.send_notifications = False
    parts = env.loop()
    export = build_submitter(env.config(), parts.store).submit(ExportRequest("77"))
    assert export.job_id is not None
    job_id = export.job_id
    spoof = (
        "From: Pinpointe <noreply@mypinpointe.example>\r\n"
        "To: exports@inbox.example\r\n"
        "Subject: Your export is ready\r\n"
        "Message-ID: <spoof@evil.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Download your file: https://{env.sim.host_rule}/exports/gone.json?expires=1&sig=x\r\n"
    ).encode()
    env.dovecot.append(env.folder, spoof)
    report = parts.poller.run_once(parts.mailbox)
    assert report.archived == [] and report.failed
    assert _state(env, job_id) is ExportState.LINK_EXPIRED
    env.sim.deliver_notification(job_id)
    report = parts.poller.run_once(parts.mailbox)
    assert report.archived == [job_id]
    assert _state(env, job_id) is ExportState.ACKNOWLEDGED
    [line] = env.manifest()
    assert line["sha256"] == env.sim.job(job_id).sha256
    assert len(env.sim.job(job_id).requests) == 1
    assert env.messages() == {}  # both mails concern the archived export
    parts.close()


def test_costly_mails_first_never_stop_the_real_notification_after_them(
    loop_env: LoopEnv,
) -> None:
    """Issue 9, finding 1: every red-team mail ahead of a real notification, one run."""
    env = loop_env
    for build in COSTLY_MAILS.values():
        env.dovecot.append(env.folder, build())
    job_id = env.submit()  # its notification lands after all of them

    result = env.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    assert f"read {len(COSTLY_MAILS) + 1} mail(s)" in result.stdout
    assert "archived 1, acknowledged 1" in result.stdout
    assert _state(env, job_id) is ExportState.ACKNOWLEDGED
    refusals = [line for line in result.stderr.splitlines() if "too costly to read" in line]
    assert len(refusals) == 3, result.stderr  # the From, the Subject, the 24,000 parts
    # the costly mails stay in place, passed: the next run reads nothing
    assert len(env.messages()) == len(COSTLY_MAILS)
    again = env.cli("run", "--once")
    assert "read 0 mail(s)" in again.stdout


def test_run_once_writes_a_textfile_that_keeps_counting_and_status_judges_cron(
    loop_env: LoopEnv,
) -> None:
    env = loop_env
    env.write_config()
    with env.config_path.open("a", encoding="utf-8") as config:
        config.write('\n[metrics]\ntextfile = "inbox_poller.prom"\n')
    textfile = env.root / "inbox_poller.prom"
    for stat in ("4242", "4343"):
        env.submit(stat)
        result = env.cli("run", "--once")
        assert result.returncode == 0, result.stderr
    _, samples = parse(textfile.read_text(encoding="utf-8"))
    method = {"method": env.manifest()[0]["method"]}
    assert value(samples, "inbox_poller_archived_exports_total", method) == 2  # both runs
    assert value(samples, "inbox_poller_archived_bytes_total", method) == sum(
        line["bytes"] for line in env.manifest()
    )
    assert value(samples, "inbox_poller_last_run_success") == 1
    assert value(samples, "inbox_poller_exports", {"state": "acknowledged"}) == 2
    assert value(samples, "inbox_poller_healthy") == 1
    status = env.cli("status", "--json")
    assert status.returncode == 0, status.stdout
    assert json.loads(status.stdout)["mode"] == "once"


def test_every_line_about_an_export_carries_its_ids_and_the_payloads_facts(
    loop_env: LoopEnv,
) -> None:
    env = loop_env
    job_id = env.submit()
    result = env.cli("--log-format", "json", "-v", "run", "--once")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert all(entry["time"].endswith("Z") for entry in lines)
    about_exports = [e for e in lines if e["message"].startswith(("export ", "download "))]
    assert about_exports
    for entry in about_exports:
        assert entry.get("export_id") is not None, entry
    downloaded = [e for e in lines if e["logger"] == "inbox_poller.download" and "bytes" in e]
    archived = [e for e in lines if "archived" in e["message"] and e["logger"].endswith("loop")]
    [line] = env.manifest()
    for entry in (*downloaded, *archived):
        assert entry["job_id"] == job_id
        assert (entry["bytes"], entry["sha256"]) == (line["bytes"], line["sha256"])
        assert isinstance(entry["duration_s"], float)
    assert downloaded and archived


def test_a_download_is_reported_once_at_info_by_its_archived_line(loop_env: LoopEnv) -> None:
    # the fetcher's own line of size and checksum is DEBUG: at INFO it only repeated them
    env = loop_env
    env.submit()
    result = env.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    [line] = env.manifest()
    about_payload = [text for text in result.stderr.splitlines() if line["sha256"] in text]
    [archived] = about_payload
    assert "inbox_poller.loop" in archived
    assert (
        f"({line['bytes']} bytes, {line['records']} records, sha256 {line['sha256']}," in archived
    )
    assert re.search(r", downloaded in \d+\.\d\d s\)$", archived), archived
