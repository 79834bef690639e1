"""What the metrics say, scraped over loopback and read with prometheus_client's parser."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from inbox_poller.errors import (
    ApiError,
    ConfigError,
    DownloadTransient,
    LinkExpired,
    MailboxLoginError,
)
from inbox_poller.metrics.registry import PrometheusMetrics
from inbox_poller.models import CONTACT_DATA_METHOD
from inbox_poller.ports import HealthSample
from tests.plugins.promtool import parse, scrape, value

NOW_S = 1_795_000_000.0

REQUIRED = {
    "inbox_poller_exports": "gauge",
    "inbox_poller_oldest_waiting_export_age_seconds": "gauge",
    "inbox_poller_last_mailbox_pass_timestamp_seconds": "gauge",
    "inbox_poller_archived_exports": "counter",
    "inbox_poller_archived_bytes": "counter",
    "inbox_poller_download_duration_seconds": "histogram",
    "inbox_poller_submit_to_archive_seconds": "histogram",
    "inbox_poller_errors": "counter",
    "inbox_poller_token_refresh_failures": "counter",
    "inbox_poller_up": "gauge",
    "inbox_poller_healthy": "gauge",
}
"""The issue's list, by name and type (counters' samples end in ``_total``)."""


@pytest.fixture
def metrics() -> Iterator[PrometheusMetrics]:
    served = PrometheusMetrics(mode="daemon", poll_interval_s=60, clock=lambda: NOW_S)
    yield served
    served.close()


def _scrape(metrics: PrometheusMetrics) -> str:
    port = metrics.listen("127.0.0.1", 0)
    return scrape(f"http://127.0.0.1:{port}/metrics")


def test_every_metric_the_issue_lists_is_served_with_its_type(metrics: PrometheusMetrics) -> None:
    types, samples = parse(_scrape(metrics))
    assert {name: types.get(name) for name in REQUIRED} == REQUIRED
    assert value(samples, "inbox_poller_up") == 1
    # every label value exists from the start, so increase() sees the first event
    assert value(samples, "inbox_poller_exports", {"state": "failed"}) == 0
    assert value(samples, "inbox_poller_errors_total", {"source": "api", "kind": "auth"}) == 0
    method = {"method": CONTACT_DATA_METHOD}
    assert value(samples, "inbox_poller_archived_exports_total", method) == 0
    assert not any(name.endswith("_created") for name, _ in samples)


def test_what_the_loop_reports_is_counted(metrics: PrometheusMetrics) -> None:
    metrics.export_archived(CONTACT_DATA_METHOD, 5_242_880, download_s=1.5, waited_s=240.0)
    metrics.export_archived(CONTACT_DATA_METHOD, 100, download_s=None, waited_s=None)
    metrics.failure("download", LinkExpired(410))
    metrics.failure("download", DownloadTransient("reset"))
    metrics.failure("api", ApiError("timeout", definitive=False))
    metrics.failure("mailbox", MailboxLoginError("refused"))
    metrics.failure("mailbox", RuntimeError("a bug"))
    metrics.token_refresh_failed()
    _, samples = parse(_scrape(metrics))
    method = {"method": CONTACT_DATA_METHOD}
    assert value(samples, "inbox_poller_archived_exports_total", method) == 2
    assert value(samples, "inbox_poller_archived_bytes_total", method) == 5_242_980
    assert value(samples, "inbox_poller_download_duration_seconds_count") == 1
    assert value(samples, "inbox_poller_download_duration_seconds_bucket", {"le": "2.0"}) == 1
    assert value(samples, "inbox_poller_download_duration_seconds_bucket", {"le": "1.0"}) == 0
    assert value(samples, "inbox_poller_submit_to_archive_seconds_sum") == 240
    errors = "inbox_poller_errors_total"
    for source, kind in [
        ("download", "link_expired"),
        ("download", "transient"),
        ("api", "unknown_outcome"),
        ("mailbox", "login"),
        ("mailbox", "other"),
    ]:
        assert value(samples, errors, {"source": source, "kind": kind}) == 1, (source, kind)
    assert value(samples, "inbox_poller_token_refresh_failures_total") == 1


def test_the_health_sample_sets_the_gauges(metrics: PrometheusMetrics) -> None:
    metrics.observe_health(
        HealthSample(
            counts={"submitted": 2, "acknowledged": 7, "failed": 1},
            oldest_waiting_at=datetime.fromtimestamp(NOW_S - 720, UTC),
            last_pass_at=datetime.fromtimestamp(NOW_S - 20, UTC),
            overdue=1,
            recent_failures=1,
            healthy=False,
        )
    )
    _, samples = parse(_scrape(metrics))
    assert value(samples, "inbox_poller_exports", {"state": "submitted"}) == 2
    assert value(samples, "inbox_poller_exports", {"state": "acknowledged"}) == 7
    assert value(samples, "inbox_poller_exports", {"state": "notified"}) == 0
    assert value(samples, "inbox_poller_oldest_waiting_export_age_seconds") == 720
    assert value(samples, "inbox_poller_last_mailbox_pass_timestamp_seconds") == NOW_S - 20
    assert value(samples, "inbox_poller_overdue_exports") == 1
    assert value(samples, "inbox_poller_recent_failed_exports") == 1
    assert value(samples, "inbox_poller_healthy") == 0
    assert value(samples, "inbox_poller_metrics_updated_timestamp_seconds") == NOW_S


def test_configured_labels_are_on_every_sample() -> None:
    metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60, labels={"account": "sales"})
    try:
        _, samples = parse(_scrape(metrics))
    finally:
        metrics.close()
    assert samples
    assert all(("account", "sales") in labels for _, labels in samples)


def test_a_label_the_metrics_use_themselves_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.labels.*state"):
        PrometheusMetrics(mode="daemon", poll_interval_s=60, labels={"state": "x"})


def test_run_once_exports_its_outcome_instead_of_up() -> None:
    metrics = PrometheusMetrics(mode="once", poll_interval_s=3600, clock=lambda: NOW_S)
    metrics.run_ended(ok=False)
    try:
        types, samples = parse(_scrape(metrics))
    finally:
        metrics.close()
    assert "inbox_poller_up" not in types
    assert value(samples, "inbox_poller_last_run_timestamp_seconds") == NOW_S
    assert value(samples, "inbox_poller_last_run_success") == 0
    assert value(samples, "inbox_poller_mailbox_poll_interval_seconds") == 3600


def test_the_names_pass_promtools_lint(metrics: PrometheusMetrics, promtool: str) -> None:
    metrics.export_archived(CONTACT_DATA_METHOD, 1, download_s=1, waited_s=1)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=_scrape(metrics),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""
