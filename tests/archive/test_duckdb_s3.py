"""DuckDB reads an S3 archive's manifest with one glob (issue 14; docs/engines.md).

A few exports go through the real S3 archive (part, publish, manifest object) into the
throwaway SeaweedFS; DuckDB then runs the README's S3 example as written (only the
bucket, prefix, endpoint, keys and CA replaced) over verified HTTPS: one row per export
from ``read_json('s3://<bucket>/<prefix>/manifest/**/*.json')``, joined to its records by
``path``. DuckDB reads ``s3://`` only with its ``httpfs`` extension, which the ``test``
extra installs as a package (``duckdb-extension-httpfs``): nothing is downloaded. Missing,
the tests fail in CI and are skipped elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from inbox_poller.archive.s3 import S3Archive
from inbox_poller.models import ArchivedFile, Export, ExportRequest, ExportState
from inbox_poller.sandbox.localca import make_local_ca
from tests.plugins.dovecot import running_in_ci
from tests.plugins.loop import REPO_ROOT
from tests.plugins.seaweedfs import S3Bucket

pytestmark = pytest.mark.seaweedfs

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
PREFIX = "arch/prod"
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Read the archive", 1)[1].split("\n## ", 1)[0]
S3_SQL = [code for code in re.findall(r"```sql\n(.*?)```", SECTION, re.DOTALL) if "s3://" in code]
EXPORTS = (
    ("GetNewsletterContactDataSummaryAsync", "7", "901", 4),
    ("GetNewsletterContactDataSummaryAsync", "12", "902", 2),
    ("GetNewsletterContactDataSummaryAsync", "13", "903", 3),
)
"""(method, stat, job ID, records) of each archived export."""


def need_duckdb_with_httpfs() -> tuple[ModuleType, Path]:
    """Return DuckDB and its packaged ``httpfs`` extension; skip (fail in CI) without."""
    try:
        duckdb = importlib.import_module("duckdb")
        package = importlib.import_module("duckdb_extension_httpfs")
        found = sorted(Path(package.__path__[0]).glob(f"**/v{duckdb.__version__}/httpfs.*"))
        if not found:
            raise ImportError(f"duckdb-extension-httpfs has none for DuckDB {duckdb.__version__}")
    except ImportError as exc:
        message = f"DuckDB with httpfs is missing ({exc}): pip install -e '.[test]'"
        if running_in_ci():
            pytest.fail(f"{message} (required in CI)", pytrace=False)
        pytest.skip(message)
    return duckdb, found[0]


def _archive_exports(bucket: S3Bucket) -> list[dict[str, Any]]:
    """Archive ``EXPORTS`` through the real S3 archive; return their manifest lines."""
    archive = S3Archive(bucket.client(), bucket.name, PREFIX)
    lines = []
    for number, (method, stat, job_id, records) in enumerate(EXPORTS):
        submitted = NOW + timedelta(minutes=number)
        export = Export(
            number + 1,
            ExportRequest(stat, "20261101", "20261102", method),
            ExportState.DOWNLOADING,
            submitted,
            submitted,
            job_id=job_id,
            submitted_at=submitted,
            message_id=f"<{job_id}@x>",
        )
        rows = [{"subscriberid": f"0{job_id}{i}", "status": "active"} for i in range(records)]
        payload = json.dumps(rows).encode()
        part = archive.begin(export)
        part.write(payload)
        part.seal()
        archived = ArchivedFile(
            path=archive.relative_path(export),
            format="json",
            bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            records=records,
            top_level="array",
            source="https://x.example/f",
        )
        archive.publish(part.path, archived)
        archive.append_manifest(export, archived, submitted + timedelta(seconds=30))
        key = archive.manifest_key(archived.path)
        body = bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read()
        lines.append(json.loads(body))
    return lines


def _connect(duckdb: ModuleType) -> Any:
    """A fresh in-memory DuckDB that never downloads an extension."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    assert con.sql("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)
    return con


def _readme_sql(bucket: S3Bucket, extension: Path, ca_file: Path) -> str:
    """The README's S3 example with this bucket, endpoint, keys and CA."""
    server = bucket.server
    code: str = S3_SQL[0]
    for old, new in (
        ("INSTALL httpfs; LOAD httpfs;", f"LOAD '{extension}';"),
        ("/etc/inbox-poller/s3-ca.pem", str(ca_file)),
        ("'AKIA…'", f"'{server.access_key_id}'"),
        ("SECRET '…'", f"SECRET '{server.secret_access_key}'"),
        ("'s3.example.net'", f"'127.0.0.1:{server.s3_port}'"),
        ("s3://bucket/prefix/", f"s3://{bucket.name}/{PREFIX}/"),
    ):
        assert old in code, old
        code = code.replace(old, new)
    return code


def _setup(con: Any, code: str) -> str:
    """Run the statements of *code* before its query (extension, CA, secret); return it."""
    *setup, query = [part for part in code.split(";") if part.strip(" \n")]
    for statement in setup:
        con.execute(statement)
    return query


def _run(con: Any, code: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    result = con.sql(_setup(con, code))
    return list(result.columns), result.fetchall()


def test_the_readme_has_the_s3_example_this_test_runs() -> None:
    assert len(S3_SQL) == 1, S3_SQL
    assert "read_json('s3://bucket/prefix/manifest/**/*.json')" in S3_SQL[0]
    assert "URL_STYLE 'path'" in S3_SQL[0]


def test_duckdb_reads_every_manifest_object_with_one_glob(s3_bucket: S3Bucket) -> None:
    duckdb, extension = need_duckdb_with_httpfs()
    lines = _archive_exports(s3_bucket)
    con = _connect(duckdb)
    _setup(con, _readme_sql(s3_bucket, extension, s3_bucket.ca_file))
    glob = f"s3://{s3_bucket.name}/{PREFIX}/manifest/**/*.json"
    manifest = con.execute("SELECT * FROM read_json(?) ORDER BY job_id", [glob])
    columns = [column[0] for column in manifest.description]
    rows = manifest.fetchall()
    assert [row[columns.index("job_id")] for row in rows] == ["901", "902", "903"]
    for row, line in zip(rows, lines, strict=True):
        got = dict(zip(columns, row, strict=True))
        for field in ("job_id", "stat", "method", "path", "sha256", "startdate", "format"):
            assert got[field] == line[field], field
        assert (got["bytes"], got["records"]) == (line["bytes"], line["records"])
        assert isinstance(got["job_id"], str) and isinstance(got["startdate"], str)


def test_the_readme_s3_example_joins_every_record_to_its_manifest_row(
    s3_bucket: S3Bucket,
) -> None:
    duckdb, extension = need_duckdb_with_httpfs()
    lines = _archive_exports(s3_bucket)
    con = _connect(duckdb)
    columns, rows = _run(con, _readme_sql(s3_bucket, extension, s3_bucket.ca_file))
    assert len(rows) == sum(records for *_, records in EXPORTS)
    by_job: dict[str, list[str]] = {}
    for row in rows:
        by_job.setdefault(row[columns.index("job_id")], []).append(
            row[columns.index("subscriberid")]
        )
    assert {job: len(ids) for job, ids in by_job.items()} == {
        line["job_id"]: line["records"] for line in lines
    }
    assert sorted(by_job["902"]) == ["09020", "09021"]  # IDs stay strings, zeros kept
    stats = {row[columns.index("job_id")]: row[columns.index("stat")] for row in rows}
    assert stats == {"901": "7", "902": "12", "903": "13"}


def test_duckdb_refuses_the_endpoint_under_another_ca(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    duckdb, extension = need_duckdb_with_httpfs()
    _archive_exports(s3_bucket)
    other_ca = make_local_ca(tmp_path).ca_cert  # a CA, but not the one that signed the server
    con = _connect(duckdb)
    with pytest.raises(duckdb.Error, match=r"SSL peer certificate .* was not OK"):
        _run(con, _readme_sql(s3_bucket, extension, other_ca))
