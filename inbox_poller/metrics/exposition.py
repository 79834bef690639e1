"""What is exposed: the registry's samples with the configured labels, minus ``_created``.

``[metrics] labels`` are added to every sample, so that several instances (one per
account) can write to one node_exporter textfile directory without colliding series.
A *baseline* (the previous textfile of ``run --once``) is added to counters and
histograms, so that they keep growing across runs as Prometheus expects of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

CUMULATIVE_TYPES = frozenset({"counter", "histogram"})
"""Families whose samples only grow (``_total``, ``_bucket``, ``_count``, ``_sum``)."""

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def sample_key(name: str, labels: Mapping[str, str]) -> SampleKey:
    """The identity of one series: its sample name and label set."""
    return name, frozenset(labels.items())


class Exposition(Collector):
    """A collector over *registry* that adds *labels* and the *baseline* to its samples."""

    def __init__(
        self,
        registry: CollectorRegistry,
        labels: Mapping[str, str],
        baseline: Mapping[SampleKey, float] | None = None,
    ) -> None:
        self._registry = registry
        self._labels = dict(labels)
        self._baseline = dict(baseline or {})

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            cumulative = family.type in CUMULATIVE_TYPES
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # a process start time per series: noise in a textfile
                labels = {**sample.labels, **self._labels}
                value = sample.value
                if cumulative:
                    value += self._baseline.get(sample_key(sample.name, labels), 0.0)
                copy.add_sample(sample.name, labels, value)
            yield copy

    def restricted_registry(self, names: Iterable[str]) -> Collector:
        """Only the samples named *names* (prometheus_client's ``/metrics?name[]=…``)."""
        return _Restricted(self, frozenset(names))


class _Restricted(Collector):
    def __init__(self, source: Exposition, names: frozenset[str]) -> None:
        self._source = source
        self._names = names

    def collect(self) -> Iterator[Metric]:
        for family in self._source.collect():
            samples = [s for s in family.samples if s.name in self._names]
            if samples:
                family.samples = samples
                yield family
