"""Fixtures for tests against a real PostgreSQL on loopback (docs/engines.md).

* ``postgres``: one cluster per session (``initdb`` and start, about 1.5 s; stopped and
  deleted at teardown), TLS only on TCP, a password for the test role. Without the
  server programs (or psycopg) the tests are skipped with the install command, except in
  CI (``CI`` set), where that is a failure.
* ``pg_database``: a fresh database owned by the test role per test (about 0.1 s),
  dropped afterwards: a ``PgDatabase`` with the URL, the password file and the CA.
* ``postgres_restart``: restart the session cluster (same port and data; every
  connection drops) for the outage tests.

Tests that use them carry ``pytest.mark.postgres``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines
from inbox_poller.sandbox.postgres.binaries import DEBIAN_ROOT, INSTALL_HINT, find_bindir
from tests.plugins.dovecot import running_in_ci

if TYPE_CHECKING:
    import psycopg

    from inbox_poller.ledger.engine import EngineSession
    from inbox_poller.sandbox.postgres.server import PostgresServer


def require_postgres(root: Path = DEBIAN_ROOT, search_path: str | None = None) -> None:
    """Skip the test when PostgreSQL cannot run here; fail it instead when running in CI."""
    try:
        find_bindir(root, search_path)
        engines.service_user("postgres", f"postgres refuses to run as root; {INSTALL_HINT}")
        if importlib.util.find_spec("psycopg") is None:
            raise InboxPollerError("psycopg is not installed: pip install -e '.[test]'")
    except InboxPollerError as exc:
        if running_in_ci():
            pytest.fail(f"PostgreSQL is required in CI: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL cannot run here: {exc}")


@dataclass(frozen=True)
class PgDatabase:
    """One test's database on the session cluster, and what a client needs to reach it."""

    server: PostgresServer
    name: str

    @property
    def url(self) -> str:
        """``postgresql://user@127.0.0.1:port/name?sslmode=verify-full&sslrootcert=…``."""
        return self.server.url_for(self.name)

    @property
    def password_file(self) -> Path:
        return self.server.password_file

    @property
    def ca_file(self) -> Path:
        return self.server.ca_file

    def state_keys(self) -> str:
        """The ``[state]`` keys of a ledger in this database (TOML lines)."""
        return f'url = "{self.url}"\npassword_file = "{self.password_file}"'

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """Return a new connection of the test role (autocommit)."""
        return self.server.connect(self.name, autocommit=True)


def postgres_session(database: PgDatabase, *, read_only: bool = False) -> EngineSession:
    """Open *database* as a ledger engine (``ledger.postgres``), as ``[state] url`` would."""
    from inbox_poller.ledger.postgres import open_postgres

    password = database.password_file.read_text(encoding="utf-8").strip()
    return open_postgres(database.url, password, read_only=read_only)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One running PostgreSQL cluster for the whole session."""
    require_postgres()
    from inbox_poller.sandbox.postgres.server import PostgresServer

    server = PostgresServer()
    with server:
        yield server


@pytest.fixture
def pg_database(postgres: PostgresServer) -> Iterator[PgDatabase]:
    """A fresh, empty database for one test, owned by the test role."""
    postgres.start()  # a test before may have left it stopped
    database = PgDatabase(postgres, postgres.create_database())
    yield database
    if postgres.running:
        postgres.drop_database(database.name)


@pytest.fixture
def postgres_restart(postgres: PostgresServer) -> Callable[[], None]:
    """Restart the session cluster: every connection drops, data and port stay."""
    return postgres.restart
