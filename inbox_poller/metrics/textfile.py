"""The node_exporter textfile: written whole, then renamed over the old one.

node_exporter reads ``*.prom`` files only, so the temporary file (same directory, so
that the rename is atomic) ends in ``.tmp``; a reader sees the old file or the new one,
never half of one. The file is 0644: node_exporter runs as another user.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from inbox_poller.metrics.exposition import CUMULATIVE_TYPES, SampleKey, sample_key

logger = logging.getLogger("inbox_poller.metrics")

TEXTFILE_MODE = 0o644


def write_textfile(path: Path, collector: Collector) -> None:
    """Replace *path* with *collector*'s exposition, atomically. :raises OSError:"""
    data = generate_latest(collector)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TEXTFILE_MODE)
        try:
            os.fchmod(fd, TEXTFILE_MODE)  # whatever the umask (the unit's is 0077)
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def read_baseline(path: Path) -> dict[SampleKey, float]:
    """Return the counter and histogram samples of an earlier textfile at *path*.

    A missing file is an empty baseline; an unreadable or malformed one too, with a
    warning (the counters then restart from zero, which Prometheus reads as a reset).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("metrics: cannot read %s, counters restart from zero: %s", path, exc)
        return {}
    baseline: dict[SampleKey, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.type in CUMULATIVE_TYPES:
                for sample in family.samples:
                    baseline[sample_key(sample.name, sample.labels)] = sample.value
    except ValueError as exc:
        logger.warning("metrics: %s is not a textfile, counters restart from zero: %s", path, exc)
        return {}
    return baseline
