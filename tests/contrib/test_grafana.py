"""contrib/grafana/inbox-poller.json: every query reads only metrics the daemon exports,
and every query is valid PromQL (promtool checks it as a recording rule)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.contrib.promql import exported_sample_names, metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "inbox-poller.json"
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    '"$instance"': '".*"',
}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _queries() -> list[str]:
    dashboard = _dashboard()
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def test_every_query_reads_only_metrics_we_export() -> None:
    exported = exported_sample_names()
    queries = _queries()
    assert len(queries) >= 12
    read: set[str] = set()
    for query in queries:
        label_values = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
        names = metric_names(label_values.group(1) if label_values else query)
        assert names, f"{query!r} reads no metric"
        read |= names
    assert read <= exported, read - exported
    # the metrics are all on the dashboard
    for name in (
        "inbox_poller_up",
        "inbox_poller_healthy",
        "inbox_poller_exports",
        "inbox_poller_archived_bytes_total",
        "inbox_poller_download_duration_seconds_bucket",
        "inbox_poller_submit_to_archive_seconds_bucket",
        "inbox_poller_errors_total",
        "inbox_poller_token_refresh_failures_total",
    ):
        assert name in read, name


def test_every_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, query in enumerate(_queries()):
        if query.startswith("label_values("):
            continue  # Grafana's own function, not PromQL
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        lines += [f"      - record: dashboard:query{number}", f"        expr: {json.dumps(query)}"]
    rules = tmp_path / "dashboard.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_importable_json_with_a_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "inbox-poller"
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "instance"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all('instance=~"$instance"' in t["expr"] for t in panel["targets"]), panel["title"]
