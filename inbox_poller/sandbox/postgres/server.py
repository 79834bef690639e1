"""A throwaway PostgreSQL cluster on loopback, for the tests, the benchmarks and the sandbox.

The recipe is in ``docs/engines.md``: ``initdb`` into a private directory, then the
``postgres`` server in the foreground as our child, its settings on its command line
(``-c``), listening on 127.0.0.1 only with its unix socket inside the directory. Every
connection authenticates with a password (``scram-sha-256``) and TCP takes TLS only
(``hostssl``; a plain connection is rejected), with a certificate from the sandbox's
local CA, so clients use ``sslmode=verify-full``. Postgres refuses to run as root: as
root, the directory is given to Debian's ``postgres`` system user and the server runs as
that user. The server is ready only when the test role logs in over TLS and runs a query.
"""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines, localca
from inbox_poller.sandbox.lifecycle import ThrowawayServer
from inbox_poller.sandbox.postgres.binaries import INSTALL_HINT, find_bindir

logger = logging.getLogger("inbox_poller.sandbox")

DEFAULT_USER = "inbox_poller"
DEFAULT_DATABASE = "inbox_poller"
SUPERUSER = "postgres"
SERVICE_USER = "postgres"
"""Debian's system user for PostgreSQL (created by the ``postgresql-common`` package)."""
START_TIMEOUT_S = 30.0
_MARKER = "inbox-poller-postgres"
"""A file naming a directory as one of ours (so nothing else is used, or deleted)."""


class PostgresServer(ThrowawayServer):
    """One private PostgreSQL cluster on 127.0.0.1 with a test role and its database.

    Nothing happens until :meth:`start`; the first start runs ``initdb`` and creates the
    role *user* (password *password*, random by default) owning the database *database*.
    The directory is a new one in the system temporary directory unless given (it must
    then be empty or a previous instance's). The port is chosen at random unless given,
    and kept across :meth:`restart`. Unless *durable*, the cluster trades crash safety
    for speed (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off): a stop
    or restart keeps every commit, a crash of the machine would not, which is the right
    trade for tests; benchmarks that compare with production pass ``durable=True``.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        user: str = DEFAULT_USER,
        database: str = DEFAULT_DATABASE,
        password: str | None = None,
        port: int | None = None,
        bindir: Path | None = None,
        durable: bool = False,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self._bindir = bindir if bindir is not None else find_bindir()
        for what, value in (("user", user), ("database", database)):
            if not value.isidentifier() or value != value.lower():
                raise InboxPollerError(
                    f"the test {what} {value!r} must be a lower-case SQL identifier"
                )
        self._user = user
        self._database = database
        self._password_given = password is not None
        self._password = password if password is not None else secrets.token_urlsafe(18)
        self._superuser_password = secrets.token_urlsafe(18)
        self._dir = directory.absolute() if directory is not None else None
        self._owns_dir = False
        self._fixed_port = port
        self._port: int | None = None
        self._durable = durable
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._service_user = engines.service_user(
            SERVICE_USER, f"postgres refuses to run as root; {INSTALL_HINT} creates it"
        )
        self.start_seconds: float | None = None
        """How long the last :meth:`start` took (``initdb`` included on the first)."""

    # ---- properties -------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise InboxPollerError("the PostgreSQL instance has not been started yet")
        return self._dir

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise InboxPollerError("the PostgreSQL instance has not been started yet")
        return self._port

    @property
    def user(self) -> str:
        return self._user

    @property
    def database(self) -> str:
        return self._database

    @property
    def password(self) -> str:
        return self._password

    @property
    def password_file(self) -> Path:
        """A file holding the test role's password (mode 0600), for ``[state] password_file``."""
        return self.directory / "password"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the server's certificate (``sslrootcert``)."""
        return self.directory / "ssl" / "ca.pem"

    @property
    def data_directory(self) -> Path:
        return self.directory / "data"

    @property
    def socket_directory(self) -> Path:
        return self.directory / "run"

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "postgres.log"

    @property
    def url(self) -> str:
        """``postgresql://user@127.0.0.1:port/db`` with ``sslmode=verify-full`` (no password)."""
        return self.url_for(self._database)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs (the backends are its children)."""
        return self._process.pid if self.running and self._process is not None else None

    def url_for(self, database: str, *, user: str | None = None) -> str:
        """Return the URL of *database* for *user* (default: the test role), TLS verified."""
        return (
            f"postgresql://{quote(user or self._user)}@{self.host}:{self.port}/{quote(database)}"
            f"?sslmode=verify-full&sslrootcert={quote(str(self.ca_file))}"
        )

    def settings(self) -> dict[str, str]:
        """Return the instance's settings as KEY=VALUE pairs (for the sandbox command)."""
        return {
            "DIR": str(self.directory),
            "PID": str(self.pid or ""),
            "HOST": self.host,
            "PORT": str(self.port),
            "USER": self.user,
            "DATABASE": self.database,
            "PASSWORD_FILE": str(self.password_file),
            "CAFILE": str(self.ca_file),
            "URL": self.url,
            "LOG": str(self.log_path),
        }

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the cluster (``initdb`` the first time) and wait until the role can log in.

        :raises InboxPollerError: with the last log line when it exits or times out.
        """
        if self.running:
            return
        started = time.monotonic()
        self._prepare_directory()
        if not (self.data_directory / "PG_VERSION").exists():
            self._initdb()
        for attempt in range(1, 4):
            if self._port is None:
                self._port = self._fixed_port or engines.free_ports(1, "PostgreSQL")[0]
            try:
                self._launch()
                break
            except InboxPollerError as exc:
                self.stop()
                lost_race = "already in use" in str(exc)
                if not lost_race or self._fixed_port is not None or attempt == 3:
                    raise
                logger.info("postgres %s: %s; retrying on another port", self.directory, exc)
                self._port = None
        self._ensure_role()
        self.start_seconds = time.monotonic() - started
        logger.info(
            "postgres %s: ready on 127.0.0.1:%s in %.3fs",
            self.directory,
            self.port,
            self.start_seconds,
        )

    def stop(self) -> None:
        """Stop the cluster with a fast shutdown: clients are disconnected, commits kept.

        A no-op when nothing runs. Nothing of the cluster's process group is left behind.
        """
        if self._process is None:
            return
        engines.stop(self._process, signal.SIGINT, engine=f"postgres {self.directory}")
        self._process = None

    def crash(self) -> None:
        """Kill the postmaster and its backends at once (SIGKILL), as a machine crash would."""
        if self._process is None:
            return
        engines.stop(self._process, signal.SIGKILL, engine=f"postgres {self.directory}")
        self._process = None

    # ---- clients ----------------------------------------------------------------------

    def connect(
        self, database: str | None = None, *, timeout_s: float = 5.0, autocommit: bool = False
    ) -> psycopg.Connection[tuple[object, ...]]:
        """Return a new connection of the test role to *database* (default: its own)."""
        return psycopg.connect(
            self.url_for(database or self._database),
            password=self._password,
            connect_timeout=max(1, round(timeout_s)),
            autocommit=autocommit,
        )

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database owned by the test role; return its name (``t_<hex>``)."""
        name = name or f"t_{uuid.uuid4().hex}"
        with self._admin() as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self._user)
                )
            )
        return name

    def drop_database(self, name: str) -> None:
        """Drop *name*, disconnecting whoever still uses it."""
        with self._admin() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            self.url_for("postgres", user=SUPERUSER),
            password=self._superuser_password,
            connect_timeout=5,
            autocommit=True,
        )

    # ---- internals --------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="inbox-poller-postgres-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        marker = self._dir / _MARKER
        if any(self._dir.iterdir()) and not marker.exists():
            raise InboxPollerError(
                f"{self._dir} is neither empty nor a PostgreSQL instance directory; "
                "refusing to use it"
            )
        self._owns_dir = True
        if self.running:
            return
        marker.touch()
        # a previous instance's directory keeps its passwords (initdb set the superuser's)
        self._superuser_password = _read_secret(
            self._dir / "superuser-password", self._superuser_password
        )
        if not self._password_given:
            self._password = _read_secret(self.password_file, self._password)
        for sub in ("run", "log"):
            (self._dir / sub).mkdir(mode=0o700, exist_ok=True)
        ca = localca.make_local_ca(self._dir / "ssl")
        engines.write_secret(self.password_file, self._password)
        engines.write_secret(self._dir / "superuser-password", self._superuser_password)
        # as root, the server runs as the postgres user: it owns the directory, the
        # sockets' directory, its key (postgres refuses a key others can read) and its log
        engines.give_to(
            self._service_user,
            self._dir,
            self._dir / "run",
            self._dir / "log",
            self._dir / "superuser-password",
            ca.server_key,
        )
        self._dir.chmod(0o700)

    def _initdb(self) -> None:
        engines.run_as(
            self._service_user,
            [
                str(self._bindir / "initdb"),
                "--pgdata",
                str(self.data_directory),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(self.directory / "superuser-password"),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )
        (self.data_directory / "pg_hba.conf").write_text(
            "# written by inbox_poller.sandbox.postgres (docs/engines.md): passwords\n"
            "# everywhere, TLS only on TCP, loopback only\n"
            "local     all  all                scram-sha-256\n"
            "hostssl   all  all  127.0.0.1/32  scram-sha-256\n"
            "hostnossl all  all  0.0.0.0/0     reject\n",
            encoding="ascii",
        )

    def _command(self) -> list[str]:
        ssl_dir = self.directory / "ssl"
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_directory),
            "ssl": "on",
            "ssl_cert_file": str(ssl_dir / "server.pem"),
            "ssl_key_file": str(ssl_dir / "server.key"),
            "ssl_min_protocol_version": "TLSv1.2",
            "password_encryption": "scram-sha-256",
            "shared_buffers": "32MB",
            "max_connections": "100",
            "logging_collector": "off",
        }
        if not self._durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        command = [str(self._bindir / "postgres"), "-D", str(self.data_directory)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        return command

    def _launch(self) -> None:
        if not engines.port_is_free(self.port):
            raise InboxPollerError(f"127.0.0.1:{self.port}: port already in use")
        offset = engines.log_size(self.log_path)
        process = engines.launch(self._command(), self.log_path, self._service_user)
        self._process = process
        engines.wait_until_ready(
            process,
            self._superuser_ready,
            engine="PostgreSQL",
            log_path=self.log_path,
            log_offset=offset,
            timeout_s=self._start_timeout_s,
        )

    def _superuser_ready(self) -> bool:
        try:
            with self._admin() as admin:
                admin.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _ensure_role(self) -> None:
        """Create the test role and its database on the first start (idempotent)."""
        with self._admin() as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (self._user,)
            ).fetchone()
            if exists is None:
                admin.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(self._user), sql.Literal(self._password)
                    )
                )
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self._database,)
            ).fetchone()
            if exists is None:
                admin.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self._database), sql.Identifier(self._user)
                    )
                )
        with self.connect() as conn:
            conn.execute("SELECT 1")


def _read_secret(path: Path, default: str) -> str:
    """Return the secret in *path*, or *default* when there is none yet."""
    try:
        return path.read_text(encoding="utf-8").strip() or default
    except FileNotFoundError:
        return default
