"""Network details the edges share: the TLS client context's trust, the ``Retry-After`` header."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inbox_poller.models import utc_now
from inbox_poller.net import _system_ca_directory, client_context, parse_retry_after
from inbox_poller.sandbox.localca import make_local_ca
from tests.plugins.https_servers import HttpsServer


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:01:00 GMT", now) == 60.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("soon", None), ("-3", None), ("12", 12.0)],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, utc_now()) == expected


def _hashed_directory(directory: Path, *cas: Path) -> Path:
    """Return *directory* holding *cas* as OpenSSL's hashed directory does (``<hash>.0``)."""
    directory.mkdir()
    for ca in cas:
        digest = subprocess.run(
            ["openssl", "x509", "-hash", "-noout", "-in", str(ca)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        shutil.copy(ca, directory / f"{digest}.0")
    return directory


def _handshake(context: ssl.SSLContext, server: HttpsServer) -> None:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost"),
    ):
        pass


@pytest.fixture
def no_system_trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty system trust: no bundle file, a hashed directory holding an unrelated CA."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    other = make_local_ca(tmp_path / "other")
    directory = _hashed_directory(tmp_path / "system-certs", other.ca_cert)
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    return directory


def test_system_cas_are_read_from_the_hashed_directory_when_a_chain_needs_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, https_server: HttpsServer
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    directory = _hashed_directory(tmp_path / "certs", https_server.ca_file)
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    context = client_context()
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing parsed before it is needed
    _handshake(context, https_server)
    assert context.cert_store_stats()["x509_ca"] == 1  # only the one the chain needed


def test_without_the_server_s_ca_in_the_system_trust_the_handshake_is_refused(
    no_system_trust: Path, https_server: HttpsServer
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(client_context(), https_server)
    _handshake(client_context(https_server.ca_file), https_server)  # ca_file adds it


def test_a_bundle_named_by_ssl_cert_file_is_loaded_as_before(
    no_system_trust: Path, monkeypatch: pytest.MonkeyPatch, https_server: HttpsServer
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server.ca_file))
    context = client_context()
    assert context.cert_store_stats()["x509_ca"] >= 1  # the bundle, parsed at once
    _handshake(context, https_server)


def test_a_directory_without_hashed_names_keeps_the_default_loading(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # e.g. a distribution whose certificate directory holds only bundle files
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "ca-bundle.crt").write_text("", encoding="ascii")
    monkeypatch.setenv("SSL_CERT_DIR", str(plain))
    assert _system_ca_directory() is None
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "missing"))
    assert _system_ca_directory() is None
