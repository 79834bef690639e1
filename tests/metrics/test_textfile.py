"""The node_exporter textfile: replaced atomically, readable by node_exporter, and
cumulative across ``run --once`` runs."""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from inbox_poller.errors import DownloadTransient
from inbox_poller.metrics.registry import PrometheusMetrics
from inbox_poller.metrics.textfile import read_baseline, write_textfile
from inbox_poller.models import CONTACT_DATA_METHOD
from inbox_poller.ports import HealthSample
from tests.plugins.promtool import parse, value

METHOD = {"method": CONTACT_DATA_METHOD}
SAMPLE = HealthSample(
    counts={}, oldest_waiting_at=None, last_pass_at=None, overdue=0, recent_failures=0, healthy=True
)


def _cron_run(path: Path, archived_bytes: int) -> None:
    """One `run --once`: archive one payload, write the textfile, exit."""
    metrics = PrometheusMetrics(mode="once", poll_interval_s=3600, textfile=path)
    metrics.export_archived(CONTACT_DATA_METHOD, archived_bytes, download_s=3, waited_s=600)
    metrics.failure("download", DownloadTransient("reset"))
    metrics.run_ended(ok=True)
    metrics.observe_health(SAMPLE)
    metrics.close()


def test_the_file_is_world_readable_whatever_the_umask_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox_poller.prom"
    old = os.umask(0o077)  # the unit's UMask=
    try:
        metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60, textfile=path)
        metrics.observe_health(SAMPLE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["inbox_poller.prom"]
    _, samples = parse(path.read_text(encoding="utf-8"))
    assert value(samples, "inbox_poller_up") == 1
    metrics.close()
    _, samples = parse(path.read_text(encoding="utf-8"))
    assert value(samples, "inbox_poller_up") == 0  # a clean stop says so


def test_counters_keep_growing_across_cron_runs(tmp_path: Path) -> None:
    path = tmp_path / "inbox_poller.prom"
    _cron_run(path, 1000)
    _cron_run(path, 500)
    _, samples = parse(path.read_text(encoding="utf-8"))
    assert value(samples, "inbox_poller_archived_exports_total", METHOD) == 2
    assert value(samples, "inbox_poller_archived_bytes_total", METHOD) == 1500
    assert value(samples, "inbox_poller_download_duration_seconds_count") == 2
    assert value(samples, "inbox_poller_download_duration_seconds_bucket", {"le": "5.0"}) == 2
    kind = {"source": "download", "kind": "transient"}
    assert value(samples, "inbox_poller_errors_total", kind) == 2
    assert value(samples, "inbox_poller_last_run_success") == 1  # a gauge: not summed


def test_an_unreadable_earlier_file_restarts_the_counters_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "inbox_poller.prom"
    path.write_text("this is { not a textfile\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="inbox_poller.metrics"):
        assert read_baseline(path) == {}
    assert "counters restart from zero" in caplog.text
    _cron_run(path, 10)
    _, samples = parse(path.read_text(encoding="utf-8"))
    assert value(samples, "inbox_poller_archived_exports_total", METHOD) == 1


def test_a_reader_never_sees_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "inbox_poller.prom"
    metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60, textfile=path)
    metrics.observe_health(SAMPLE)
    stop = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(path.read_text(encoding="utf-8"))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(200):
        write_textfile(path, metrics.exposition)
    stop.set()
    reader.join()
    assert seen
    assert all(text.endswith("\n") and "inbox_poller_up 1.0" in text for text in seen)


def test_a_write_failure_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "node-exporter"
    metrics = PrometheusMetrics(
        mode="daemon", poll_interval_s=60, textfile=directory / "inbox_poller.prom"
    )
    with caplog.at_level(logging.INFO, logger="inbox_poller.metrics"):
        metrics.observe_health(SAMPLE)
        metrics.observe_health(SAMPLE)
        directory.mkdir()
        metrics.observe_health(SAMPLE)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "cannot write" in messages[0] and "No such file or directory" in messages[0]
    assert "writing" in messages[1] and "again" in messages[1]
    assert (directory / "inbox_poller.prom").exists()


def test_a_refresh_after_the_stop_does_not_bring_up_back(tmp_path: Path) -> None:
    path = tmp_path / "inbox_poller.prom"
    metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60, textfile=path)
    metrics.observe_health(SAMPLE)
    metrics.close()
    metrics.observe_health(SAMPLE)  # the scheduler's last refresh, finishing late
    _, samples = parse(path.read_text(encoding="utf-8"))
    assert value(samples, "inbox_poller_up") == 0
