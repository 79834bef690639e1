"""The README's "Read the archive" examples, run as written on an archive the loop made.

The code is taken from README.md itself, so it cannot drift: the Python blocks (the
reader with pandas, pandas alone) and the SQL blocks (DuckDB, one per payload shape) run
against an archive made by the real loop from the sandbox's simulator and a real Dovecot,
with only the archive's path replaced. Every record must come back, IDs as strings.
DuckDB and pandas are test dependencies (pyproject's ``test`` extra): missing, the tests
fail in CI and are skipped elsewhere.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.plugins.dovecot import running_in_ci
from tests.plugins.loop import REPO_ROOT, LoopEnv

pytestmark = pytest.mark.dovecot

README_PATH = "/var/lib/inbox-poller/archive"
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
WHOLE = README.split("## Read the archive", 1)[1].split("\n## ", 1)[0].split("### Logs")[0]
SECTION, FORMATS_SECTION = WHOLE.split("### Every method and format")
BLOCKS = re.findall(r"```(python|sql)\n(.*?)```", SECTION, re.DOTALL)
FORMAT_BLOCKS = re.findall(r"```(python|sql)\n(.*?)```", FORMATS_SECTION, re.DOTALL)
PYTHON_FORMATS = [code for language, code in FORMAT_BLOCKS if language == "python"]
SQL_FORMATS = [code for language, code in FORMAT_BLOCKS if language == "sql"]
PYTHON = [code for language, code in BLOCKS if language == "python"]
SQL = [code for language, code in BLOCKS if language == "sql" and "s3://" not in code]
"""The local examples; the S3 one runs in tests/archive/test_duckdb_s3.py."""
RECORDS = (120, 75, 3)
"""Records in each payload of the archive (one export each)."""


def need(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is missing: pip install -e '.[test]'"
        if running_in_ci():
            pytest.fail(f"{message} (required in CI)", pytrace=False)
        pytest.skip(message)


def make_archive(env: LoopEnv, shape: str) -> Path:
    """Archive one export per ``RECORDS`` entry, each payload of *shape*, through the loop."""
    env.sim.payload_shape = shape  # type: ignore[assignment]
    jobs = []
    for number, records in enumerate(RECORDS):
        env.sim.payload_records = records
        jobs.append(env.submit(stat=str(4200 + number)))
    parts = env.loop()
    report = parts.poller.run_once(parts.mailbox)
    assert sorted(report.archived) == sorted(jobs), report
    assert [line["top_level"] for line in env.manifest()] == [shape] * len(RECORDS)
    return env.archive_dir


def run_python(code: str, root: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(code.replace(README_PATH, str(root)), "README.md", "exec"), namespace)  # noqa: S102
    return namespace


def run_sql(code: str, root: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    duckdb = need("duckdb")
    result = duckdb.sql(code.replace(README_PATH, str(root)))
    return list(result.columns), result.fetchall()


def test_the_readme_has_the_examples_these_tests_run() -> None:
    assert len(PYTHON) == 2 and len(SQL) == 2, BLOCKS
    assert "from inbox_poller.archive_reader import ArchiveReader" in PYTHON[0]
    assert "data.item" in SQL[0] and "data.item" not in SQL[1]


def test_the_reader_and_pandas_return_every_record(loop_env: LoopEnv) -> None:
    need("pandas")
    root = make_archive(loop_env, "object")
    lines = loop_env.manifest()
    reader = run_python(PYTHON[0], root)
    manifest, records = reader["manifest"], reader["records"]
    assert list(manifest["job_id"]) == [line["job_id"] for line in lines]
    assert len(records) == sum(RECORDS)
    assert records.groupby("job_id").size().to_dict() == {
        line["job_id"]: line["records"] for line in lines
    }
    first = records.iloc[0]
    assert isinstance(first["job_id"], str) and isinstance(first["subscriberid"], str)

    alone = run_python(PYTHON[1], root)
    latest = max(lines, key=lambda line: line["archived_at"])
    assert len(alone["records"]) == latest["records"]
    assert isinstance(alone["manifest"]["job_id"].iloc[0], str)
    assert isinstance(alone["records"]["subscriberid"].iloc[0], str)


def test_duckdb_returns_every_record_of_pinpointes_payloads(loop_env: LoopEnv) -> None:
    need("duckdb")
    root = make_archive(loop_env, "object")
    columns, rows = run_sql(SQL[0], root)
    assert len(rows) == sum(RECORDS)
    by_job = dict.fromkeys((line["job_id"] for line in loop_env.manifest()), 0)
    for row in rows:
        by_job[row[columns.index("job_id")]] += 1
    assert by_job == {line["job_id"]: line["records"] for line in loop_env.manifest()}
    assert isinstance(rows[0][columns.index("subscriberid")], str)


def test_duckdb_returns_every_record_of_array_payloads(loop_env: LoopEnv) -> None:
    need("duckdb")
    need("pandas")
    root = make_archive(loop_env, "array")
    columns, rows = run_sql(SQL[1], root)
    assert len(rows) == sum(RECORDS)
    assert isinstance(rows[0][columns.index("job_id")], str)
    assert len(run_python(PYTHON[0], root)["records"]) == sum(RECORDS)


FORMAT_EXPORTS = (
    ("GetSegmentSubscribersAsync", ["--segment", "7", "--format", "csv"], 30),
    ("GetSegmentSubscribersAsync", ["--segment", "8", "--format", "csv"], 20),
    ("GetNewsletterStatsAsync", ["--list", "12", "--format", "xml"], 25),
    ("GetNewsletterStatsAsync", ["--list", "12", "--format", "csv"], 10),
    ("GetListSubscribersAsync", ["--list", "3"], 5),
)


def make_formats_archive(env: LoopEnv) -> Path:
    """Archive one export per ``FORMAT_EXPORTS`` entry through the CLI and the loop."""
    jobs = []
    for method, args, records in FORMAT_EXPORTS:
        env.sim.payload_records = records
        result = env.cli("submit", "--method", method, *args)
        assert result.returncode == 0, result.stderr
        jobs.append(result.stdout.strip())
        env.sim.job(jobs[-1]).wait_delivered(30)
    parts = env.loop()
    try:
        report = parts.poller.run_once(parts.mailbox)
    finally:
        parts.close()
    assert sorted(report.archived) == sorted(jobs), report
    return env.archive_dir


def test_the_readme_has_the_format_examples_these_tests_run() -> None:
    assert len(PYTHON_FORMATS) == 2 and len(SQL_FORMATS) == 1, FORMAT_BLOCKS
    assert "read_csv" in SQL_FORMATS[0] and "read_xml" in PYTHON_FORMATS[1]


def test_the_reader_and_pandas_read_csv_and_xml_payloads(loop_env: LoopEnv) -> None:
    need("pandas")
    root = make_formats_archive(loop_env)
    lines = loop_env.manifest()
    csv_records = sum(line["records"] for line in lines if line["format"] == "csv")
    xml_records = sum(line["records"] for line in lines if line["format"] == "xml")
    assert (csv_records, xml_records) == (60, 25)
    tables = run_python(PYTHON_FORMATS[0], root)["tables"]
    assert (len(tables["csv"]), len(tables["xml"])) == (csv_records, xml_records)
    assert isinstance(tables["csv"]["subscriberid"].dropna().iloc[0], str)
    assert tables["xml"].groupby("job_id").size().to_dict() == {
        line["job_id"]: line["records"] for line in lines if line["format"] == "xml"
    }
    alone = run_python(PYTHON_FORMATS[1], root)
    assert (len(alone["rows"]), len(alone["items"])) == (csv_records, xml_records)
    assert isinstance(alone["items"]["statid"].iloc[0], str)
    assert isinstance(alone["rows"]["job_id"].iloc[0], str)


def test_duckdb_reads_the_csv_payloads_of_one_method(loop_env: LoopEnv) -> None:
    need("duckdb")
    root = make_formats_archive(loop_env)
    columns, rows = run_sql(SQL_FORMATS[0], root)
    segments = [line for line in loop_env.manifest() if line["method"].startswith("GetSegment")]
    assert len(rows) == sum(line["records"] for line in segments) == 50
    by_job = dict.fromkeys((line["job_id"] for line in segments), 0)
    for row in rows:
        by_job[row[columns.index("job_id")]] += 1
    assert by_job == {line["job_id"]: line["records"] for line in segments}
    assert isinstance(rows[0][columns.index("subscriberid")], str)
