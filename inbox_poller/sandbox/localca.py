"""A throwaway certificate authority for the sandbox and the tests.

It issues one server certificate for ``localhost``, ``127.0.0.1`` and ``::1``
(the IP entries let Python's hostname check pass for loopback addresses), so
clients verify certificates exactly as they would against a real server, with
only ``ca_file`` pointing here. Keys are EC P-256 (milliseconds to generate),
made with the ``openssl`` command that ``dovecot-core`` already depends on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from inbox_poller.errors import InboxPollerError

_SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"


@dataclass(frozen=True)
class LocalCA:
    """Paths of a generated CA and the server certificate it signed."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise InboxPollerError("the openssl command is missing: apt-get install openssl")
    result = subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise InboxPollerError(f"openssl {args[0]} failed: {result.stderr.strip()[:500]}")


def make_local_ca(directory: Path) -> LocalCA:
    """Create (or reuse) a CA and a loopback server certificate in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = LocalCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if ca.ca_cert.exists() and ca.server_cert.exists() and ca.server_key.exists():
        return ca
    old_umask = os.umask(0o077)
    try:
        _openssl(
            "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=directory
        )
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/CN=inbox-poller local test CA",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )
        _openssl(
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "server.key",
            cwd=directory,
        )
        _openssl(
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=localhost",
            "-out",
            "server.csr",
            cwd=directory,
        )
        (directory / "server.ext").write_text(
            f"{_SAN}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n", encoding="ascii"
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
            cwd=directory,
        )
    finally:
        os.umask(old_umask)
    # the CA certificate is public; readable by the unprivileged Dovecot processes
    for public in (ca.ca_cert, ca.server_cert):
        public.chmod(0o644)
    return ca
