"""The daemon (a real ``inbox-poller run`` process) on an S3 archive through an outage
(issue 14): real Dovecot, the simulator and SeaweedFS, several download workers sharing
one S3 client (boto3 clients are thread-safe; ``archive.s3.make_client`` builds one)."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import pytest

from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportState
from inbox_poller.sandbox.simulator.jobs import Faults
from tests.loop.test_s3_loop import KEYWORD, PREFIX, _objects, _uploads
from tests.plugins.daemon import DaemonProcess, NotifySocket
from tests.plugins.loop import LoopEnv
from tests.plugins.seaweedfs import S3Bucket

if TYPE_CHECKING:
    from inbox_poller.sandbox.seaweedfs.server import SeaweedFSServer

pytestmark = [pytest.mark.dovecot, pytest.mark.seaweedfs]

EXPORTS = 4
WORKERS = 3


def _s3_daemon_config(env: LoopEnv, bucket: S3Bucket) -> None:
    env.archive_section = bucket.archive_keys(PREFIX)
    env.write_config()
    text = env.config_path.read_text(encoding="utf-8").replace(
        "timeout_s = 10\n\n[download]", "timeout_s = 5\npoll_interval = 5\n\n[download]"
    )
    env.config_path.write_text(
        text + f"\n[daemon]\ndownload_workers = {WORKERS}\n", encoding="utf-8"
    )


def _states(env: LoopEnv, jobs: list[str]) -> list[ExportState | None]:
    store = Store(env.root / "state" / "state.db", read_only=True)
    exports = [store.export_by_job_id(job) for job in jobs]
    return [export.state if export else None for export in exports]


def test_the_daemon_with_several_workers_survives_an_outage_mid_download(
    loop_env: LoopEnv,
    s3_bucket: S3Bucket,
    seaweedfs: SeaweedFSServer,
    notify: NotifySocket,
    daemons: list[DaemonProcess],
) -> None:
    env = loop_env
    _s3_daemon_config(env, s3_bucket)
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)

    jobs = []
    for number in range(EXPORTS):
        # each payload stalls mid-body the first time: the downloads are under way (on
        # several workers) when the endpoint goes down
        env.sim.faults_for_next_job(Faults(stall_first=1, stall_at=200, stall_s=3.0))
        jobs.append(env.submit(stat=str(4200 + number)))
    deadline = time.monotonic() + 30
    while sum(len(env.sim.job(job).requests) > 0 for job in jobs) < min(WORKERS, EXPORTS):
        assert time.monotonic() < deadline, "the downloads did not start"
        time.sleep(0.05)
    seaweedfs.stop()
    time.sleep(6)  # longer than the client's own retries: each attempt under way fails
    seaweedfs.start()

    deadline = time.monotonic() + 90
    while any(state is not ExportState.ACKNOWLEDGED for state in _states(env, jobs)):
        assert time.monotonic() < deadline, (_states(env, jobs), daemon.log()[-3000:])
        time.sleep(0.2)
    assert daemon.process.poll() is None

    log = daemon.log()
    assert "S3: cannot" in log  # the outage was met, not slept through
    objects = _objects(s3_bucket)
    manifests = [k for k in objects if k.startswith(f"{PREFIX}/manifest/")]
    payloads = [k for k in objects if k not in manifests]
    assert len(manifests) == len(payloads) == EXPORTS  # once each, no part left
    for job in jobs:
        served = env.sim.job(job)
        [key] = [k for k in payloads if k.endswith(f"_job-{job}.json")]
        assert hashlib.sha256(objects[key]).hexdigest() == served.sha256
    assert _uploads(s3_bucket) == []
    assert env.messages() == {}
    flags = env.messages(env.processed).values()
    assert len(flags) == EXPORTS and all(KEYWORD in f for f in flags)
    store = Store(env.root / "state" / "state.db", read_only=True)
    attempts = [store.export_by_job_id(job).attempts for job in jobs]  # type: ignore[union-attr]
    errors = log.count("S3: cannot")
    print(f"outage of 6 s: {errors} S3 error line(s); attempts counted per export {attempts}")
    # the workers back off while the archive is down (without it: about 680 lines here,
    # each a new attempt), and the outage used up no download attempt
    assert errors <= 6 * WORKERS, errors
    assert attempts == [1] * EXPORTS, attempts
