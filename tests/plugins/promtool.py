"""promtool, Prometheus' own checker: the ``promtool`` fixture and a scrape helper.

``scripts/bootstrap.sh`` unpacks Debian's ``prometheus`` package's promtool into a private
prefix (it is never installed, so no Prometheus server is enabled). Without it the
tests that need it are skipped with that hint, except in CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.plugins.dovecot import running_in_ci

PROMTOOL_PREFIX = Path(
    os.environ.get("INBOX_POLLER_PROMTOOL_PREFIX", "/opt/inbox-poller/prometheus")
)
INSTALL_HINT = "run scripts/bootstrap.sh (it unpacks Debian's prometheus package's promtool)"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def find_promtool() -> str | None:
    """The promtool bootstrap.sh unpacked, else one on PATH."""
    private = PROMTOOL_PREFIX / "usr" / "bin" / "promtool"
    if private.is_file() and os.access(private, os.X_OK):
        return str(private)
    return shutil.which("promtool")


@pytest.fixture
def promtool() -> str:
    found = find_promtool()
    if found is None:
        if running_in_ci():
            pytest.fail(f"promtool is required in CI; {INSTALL_HINT}", pytrace=False)
        pytest.skip(f"promtool is not installed; {INSTALL_HINT}")
    return found


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Parse an exposition: each family's type, and each sample's value by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def value(samples: Samples, name: str, labels: Mapping[str, str] | None = None) -> float:
    key = (name, frozenset((labels or {}).items()))
    assert key in samples, f"no sample {name}{dict(labels or {})}"
    return samples[key]


def scrape(url: str) -> str:
    """GET *url* (loopback) and return the body."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (a test's own URL)
        assert response.status == 200
        return str(response.read().decode("utf-8"))
