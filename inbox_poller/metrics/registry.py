"""The metrics inbox-poller exports, and ``PrometheusMetrics``, which implements
``ports.Metrics`` over them (the names and what each means: docs/metrics.md).

Names follow Prometheus' conventions: ``inbox_poller_`` first, base units
(``_seconds``, ``_bytes``), ``_total`` on counters, ``_timestamp_seconds`` for points
in time. Every label value that can occur is exported at 0 from the start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import CollectorRegistry

from inbox_poller import __version__
from inbox_poller.errors import ConfigError
from inbox_poller.metrics.exposition import Exposition
from inbox_poller.metrics.kinds import KINDS, error_kind
from inbox_poller.metrics.listener import MetricsListener
from inbox_poller.metrics.textfile import read_baseline, write_textfile
from inbox_poller.models import CONTACT_DATA_METHOD, ExportState
from inbox_poller.ports import HealthSample

logger = logging.getLogger("inbox_poller.metrics")

Mode = Literal["daemon", "once"]

DOWNLOAD_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""A small payload takes a second, a 4 GiB one minutes (download.deadline_s is 1 h)."""
LATENCY_BUCKETS_S = (60, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400, 172800)
"""Pinpointe mails within minutes to hours; exports.notify_deadline is 2 h by default."""

OWN_LABELS = frozenset({"state", "method", "source", "kind", "version", "le"})
"""Label names the metrics use themselves; ``[metrics] labels`` may not reuse them."""


class PrometheusMetrics:
    """Count, gauge and expose; one instance per process (``wiring.build_metrics``).

    *mode* ``daemon`` exports ``inbox_poller_up``; ``once`` (``run --once``) exports the
    last run's time and outcome instead, and continues the counters of the textfile the
    previous run wrote. *clock* is wall-clock seconds, for ages and timestamps.
    """

    def __init__(
        self,
        *,
        mode: Mode,
        poll_interval_s: float,
        labels: Mapping[str, str] | None = None,
        textfile: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        labels = dict(labels or {})
        clash = sorted(OWN_LABELS.intersection(labels))
        if clash:
            raise ConfigError(
                f"{', '.join(clash)}: the metrics use this label name themselves",
                key="metrics.labels",
            )
        self.mode = mode
        self._clock = clock
        self._textfile = textfile
        self._textfile_problem: str | None = None
        self._write_lock = threading.Lock()
        self._listener: MetricsListener | None = None
        self._closed = False
        self._oldest_waiting_s: float | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self._define(poll_interval_s)
        baseline = read_baseline(textfile) if textfile and mode == "once" else None
        self.exposition = Exposition(self.registry, labels, baseline)

    def _define(self, poll_interval_s: float) -> None:
        r = self.registry
        Gauge(
            "inbox_poller_build_info", "The running version (always 1)", ["version"], registry=r
        ).labels(version=__version__).set(1)
        Gauge(
            "inbox_poller_mailbox_poll_interval_seconds",
            "imap.poll_interval: the mailbox is read at least this often (run --once: "
            "set it to how often cron runs it)",
            registry=r,
        ).set(poll_interval_s)
        self.exports = Gauge(
            "inbox_poller_exports", "Exports in the ledger, by state", ["state"], registry=r
        )
        for state in ExportState:
            self.exports.labels(state=state.value)
        oldest = Gauge(
            "inbox_poller_oldest_waiting_export_age_seconds",
            "How long the oldest export not yet in a final state has waited (0: none)",
            registry=r,
        )
        oldest.set_function(self._oldest_age)
        self.overdue = Gauge(
            "inbox_poller_overdue_exports",
            "Exports past exports.notify_deadline without their notification",
            registry=r,
        )
        self.recent_failed = Gauge(
            "inbox_poller_recent_failed_exports",
            "Exports that ended submit_failed, failed or link_expired in the last 24 h",
            registry=r,
        )
        self.last_pass = Gauge(
            "inbox_poller_last_mailbox_pass_timestamp_seconds",
            "When the mailbox was last read successfully (Unix time; 0: never)",
            registry=r,
        )
        self.healthy = Gauge(
            "inbox_poller_healthy",
            "1 when `inbox-poller status` would say healthy, else 0",
            registry=r,
        )
        self.updated = Gauge(
            "inbox_poller_metrics_updated_timestamp_seconds",
            "When the ledger gauges were last refreshed (Unix time; every 10 s in the daemon)",
            registry=r,
        )
        self.archived = Counter(
            "inbox_poller_archived_exports",
            "Payloads archived, by export method",
            ["method"],
            registry=r,
        )
        self.archived_bytes = Counter(
            "inbox_poller_archived_bytes",
            "Bytes of payloads archived, by export method",
            ["method"],
            registry=r,
        )
        self.archived.labels(method=CONTACT_DATA_METHOD)
        self.archived_bytes.labels(method=CONTACT_DATA_METHOD)
        self.download_s = Histogram(
            "inbox_poller_download_duration_seconds",
            "Time to download and validate one payload, retries within the attempt included",
            buckets=DOWNLOAD_BUCKETS_S,
            registry=r,
        )
        self.waited_s = Histogram(
            "inbox_poller_submit_to_archive_seconds",
            "Time from an export's submission to its payload being archived",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.errors = Counter(
            "inbox_poller_errors",
            "Failures by source (mailbox, api, download) and kind",
            ["source", "kind"],
            registry=r,
        )
        for source, kinds in KINDS.items():
            for kind in kinds:
                self.errors.labels(source=source, kind=kind)
        self.token_failures = Counter(
            "inbox_poller_token_refresh_failures",
            "OAuth2 access-token refreshes that failed (incremented by the token source)",
            registry=r,
        )
        if self.mode == "daemon":
            self.up = Gauge(
                "inbox_poller_up", "1 while the daemon runs; 0 once it has stopped", registry=r
            )
            self.up.set(1)
        else:
            self.last_run = Gauge(
                "inbox_poller_last_run_timestamp_seconds",
                "When the last `run --once` ended (Unix time)",
                registry=r,
            )
            self.last_run_ok = Gauge(
                "inbox_poller_last_run_success",
                "1 when the last `run --once` succeeded, else 0",
                registry=r,
            )

    # ---- ports.Metrics -------------------------------------------------------------

    def export_archived(
        self, method: str, size_bytes: int, *, download_s: float | None, waited_s: float | None
    ) -> None:
        self.archived.labels(method=method).inc()
        self.archived_bytes.labels(method=method).inc(max(0, size_bytes))
        if download_s is not None:
            self.download_s.observe(max(0.0, download_s))
        if waited_s is not None:
            self.waited_s.observe(max(0.0, waited_s))

    def failure(self, source: str, error: BaseException) -> None:
        if source in KINDS:
            self.errors.labels(source=source, kind=error_kind(source, error)).inc()

    def token_refresh_failed(self) -> None:
        self.token_failures.inc()

    def observe_health(self, sample: HealthSample) -> None:
        if self._closed:
            return  # a refresh that outlived the stop must not write "up 1" after "up 0"
        for state in ExportState:
            self.exports.labels(state=state.value).set(sample.counts.get(state.value, 0))
        self._oldest_waiting_s = (
            sample.oldest_waiting_at.timestamp() if sample.oldest_waiting_at else None
        )
        self.overdue.set(sample.overdue)
        self.recent_failed.set(sample.recent_failures)
        self.last_pass.set(sample.last_pass_at.timestamp() if sample.last_pass_at else 0)
        self.healthy.set(1 if sample.healthy else 0)
        self.updated.set(self._clock())
        self.write_textfile()

    # ---- exposition ------------------------------------------------------------------

    def _oldest_age(self) -> float:
        oldest = self._oldest_waiting_s
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    def listen(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on *host*:*port*; return the port. :raises MetricsError:"""
        self._listener = MetricsListener(host, port, self.exposition)
        logger.info("metrics: serving http://%s:%d/metrics", host, self._listener.port)
        return self._listener.port

    def run_ended(self, ok: bool) -> None:
        """Record the end of ``run --once`` and its outcome (mode ``once``)."""
        if self.mode == "once":
            self.last_run.set(self._clock())
            self.last_run_ok.set(1 if ok else 0)

    def write_textfile(self) -> None:
        """Replace the textfile, if one is configured; a failure is logged, once."""
        if self._textfile is None:
            return
        with self._write_lock:
            try:
                write_textfile(self._textfile, self.exposition)
            except OSError as exc:
                problem = f"{exc.strerror or exc}"
                if problem != self._textfile_problem:
                    logger.warning("metrics: cannot write %s: %s", self._textfile, problem)
                self._textfile_problem = problem
                return
            if self._textfile_problem is not None:
                logger.info("metrics: writing %s again", self._textfile)
                self._textfile_problem = None

    def close(self) -> None:
        """Stop serving; a daemon's last textfile says ``inbox_poller_up 0``."""
        self._closed = True
        if self.mode == "daemon":
            self.up.set(0)
            self.write_textfile()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
