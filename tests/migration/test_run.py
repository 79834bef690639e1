"""``inbox-poller migrate``: a real SQLite ledger and local archive to PostgreSQL and S3.

The source is made by the real loop (``run --once`` against Dovecot and the simulator);
the target is the session's PostgreSQL and SeaweedFS. Checked without DuckDB: every
payload under its relative key with the manifest's SHA-256, one manifest object per
export holding its ``manifest.jsonl`` line, the IDs kept, a second run changing
nothing, and ``run --once`` on the target doing nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from inbox_poller.ledger import lock
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest, ExportState, utc_now
from tests.plugins.loop import LoopEnv
from tests.plugins.postgres import PgDatabase, postgres_session
from tests.plugins.seaweedfs import S3Bucket

pytestmark = [
    pytest.mark.dovecot,
    pytest.mark.postgres,
    pytest.mark.seaweedfs,
    pytest.mark.timeout(240),
]

PREFIX = "arch"


def _target_config(env: LoopEnv, database: PgDatabase, bucket: S3Bucket) -> Path:
    text = env.config_path.read_text(encoding="utf-8")
    s3 = bucket.archive_keys(PREFIX)
    text = text.replace(f"[archive]\n{env.archive_section}\n", f"[archive]\n{s3}\n")
    text = text.replace(
        '[state]\npath = "state/state.db"\n',
        f"[state]\n{database.state_keys()}\n",
    )
    target = env.root / "target.toml"
    target.write_text(text, encoding="utf-8")
    return target


def _objects(bucket: S3Bucket) -> dict[str, bytes]:
    client = bucket.client()
    listed = client.list_objects_v2(Bucket=bucket.name).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket.name, Key=item["Key"])["Body"].read()
        for item in listed
    }


def _pg_rows(database: PgDatabase, table: str) -> int:
    with database.connect() as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608
    return int(str(row[0])) if row else 0


def test_a_real_ledger_and_archive_move_to_postgresql_and_s3(
    loop_env: LoopEnv, pg_database: PgDatabase, s3_bucket: S3Bucket
) -> None:
    env = loop_env
    jobs = [env.submit("4242"), env.submit("4243")]
    done = env.cli("run", "--once")
    assert done.returncode == 0, done.stderr
    source_db = env.root / "state" / "state.db"
    manifest = (env.archive_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(manifest) == 2
    target = _target_config(env, pg_database, s3_bucket)

    # a dry run says what it would do and changes nothing
    dry = env.cli("migrate", "--to", str(target), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was changed" in dry.stdout
    assert "(target: no tables yet)" in dry.stdout
    assert "payloads would copy 2 (" in dry.stdout
    assert _pg_rows(pg_database, "exports") == 0
    assert _objects(s3_bucket) == {}

    # the ledger alone: every table, IDs kept
    ledger = env.cli("migrate", "--to", str(target), "--ledger-only")
    assert ledger.returncode == 0, ledger.stderr
    assert f"ledger: copied {source_db} to {pg_database.url} (target: empty)" in ledger.stdout
    assert "archive:" not in ledger.stdout
    source = sqlite3.connect(source_db)
    for table in ("exports", "mails", "mail_exports", "events", "watermarks", "daemon_state"):
        count = source.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
        extra = 1 if table == "daemon_state" else 0  # migrated_from
        assert _pg_rows(pg_database, table) == count + extra, table
    source_ids = [row[0] for row in source.execute("SELECT export_id FROM exports ORDER BY 1")]
    with Store(postgres_session(pg_database)) as pg_store:
        assert [e.export_id for e in pg_store.list_exports()] == source_ids
        assert {e.job_id: e.state for e in pg_store.list_exports()} == dict.fromkeys(
            jobs, ExportState.ACKNOWLEDGED
        )
        last_event = pg_store.last_event_id()
    assert _objects(s3_bucket) == {}

    # the archive alone; a payload changed since it was archived is reported, not copied
    changed_line = json.loads(manifest[1])  # lines are in archiving order, not submission order
    changed = env.archive_dir / changed_line["path"]
    original = changed.read_bytes()
    changed.write_bytes(original.replace(b"1", b"2", 1))
    first = env.cli("migrate", "--to", str(target), "--archive-only")
    assert first.returncode == 1, first.stderr
    assert "payloads copied 1 (" in first.stdout
    assert "not copied (1):" in first.stdout
    assert f"{changed_line['path']} (job {changed_line['job_id']}): the file has" in first.stdout
    changed.write_bytes(original)
    resumed = env.cli("migrate", "--to", str(target), "--archive-only")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "payloads copied 1 (" in resumed.stdout
    assert "already there 1" in resumed.stdout

    objects = _objects(s3_bucket)
    for text in manifest:
        line = json.loads(text)
        payload = objects[f"{PREFIX}/{line['path']}"]
        assert payload == (env.archive_dir / line["path"]).read_bytes()
        assert hashlib.sha256(payload).hexdigest() == line["sha256"]
        stem = line["path"].rsplit(".", 1)[0]
        assert json.loads(objects[f"{PREFIX}/manifest/{stem}.json"]) == line
    assert len(objects) == 4  # two payloads, two manifest objects, no part left

    # everything again: nothing to do, nothing changed
    again = env.cli("migrate", "--to", str(target))
    assert again.returncode == 0, again.stderr
    assert "already holds this migration; nothing to do" in again.stdout
    assert "payloads copied 0 (0 bytes), already there 2" in again.stdout
    assert "manifest objects written 0, already there 2" in again.stdout
    assert _objects(s3_bucket) == objects

    # the daemon on the target sees everything archived and does nothing twice
    run = env.cli("-c", str(target), "run", "--once")
    assert run.returncode == 0, run.stderr
    assert _objects(s3_bucket) == objects
    with Store(postgres_session(pg_database)) as pg_store:
        archived = [
            to for e in pg_store.list_exports() for _, _, to, _ in pg_store.history(e.export_id)
        ]
        assert archived.count("archived") == 2
        new = pg_store.create_export(ExportRequest("1"), pg_store.get_export(1).created_at)
        assert new.export_id == max(source_ids) + 1  # the sequence moved past the copied IDs
        assert pg_store.last_event_id() > last_event


def test_migrate_refuses_a_running_daemon_and_a_foreign_target(
    loop_env: LoopEnv, pg_database: PgDatabase, s3_bucket: S3Bucket
) -> None:
    env = loop_env
    env.submit("4242")
    assert env.cli("run", "--once").returncode == 0
    target = _target_config(env, pg_database, s3_bucket)
    with lock.run_lock(env.root / "state" / "state.db"):
        held = env.cli("migrate", "--to", str(target))
    assert held.returncode == 1
    assert "another inbox-poller is already running on" in held.stderr
    assert "stop it first" in held.stderr
    with Store(postgres_session(pg_database)) as other:
        other.create_export(ExportRequest("7"), utc_now())
    foreign = env.cli("migrate", "--to", str(target), "--ledger-only")
    assert foreign.returncode == 1
    assert "is not empty and was not made by `inbox-poller migrate`" in foreign.stderr
    same = env.cli("migrate", "--to", str(env.config_path))
    assert same.returncode == 2
    assert "nothing to migrate" in same.stderr
