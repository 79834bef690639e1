"""The whole loop archiving to S3 (issue 14): real Dovecot, the simulator, real SeaweedFS.

The same guarantees as on a directory (docs/reliability.md §3.6): one object under the
final key with the served SHA-256, one manifest object, no part and no incomplete
multipart upload left, the mail acknowledged last; a crash at any step resumes to that.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from inbox_poller import crashpoints
from inbox_poller.crashpoints import CRASH_EXIT_STATUS
from inbox_poller.ledger.store import Store
from inbox_poller.loop import archiver as archiver_module
from inbox_poller.models import Export, ExportState
from inbox_poller.sandbox.simulator.jobs import Faults
from tests.plugins.loop import LoopEnv
from tests.plugins.seaweedfs import S3Bucket

if TYPE_CHECKING:
    from inbox_poller.sandbox.seaweedfs.server import SeaweedFSServer

pytestmark = [pytest.mark.dovecot, pytest.mark.seaweedfs]

KEYWORD = b"$ExportArchived"
PREFIX = "arch/prod"


@pytest.fixture
def s3_env(loop_env: LoopEnv, s3_bucket: S3Bucket) -> tuple[LoopEnv, S3Bucket]:
    loop_env.archive_section = s3_bucket.archive_keys(PREFIX)
    loop_env.write_config()
    return loop_env, s3_bucket


def _objects(bucket: S3Bucket) -> dict[str, bytes]:
    client = bucket.client()
    keys = [i["Key"] for i in client.list_objects_v2(Bucket=bucket.name).get("Contents", [])]
    return {key: client.get_object(Bucket=bucket.name, Key=key)["Body"].read() for key in keys}


def _uploads(bucket: S3Bucket) -> list[Any]:
    found: list[Any] = bucket.client().list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    return found


def _state(env: LoopEnv, job_id: str) -> ExportState:
    export = Store(env.root / "state" / "state.db").export_by_job_id(job_id)
    assert export is not None
    return export.state


def _assert_archived_once(env: LoopEnv, bucket: S3Bucket, job_id: str) -> None:
    served = env.sim.job(job_id)
    objects = _objects(bucket)
    manifests = {k: v for k, v in objects.items() if k.startswith(f"{PREFIX}/manifest/")}
    payloads = {k: v for k, v in objects.items() if k not in manifests}
    [(key, payload)] = payloads.items()  # no part left under .parts/ either
    assert hashlib.sha256(payload).hexdigest() == served.sha256
    [(manifest_key, raw)] = manifests.items()
    line = json.loads(raw)
    assert (line["job_id"], line["sha256"], line["bytes"]) == (job_id, served.sha256, served.bytes)
    assert f"{PREFIX}/{line['path']}" == key  # the path is relative to the prefix
    assert manifest_key == f"{PREFIX}/manifest/{line['path'].rsplit('.', 1)[0]}.json"
    assert _uploads(bucket) == []
    assert env.archived_files() == [] and env.manifest() == []  # nothing local
    assert env.messages() == {}
    [flags] = env.messages(env.processed).values()
    assert KEYWORD in flags
    assert _state(env, job_id) is ExportState.ACKNOWLEDGED


def test_run_once_archives_to_s3(s3_env: tuple[LoopEnv, S3Bucket]) -> None:
    env, bucket = s3_env
    job_id = env.submit()
    first = env.cli("run", "--once")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "archived 1, acknowledged 1" in first.stdout
    assert f"archived job {job_id}: {bucket.url}/{PREFIX}/" in first.stdout
    _assert_archived_once(env, bucket, job_id)
    exports = json.loads(env.cli("exports", "--json").stdout)
    assert exports[0]["path"].startswith(f"{bucket.url}/{PREFIX}/")

    second = env.cli("run", "--once")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "archived 0, acknowledged 0" in second.stdout
    assert len(env.sim.job(job_id).requests) == 1
    _assert_archived_once(env, bucket, job_id)

    check = env.cli("check")
    assert f"{bucket.url}/{PREFIX} is writable" in check.stdout, check.stdout + check.stderr


S3_POINTS = (
    "download:after-start",
    "download:mid-body",
    "download:after-verified",
    "archive:after-rename",
    "archive:before-manifest-line",
    "download:after-manifest",
    "ack:before-mark",
    "ack:after-mark",
)
"""The crash points on the S3 archive's path (``archive:mid-manifest-line`` is the
directory's: an S3 object is written whole or not at all)."""


@pytest.mark.parametrize("point", S3_POINTS)
def test_a_crash_at_each_step_resumes_to_exactly_one_object(
    s3_env: tuple[LoopEnv, S3Bucket], point: str
) -> None:
    env, bucket = s3_env
    job_id = env.submit()
    crashed = env.cli("run", "--once", crash_at=point)
    assert crashed.returncode == CRASH_EXIT_STATUS, crashed.stdout + crashed.stderr
    for _ in range(3):
        resumed = env.cli("run", "--once")
        if _state(env, job_id) is ExportState.ACKNOWLEDGED:
            break
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_archived_once(env, bucket, job_id)
    downloads = len(env.sim.job(job_id).requests)
    assert downloads <= 2
    idle = env.cli("run", "--once")
    assert "archived 0, acknowledged 0" in idle.stdout
    assert len(env.sim.job(job_id).requests) == downloads
    _assert_archived_once(env, bucket, job_id)


def test_a_hook_gets_the_payloads_s3_url_and_fetches_the_object(
    s3_env: tuple[LoopEnv, S3Bucket],
) -> None:
    # a real hook program: it reads the object its environment names, with its own
    # credentials (the daemon hands it none), and checks the SHA-256 it was given
    env, bucket = s3_env
    seen = env.root / "hook-seen.json"
    hook = env.root / "hook"
    hook.write_text(
        f"#!{sys.executable}\n"
        "import hashlib, json, os, sys\n"
        "import boto3\n"
        "from botocore.config import Config\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith('INBOX_POLLER_')}\n"
        "client = boto3.client('s3', endpoint_url=env['INBOX_POLLER_S3_ENDPOINT_URL'],\n"
        "    region_name=env['INBOX_POLLER_S3_REGION'],\n"
        f"    aws_access_key_id=open({str(bucket.access_key_id_file)!r}).read().strip(),\n"
        f"    aws_secret_access_key=open({str(bucket.secret_access_key_file)!r}).read().strip(),\n"
        f"    verify={str(bucket.ca_file)!r}, config=Config(s3={{'addressing_style': 'path'}}))\n"
        "body = client.get_object(Bucket=env['INBOX_POLLER_BUCKET'],\n"
        "    Key=env['INBOX_POLLER_KEY'])['Body'].read()\n"
        "manifest = client.get_object(Bucket=env['INBOX_POLLER_BUCKET'],\n"
        "    Key=env['INBOX_POLLER_MANIFEST_KEY'])['Body'].read()\n"
        f"with open({str(seen)!r}, 'w') as out:\n"
        "    json.dump({'env': env, 'stdin': sys.stdin.read(), 'manifest': manifest.decode(),\n"
        "        'sha256': hashlib.sha256(body).hexdigest()}, out)\n"
    )
    hook.chmod(0o755)
    env.config_path.write_text(
        env.config_path.read_text() + f'\n[hooks]\non_archived = ["{hook}"]\ntimeout = "1m"\n'
    )
    job_id = env.submit()
    result = env.cli("run", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_archived_once(env, bucket, job_id)
    found = json.loads(seen.read_text())
    hook_env = found["env"]
    served = env.sim.job(job_id)
    assert found["sha256"] == served.sha256 == hook_env["INBOX_POLLER_SHA256"]
    line = json.loads(found["stdin"])
    assert json.loads(found["manifest"]) == line
    assert hook_env["INBOX_POLLER_JOB_ID"] == job_id
    assert hook_env["INBOX_POLLER_KEY"] == f"{PREFIX}/{line['path']}"
    assert hook_env["INBOX_POLLER_URL"] == f"{bucket.url}/{PREFIX}/{line['path']}"
    assert hook_env["INBOX_POLLER_ARCHIVE_URL"] == f"{bucket.url}/{PREFIX}"
    assert hook_env["INBOX_POLLER_BUCKET"] == bucket.name
    # no local path is named (there is none), and no credential is handed over
    for local in ("INBOX_POLLER_FILE", "INBOX_POLLER_ARCHIVE_DIR", "INBOX_POLLER_MANIFEST"):
        assert local not in hook_env
    secret = bucket.secret_access_key_file.read_text().strip()
    assert not any(secret in value for value in hook_env.values())
    exports = json.loads(env.cli("exports", "--json").stdout)
    assert exports[0]["hooks"][0]["state"] == "done"


# ---- an S3 outage mid-run --------------------------------------------------------------------


def _export(env: LoopEnv, job_id: str) -> Export:
    export = Store(env.root / "state" / "state.db").export_by_job_id(job_id)
    assert export is not None
    return export


@pytest.mark.parametrize(
    ("point", "left"),
    [
        ("download:after-verified", ExportState.VERIFIED),  # the copy to the final key
        ("archive:before-manifest-line", ExportState.VERIFIED),  # the manifest object
        ("download:after-start", ExportState.NOTIFIED),  # begin, before any byte
    ],
)
def test_an_outage_at_a_step_is_finished_by_a_later_pass(
    s3_env: tuple[LoopEnv, S3Bucket],
    seaweedfs: SeaweedFSServer,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    left: ExportState,
) -> None:
    # the endpoint goes down at *point* (fault injection at a real step of the loop, in
    # this process); the client's retries give up; a pass after it is back finishes
    env, bucket = s3_env
    job_id = env.submit()
    stops: list[str] = []

    def outage(name: str) -> None:
        if name == point and not stops:
            stops.append(name)
            seaweedfs.stop()

    monkeypatch.setattr(crashpoints, "crash_point", outage)
    monkeypatch.setattr(archiver_module, "crash_point", outage)
    parts = env.loop()
    first = parts.poller.run_once(parts.mailbox)
    assert stops == [point]
    # (a verified export is tried again at the end of the same pass: up to two failures)
    assert first.archived == [] and first.failed, first
    assert all("S3: cannot" in failure for failure in first.failed), first
    export = _export(env, job_id)
    assert export.state is left
    assert export.attempts <= 1  # an outage never uses up the download's attempts
    assert env.messages() != {}  # not acknowledged while it is not archived

    seaweedfs.start()
    second = parts.poller.run_once(parts.mailbox)
    assert second.archived == [job_id] and second.failed == [], second
    _assert_archived_once(env, bucket, job_id)
    # downloaded once: a verified payload is finished, not fetched again, and an outage
    # at begin comes before the first byte is asked for
    assert len(env.sim.job(job_id).requests) == 1


def test_an_outage_longer_than_the_download_attempts_loses_nothing(
    s3_env: tuple[LoopEnv, S3Bucket], seaweedfs: SeaweedFSServer
) -> None:
    # download.max_attempts is 2 here: three passes during an outage would have failed
    # the export for good if the archive's outage counted as the link's failure
    env, bucket = s3_env
    job_id = env.submit()
    parts = env.loop()
    seaweedfs.stop()
    try:
        for _ in range(3):
            report = parts.poller.run_once(parts.mailbox)
            assert report.archived == [] and len(report.failed) == 1, report
            export = _export(env, job_id)
            assert (export.state, export.attempts) == (ExportState.NOTIFIED, 0)
            assert export.reason is not None
            assert export.reason.startswith("the archive is unavailable: S3: cannot")
    finally:
        seaweedfs.start()
    assert env.cli("run", "--once").returncode == 0
    _assert_archived_once(env, bucket, job_id)


def test_an_outage_mid_download_with_run_once_loses_nothing(
    s3_env: tuple[LoopEnv, S3Bucket], seaweedfs: SeaweedFSServer
) -> None:
    # a real `run --once` process: the endpoint goes down while the payload streams
    # (the simulator stalls mid-body), so the part cannot be stored; the run exits 1,
    # the next one after the endpoint is back archives it once
    env, bucket = s3_env
    env.sim.faults_for_next_job(Faults(stall_first=1, stall_at=200, stall_s=3.0))
    job_id = env.submit()
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(env.cli, "run", "--once")
        _until(lambda: len(env.sim.job(job_id).requests) == 1)
        seaweedfs.stop()
        first = run.result()
    seaweedfs.start()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "S3: cannot" in first.stdout + first.stderr
    assert _state(env, job_id) is ExportState.NOTIFIED
    second = env.cli("run", "--once")
    assert second.returncode == 0, second.stdout + second.stderr
    _assert_archived_once(env, bucket, job_id)
    assert len(env.sim.job(job_id).requests) == 2


def _until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# ---- leftovers of exports that are never attempted again -------------------------------------


def test_leftovers_of_a_settled_export_are_swept_and_nothing_else(
    s3_env: tuple[LoopEnv, S3Bucket],
) -> None:
    # a daemon died mid-upload (its upload and a sealed part stay under .parts/<job>/),
    # then the export failed for good without another begin: nothing would ever clear
    # them but the sweep at start, which touches only settled exports' older leftovers
    env, bucket = s3_env
    client = bucket.client()
    job_id = env.submit()
    dead = f"{PREFIX}/.parts/{job_id}/dead.part"
    client.create_multipart_upload(Bucket=bucket.name, Key=dead)
    client.put_object(Bucket=bucket.name, Key=f"{PREFIX}/.parts/{job_id}/sealed.part", Body=b"x")
    other = f"{PREFIX}/.parts/777/under-way.part"  # an export this ledger does not settle
    client.create_multipart_upload(Bucket=bucket.name, Key=other)
    for _ in range(2):  # max_attempts = 2, each attempt dies before it begins
        assert env.cli("run", "--once", crash_at="download:after-start").returncode == 100
    gave_up = env.cli("run", "--once")
    assert "gave up after 2 attempts" in gave_up.stdout + gave_up.stderr
    assert _state(env, job_id) is ExportState.FAILED
    assert {u["Key"] for u in _uploads(bucket)} == {dead, other}  # not swept yet
    time.sleep(1.1)  # S3 times have a second's resolution
    later = f"{PREFIX}/.parts/{job_id}/started-after-it-failed.part"
    client.create_multipart_upload(Bucket=bucket.name, Key=later)

    swept = env.cli("run", "--once")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert {u["Key"] for u in _uploads(bucket)} == {other, later}
    assert not [key for key in _objects(bucket) if "/.parts/" in key]
    assert f"removing {dead} left by an interrupted upload" in swept.stderr
