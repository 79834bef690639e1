"""contrib/prometheus/alerts.yml: valid, unit-tested with promtool, and on our metrics only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.contrib.promql import exported_sample_names, metric_names

RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
FROM_PROMETHEUS = {"up"}
"""Series Prometheus itself makes for each scrape target."""


def _promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", "alerts.yml", cwd=RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_the_rules_pass_their_unit_tests(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", "alerts_test.yml", cwd=RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("rule", "before", "after"),
    [
        ("InboxPollerDown", "> 300 and", "> 3000 and"),
        ("InboxPollerMailboxNotRead", "> 3 *", "> 30 *"),
        ("InboxPollerFailuresGrowing", 'kind!="transient"', 'kind!="invalid"'),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(
    promtool: str, tmp_path: Path, rule: str, before: str, after: str
) -> None:
    copy = tmp_path / "prometheus"
    shutil.copytree(RULES, copy)
    text = (copy / "alerts.yml").read_text(encoding="utf-8")
    assert before in text
    (copy / "alerts.yml").write_text(text.replace(before, after, 1), encoding="utf-8")
    result = _promtool(promtool, "test", "rules", "alerts_test.yml", cwd=copy)
    assert result.returncode != 0
    assert rule in result.stdout + result.stderr


def rule_expressions(text: str) -> list[str]:
    """Each ``expr:`` of a rules file, plain (one line) or a ``|`` block (no YAML library)."""
    exprs: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        key, _, rest = line.strip().partition(":")
        if key != "expr":
            continue
        if rest.strip() != "|":
            exprs.append(rest.strip())
            continue
        indent = len(line) - len(line.lstrip())
        block = []
        for following in lines[number + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            block.append(following.strip())
        exprs.append(" ".join(block).strip())
    return exprs


def test_the_rules_read_only_metrics_we_export() -> None:
    exprs = rule_expressions((RULES / "alerts.yml").read_text(encoding="utf-8"))
    assert len(exprs) == 7  # as many as promtool finds
    exported = exported_sample_names()
    read: set[str] = set()
    for expr in exprs:
        read |= metric_names(expr)
    assert read - FROM_PROMETHEUS <= exported, read - FROM_PROMETHEUS - exported
    assert "inbox_poller_up" in read and "inbox_poller_errors_total" in read


def test_the_name_extractor_finds_names_and_only_names() -> None:
    expr = (
        'sum without (kind) (increase(inbox_poller_errors_total{source!="mailbox"}[1h])) > 0 '
        "or histogram_quantile(0.95, sum by (le) (rate(x_bucket[$__rate_interval]))) "
        "and on(instance) time() - y_seconds > 3 * z offset 5m"
    )
    assert metric_names(expr) == {"inbox_poller_errors_total", "x_bucket", "y_seconds", "z"}
