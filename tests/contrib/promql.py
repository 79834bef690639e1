"""What a PromQL expression reads, and what inbox-poller exports, for the contrib checks."""

from __future__ import annotations

import re

from inbox_poller.metrics.registry import PrometheusMetrics

KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGES = re.compile(r"\[[^\]]*\]|\boffset\s+-?[0-9a-z]+")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_NUMBERS = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Return the metric names *expr* selects (not its functions, keywords or labels)."""
    text = _VARIABLES.sub("1", _STRING.sub('""', expr))
    text = _RANGES.sub("", _LABEL_LISTS.sub("", _MATCHERS.sub("", text)))
    text = _NUMBERS.sub("", text)
    names = set()
    for found in _NAME.finditer(text):
        following = text[found.end() :].lstrip()
        if found.group() in KEYWORDS or following.startswith("("):
            continue  # a function or aggregation, or a keyword
        names.add(found.group())
    return names


def exported_sample_names() -> set[str]:
    """Every sample name inbox-poller exports, in either mode (``_total``, ``_bucket``…)."""
    names: set[str] = set()
    for mode in ("daemon", "once"):
        metrics = PrometheusMetrics(mode=mode, poll_interval_s=60)
        metrics.export_archived("m", 1, download_s=1, waited_s=1)  # histograms' samples
        for family in metrics.exposition.collect():
            names.update(sample.name for sample in family.samples)
        metrics.close()
    return names
