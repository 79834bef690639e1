"""``/metrics`` over loopback: only that path, quietly, and a clear error for a taken port."""

from __future__ import annotations

import logging
import socket
import urllib.error
import urllib.request

import pytest

from inbox_poller.errors import MetricsError
from inbox_poller.metrics.registry import PrometheusMetrics
from tests.plugins.promtool import parse, scrape


def test_only_metrics_is_served_and_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60)
    port = metrics.listen("127.0.0.1", 0)
    caplog.clear()
    try:
        with caplog.at_level(logging.DEBUG):
            types, _ = parse(scrape(f"http://127.0.0.1:{port}/metrics?x=1"))
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    finally:
        metrics.close()
    assert "inbox_poller_up" in types
    assert refused.value.code == 404
    refused.value.close()  # an HTTPError holds the answer's connection
    assert caplog.records == []  # a scrape every 15 s must not fill the journal


def test_ipv6_loopback() -> None:
    metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60)
    try:
        port = metrics.listen("::1", 0)
    except MetricsError as exc:  # a machine without IPv6 on lo
        pytest.skip(str(exc))
    try:
        assert "inbox_poller_up 1.0" in scrape(f"http://[::1]:{port}/metrics")
    finally:
        metrics.close()


def test_a_taken_port_is_a_clear_error_and_closing_frees_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60)
        with pytest.raises(
            MetricsError, match=rf"metrics\.listen: cannot listen on 127\.0\.0\.1:{port}"
        ):
            metrics.listen("127.0.0.1", port)
    first = PrometheusMetrics(mode="daemon", poll_interval_s=60)
    port = first.listen("127.0.0.1", 0)
    first.close()
    second = PrometheusMetrics(mode="daemon", poll_interval_s=60)
    try:
        assert second.listen("127.0.0.1", port) == port
    finally:
        second.close()
