"""A throwaway SeaweedFS on loopback serving S3 over HTTPS, for the tests and the sandbox.

The recipe is in ``docs/engines.md``: ``weed mini`` (master, volume, filer and the S3
gateway in one process, ready in about a second; ``weed server -s3`` took eight) in a
private directory, every listener on 127.0.0.1 at a free port kept across restarts, the
telemetry off, its logs on its stderr and its unix sockets in the directory (except the
gRPC ones, whose paths weed fixes in ``/tmp``: a stop deletes those of its ports). The
S3 port speaks HTTPS only, with a certificate from the sandbox's local CA (given a
certificate, ``weed`` serves TLS on ``-s3.port`` and no plain HTTP); requests are
signed with the one identity of ``s3.json``. The bucket is created at start
(``-bucket``). The server is ready only when a signed request over verified TLS reads
back an object from a volume (after a restart the S3 gateway answers before the volume
server has told the master where the old volumes are, and reads fail for a moment).
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import signal
import string
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TypeAlias

import boto3
import botocore.exceptions
from botocore.config import Config

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines, localca
from inbox_poller.sandbox.lifecycle import ThrowawayServer
from inbox_poller.sandbox.seaweedfs.binary import find_weed, weed_version

S3Client: TypeAlias = Any
"""boto3's S3 client (boto3 ships no types; its stubs would be one more package)."""

logger = logging.getLogger("inbox_poller.sandbox")

DEFAULT_BUCKET = "inbox-poller"
PROBE_BUCKET = "inbox-poller-ready"
"""Holds the one object a start writes and reads back (kept out of the test's bucket)."""
_PROBE_KEY = "ready"
REGION = "us-east-1"
"""SeaweedFS accepts any region in a signature; this is the one clients are given."""
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 2.0
"""How long a stop waits for weed's graceful shutdown before SIGKILL. It takes about a
second, but ten more while a client holds a keep-alive connection to the S3 port (as a
daemon does); a kill is as safe as the crash :meth:`SeaweedFSServer.crash` makes (tested)."""
_MARKER = "inbox-poller-seaweedfs"
"""A file naming a directory as one of ours (so nothing else is used, or deleted)."""
_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
_GRPC_SOCKETS = Path("/tmp")  # noqa: S108 (weed's own fixed choice, not ours)
"""Where weed puts ``seaweedfs-<component>-grpc-<port>.sock``, whatever TMPDIR says."""
_GRPC_OFFSET = 10000
"""The admin server's workers dial its HTTP port plus this, whatever ``-admin.port.grpc`` says."""


class SeaweedFSServer(ThrowawayServer):
    """One private SeaweedFS on 127.0.0.1 with one S3 identity and one bucket.

    Nothing happens until :meth:`start`. The directory is a new one in the system
    temporary directory unless given (it must then be empty or a previous instance's,
    whose objects survive). Credentials are random unless given; the ports are chosen
    at random and kept across :meth:`restart`.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        bucket: str = DEFAULT_BUCKET,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        binary: Path | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self._binary = binary if binary is not None else find_weed()
        self.version = weed_version(self._binary)
        self._bucket = bucket
        self._access_key_id = access_key_id or "AK" + "".join(
            random.choices(string.ascii_uppercase + string.digits, k=18)
        )
        self._secret_access_key = secret_access_key or secrets.token_urlsafe(30)
        self._dir = directory.absolute() if directory is not None else None
        self._owns_dir = False
        self._ports: dict[str, int] | None = None
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        """How long the last :meth:`start` took."""

    # ---- properties -------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise InboxPollerError("the SeaweedFS instance has not been started yet")
        return self._dir

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def s3_port(self) -> int:
        if self._ports is None:
            raise InboxPollerError("the SeaweedFS instance has not been started yet")
        return self._ports["s3"]

    @property
    def ports(self) -> dict[str, int]:
        """Every listener's port by name (``s3``, ``master``, ``filer_grpc``, ``admin``, …)."""
        if self._ports is None:
            raise InboxPollerError("the SeaweedFS instance has not been started yet")
        return {**self._ports, "admin_grpc": self._ports["admin"] + _GRPC_OFFSET}

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, ``https://127.0.0.1:<port>`` (path-style addressing: an IP)."""
        return f"https://{self.host}:{self.s3_port}"

    @property
    def region(self) -> str:
        return REGION

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def access_key_id(self) -> str:
        return self._access_key_id

    @property
    def secret_access_key(self) -> str:
        return self._secret_access_key

    @property
    def access_key_id_file(self) -> Path:
        """A file holding the access key ID (mode 0600), for ``access_key_id_file``."""
        return self.directory / "access-key-id"

    @property
    def secret_access_key_file(self) -> Path:
        """A file holding the secret key (mode 0600), for ``secret_access_key_file``."""
        return self.directory / "secret-access-key"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the endpoint's certificate (``ca_file``)."""
        return self.directory / "ssl" / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "weed.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def settings(self) -> dict[str, str]:
        """Return the instance's settings as KEY=VALUE pairs (for the sandbox command)."""
        return {
            "DIR": str(self.directory),
            "PID": str(self.pid or ""),
            "ENDPOINT_URL": self.endpoint_url,
            "REGION": self.region,
            "BUCKET": self.bucket,
            "ACCESS_KEY_ID_FILE": str(self.access_key_id_file),
            "SECRET_ACCESS_KEY_FILE": str(self.secret_access_key_file),
            "CAFILE": str(self.ca_file),
            "LOG": str(self.log_path),
        }

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until a signed request over verified TLS succeeds.

        :raises InboxPollerError: with the last log line when it exits or times out.
        """
        if self.running:
            return
        started = time.monotonic()
        self._prepare_directory()
        for attempt in range(1, 4):
            fixed = self._ports is not None
            if self._ports is None:
                self._ports = _choose_ports()
            try:
                self._launch()
                break
            except InboxPollerError as exc:
                self.stop()
                if "already in use" not in str(exc) or fixed or attempt == 3:
                    raise
                logger.info("seaweedfs %s: %s; retrying on other ports", self.directory, exc)
                self._ports = None
        self.start_seconds = time.monotonic() - started
        logger.info(
            "seaweedfs %s: S3 ready on %s in %.3fs",
            self.directory,
            self.endpoint_url,
            self.start_seconds,
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes and closes its volumes). A no-op when stopped."""
        if self._process is None:
            return
        engines.stop(
            self._process,
            signal.SIGTERM,
            engine=f"seaweedfs {self.directory}",
            timeout_s=STOP_GRACE_S,
        )
        self._process = None
        self._remove_grpc_sockets()

    def crash(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or a pulled cable would."""
        if self._process is None:
            return
        engines.stop(self._process, signal.SIGKILL, engine=f"seaweedfs {self.directory}")
        self._process = None
        self._remove_grpc_sockets()

    # ---- clients ----------------------------------------------------------------------

    def client(self, *, attempts: int = 1, timeout_s: float = 10.0) -> S3Client:
        """Return a boto3 S3 client for the endpoint: path-style, this CA, these credentials.

        *attempts* is botocore's ``max_attempts`` (1: no retries, so an outage shows at once).
        """
        session = boto3.session.Session(
            aws_access_key_id=self._access_key_id,
            aws_secret_access_key=self._secret_access_key,
            region_name=REGION,
        )
        client: S3Client = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            verify=str(self.ca_file),
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": attempts, "mode": "standard"},
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
            ),
        )
        return client

    def create_bucket(self, name: str | None = None) -> str:
        """Create an empty bucket; return its name (``t-<hex>`` by default)."""
        name = name or f"t-{uuid.uuid4().hex}"
        self.client(attempts=3).create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Abort the bucket's multipart uploads, delete its objects, then the bucket."""
        client = self.client(attempts=3)
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)

    # ---- internals --------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="inbox-poller-seaweedfs-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        marker = self._dir / _MARKER
        if any(self._dir.iterdir()) and not marker.exists():
            raise InboxPollerError(
                f"{self._dir} is neither empty nor a SeaweedFS instance directory; "
                "refusing to use it"
            )
        self._owns_dir = True
        marker.touch()
        self._dir.chmod(0o700)
        for sub in ("data", "log", "tmp"):
            (self._dir / sub).mkdir(mode=0o700, exist_ok=True)
        localca.make_local_ca(self._dir / "ssl")
        identity = {
            "name": "inbox-poller",
            "credentials": [
                {"accessKey": self._access_key_id, "secretKey": self._secret_access_key}
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        engines.write_secret(
            self._dir / "s3.json", json.dumps({"identities": [identity]}, indent=2)
        )
        engines.write_secret(self.access_key_id_file, self._access_key_id)
        engines.write_secret(self.secret_access_key_file, self._secret_access_key)

    def _command(self) -> list[str]:
        assert self._ports is not None
        ports = self._ports
        ssl_dir = self.directory / "ssl"
        flags = {
            "ip": self.host,
            "ip.bind": self.host,
            "dir": str(self.directory / "data"),
            "master.telemetry": "false",
            "master.port": ports["master"],
            "master.port.grpc": ports["master_grpc"],
            "volume.port": ports["volume"],
            "volume.port.grpc": ports["volume_grpc"],
            "volume.preStopSeconds": 0,
            "filer.port": ports["filer"],
            "filer.port.grpc": ports["filer_grpc"],
            "filer.localSocket": str(self.directory / "tmp" / "filer.sock"),
            "s3.port": ports["s3"],
            "s3.port.grpc": ports["s3_grpc"],
            "s3.localSocket": str(self.directory / "tmp" / "s3.sock"),
            "s3.config": str(self.directory / "s3.json"),
            "s3.cert.file": str(ssl_dir / "server.pem"),
            "s3.key.file": str(ssl_dir / "server.key"),
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "admin.port": ports["admin"],
            "admin.ui": "false",
            "webdav": "false",
            "bucket": f"{self._bucket},{PROBE_BUCKET}",
        }
        # glog's flags go before the command; the rest are weed mini's
        return [
            str(self._binary),
            "-logtostderr",
            "mini",
            *(f"-{name}={value}" for name, value in flags.items()),
        ]

    def _remove_grpc_sockets(self) -> None:
        """Delete the gRPC sockets weed left in ``/tmp`` for this instance's ports."""
        if self._ports is None:
            return
        for port in [port for name, port in self.ports.items() if name.endswith("_grpc")]:
            for path in _GRPC_SOCKETS.glob(f"seaweedfs-*-grpc-{port}.sock"):
                if path.is_socket():
                    path.unlink(missing_ok=True)

    def _launch(self) -> None:
        for port in self.ports.values():
            if not engines.port_is_free(port):
                raise InboxPollerError(f"127.0.0.1:{port}: port already in use")
        offset = engines.log_size(self.log_path)
        process = engines.launch(self._command(), self.log_path)
        self._process = process
        probe = self.client(timeout_s=2.0)
        engines.wait_until_ready(
            process,
            lambda: _ready(probe, self._bucket),
            engine="SeaweedFS",
            log_path=self.log_path,
            log_offset=offset,
            timeout_s=self._start_timeout_s,
        )


def _choose_ports() -> dict[str, int]:
    """Return a free port for each listener, and one for the admin server whose +10000 is free."""
    ports = dict(zip(_PORTS, engines.free_ports(len(_PORTS), "SeaweedFS"), strict=True))
    low, high = engines.PORT_RANGE
    for _ in range(200):
        admin = random.randrange(low, high - _GRPC_OFFSET)
        if (
            admin not in ports.values()
            and admin + _GRPC_OFFSET not in ports.values()
            and engines.port_is_free(admin)
            and engines.port_is_free(admin + _GRPC_OFFSET)
        ):
            return {**ports, "admin": admin}
    raise InboxPollerError("no free loopback port found for SeaweedFS's admin server")


def _ready(client: S3Client, bucket: str) -> bool:
    """Return whether the bucket exists and the probe object reads back (written if new)."""
    try:
        client.head_bucket(Bucket=bucket)
        try:
            client.get_object(Bucket=PROBE_BUCKET, Key=_PROBE_KEY)["Body"].read()
        except client.exceptions.NoSuchKey:
            client.put_object(Bucket=PROBE_BUCKET, Key=_PROBE_KEY, Body=b"ready\n")
            client.get_object(Bucket=PROBE_BUCKET, Key=_PROBE_KEY)["Body"].read()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False
    return True
