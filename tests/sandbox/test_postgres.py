"""The throwaway PostgreSQL (inbox_poller/sandbox/postgres/, docs/engines.md)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines, localca
from inbox_poller.sandbox.postgres.binaries import INSTALL_HINT, find_bindir
from inbox_poller.sandbox.postgres.server import PostgresServer
from tests.plugins.postgres import PgDatabase, require_postgres

pytestmark = pytest.mark.postgres


def test_the_role_logs_in_with_its_password_over_verified_tls(
    postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\npostgres: session cluster started in {postgres.start_seconds:.2f}s")
    password = postgres.password_file.read_text(encoding="utf-8").strip()
    assert postgres.url.startswith(f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/")
    with psycopg.connect(postgres.url, password=password) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), ssl, version"
            " FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        listen = conn.execute("SHOW listen_addresses").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    assert row == (postgres.user, postgres.database, True, row[3] if row else None)
    assert row is not None and row[3] in ("TLSv1.2", "TLSv1.3")
    assert listen == ("127.0.0.1",)
    assert fsync == ("off",)  # speed over crash safety unless durable=True
    assert postgres.password_file.stat().st_mode & 0o077 == 0


def test_a_wrong_password_is_refused(postgres: PostgresServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres.url, password="not-" + postgres.password)


def test_a_connection_without_tls_is_refused(postgres: PostgresServer) -> None:
    url = postgres.url.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(url, password=postgres.password)


def test_a_client_that_trusts_another_ca_refuses_the_server(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    other = localca.make_local_ca(tmp_path / "other-ca")
    url = postgres.url.replace(str(postgres.ca_file), str(other.ca_cert))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(url, password=postgres.password)


def test_each_test_gets_a_fresh_database_of_its_own(pg_database: PgDatabase) -> None:
    with pg_database.connect() as conn:
        owner, tables = conn.execute(
            "SELECT pg_get_userbyid(datdba),"
            " (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')"
            " FROM pg_database WHERE datname = current_database()"
        ).fetchone() or (None, None)
        conn.execute("CREATE TABLE t (n int)")
    assert owner == pg_database.server.user
    assert tables == 0
    assert pg_database.url.split("?")[0].endswith(f"/{pg_database.name}")


def test_a_restart_drops_connections_and_keeps_commits(
    postgres: PostgresServer, pg_database: PgDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    before = pg_database.connect()
    before.execute("CREATE TABLE kept (n int)")
    before.execute("INSERT INTO kept VALUES (1)")
    started = time.monotonic()
    postgres.restart()
    with capsys.disabled():
        print(f"\npostgres: restart in {time.monotonic() - started:.2f}s")
    with pytest.raises(psycopg.OperationalError):
        before.execute("SELECT 1")
    before.close()
    with pg_database.connect() as after:
        assert after.execute("SELECT n FROM kept").fetchall() == [(1,)]


def test_a_stop_or_a_crash_leaves_no_process_and_cleanup_no_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = PostgresServer(durable=True)
    server.start()
    try:
        with capsys.disabled():
            print(f"\npostgres: a new cluster (initdb too) started in {server.start_seconds:.2f}s")
        postmaster = server.pid
        assert postmaster is not None
        with server.connect() as conn:
            assert conn.execute("SHOW fsync").fetchone() == ("on",)
            # the checkpointer, the writers, the launchers and this connection's backend
            family = engines.descendants(postmaster)
            assert len(family) > 3
        server.crash()
        assert not engines.alive(postmaster)
        assert [pid for pid in family if engines.alive(pid)] == []
        server.start()  # recovers from the crash, on the same port
        postmaster = server.pid
        assert postmaster is not None
        family = engines.descendants(postmaster)
        server.stop()
        assert not engines.alive(postmaster)
        assert [pid for pid in family if engines.alive(pid)] == []
        assert engines.port_is_free(server.port)
        assert not server.running
    finally:
        server.cleanup()
    assert not server.directory.exists()


def test_a_directory_of_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InboxPollerError, match="neither empty nor a PostgreSQL instance"):
        PostgresServer(tmp_path).start()
    assert (tmp_path / "precious.txt").exists()


def test_a_missing_postgres_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(InboxPollerError) as caught:
        find_bindir(root=tmp_path, search_path=str(tmp_path))
    assert INSTALL_HINT in str(caught.value)


def test_the_newest_major_version_is_chosen(tmp_path: Path) -> None:
    for major in ("9", "15", "13"):
        bindir = tmp_path / major / "bin"
        bindir.mkdir(parents=True)
        for name in ("postgres", "initdb"):
            (bindir / name).write_text("#!/bin/sh\n", encoding="ascii")
            (bindir / name).chmod(0o700)
    (tmp_path / "17" / "bin").mkdir(parents=True)  # a leftover without the programs
    assert find_bindir(root=tmp_path) == tmp_path / "15" / "bin"


def test_the_fixture_skips_without_postgres_but_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=INSTALL_HINT):
        require_postgres(root=tmp_path, search_path=str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=INSTALL_HINT):
        require_postgres(root=tmp_path, search_path=str(tmp_path))
