"""The whole loop's test bed: a real IMAP folder, the simulator, a TOML file and the CLI.

``loop_env`` wires the session Dovecot and a per-test simulator together the way
a user would: the simulator APPENDs its notification mails into the test's
folder, and inbox-poller is configured through a real config file with its
secrets in private files. Tests drive it in-process (``env.loop()``) or as
real processes (``env.cli(...)``), which is what the crash tests need.
``server_loop_env`` does the same on each server implementation (Dovecot, Courier)
with ``processed_folder = "Processed"``, spelled the server's way by inbox-poller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.config import Config, load_config
from inbox_poller.loop.parts import LoopParts
from inbox_poller.sandbox.demo import write_secret
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.imapaccount import TestAccount
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from inbox_poller.wiring import build_loop
from tests.plugins import powerloss

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
[pinpointe]
api_url = "{api_url}"
username = "{api_user}"
usertoken_file = "secrets/usertoken"
notify_email = "exports@inbox.example"
ca_file = "{sim_ca}"
timeout_s = 10

[imap]
host = "127.0.0.1"
port = {imaps_port}
security = "tls"
username = "{imap_user}"
password_file = "secrets/imap-password"
folder = "{folder}"
{imap_extra}
ca_file = "{imap_ca}"
timeout_s = 10

[download]
allowed_hosts = ["{host_rule}"]
allow_private_addresses = true
ca_file = "{sim_ca}"
read_timeout_s = 5
retries = 2
backoff_s = 0.01
max_attempts = 2
{download_extra}

[archive]
{archive_section}

[state]
path = "state/state.db"
"""


@dataclass
class LoopEnv:
    """One test's mailbox folder, simulator, configuration and directories."""

    root: Path
    server: TestAccount
    folder: str
    processed: str
    """The processed folder's name on the server."""
    sim: PinpointeSimulator
    configured_processed: str | None = None
    """What the config says (default: ``processed``)."""
    built: list[LoopParts] = field(default_factory=list)
    """Every loop :meth:`loop` built, closed by :meth:`close` (the fixtures call it)."""
    archive_section: str = 'dir = "archive"'
    """The keys of ``[archive]`` (issue 14: ``url`` and its keys for an S3 archive)."""

    @property
    def dovecot(self) -> DovecotServer:
        """The IMAP server, for the tests that need Dovecot itself (restart, stop)."""
        assert isinstance(self.server, DovecotServer), "this test bed runs on Courier"
        return self.server

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    def write_config(
        self, *, move: bool = True, imap_extra: str = "", download_extra: str = ""
    ) -> None:
        """Write the config; *imap_extra* and *download_extra* are added to their sections."""
        configured = self.configured_processed or self.processed
        processed = f'processed_folder = "{configured}"' if move else ""
        self.config_path.write_text(
            CONFIG.format(
                api_url=self.sim.api_url,
                api_user=self.sim.username,
                sim_ca=self.sim.ca_file,
                imaps_port=self.server.imaps_port,
                imap_user=self.server.user,
                folder=self.folder,
                imap_extra="\n".join(line for line in (processed, imap_extra) if line),
                imap_ca=self.server.ca_file,
                host_rule=self.sim.host_rule,
                download_extra=download_extra,
                archive_section=self.archive_section,
            ),
            encoding="utf-8",
        )

    def config(self) -> Config:
        return load_config(self.config_path)

    def loop(self) -> LoopParts:
        parts = build_loop(self.config())
        self.built.append(parts)
        return parts

    def close(self) -> None:
        """Close every loop built here: its mail reader's worker, the mailbox, the ledger."""
        for parts in self.built:
            parts.close()

    def cli(
        self, *args: str, crash_at: str | None = None, ledger_image: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``inbox-poller -c CONFIG ARGS`` as a separate process.

        *ledger_image*: the ledger is copied there at each of its durable points
        (``powerloss.py``: what a power failure would leave of it).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_POLLER")}
        env["PYTHONPATH"] = str(REPO_ROOT)
        if crash_at is not None:
            env["INBOX_POLLER_CRASH_AT"] = crash_at
        program = ["-m", "inbox_poller"]
        if ledger_image is not None:
            env[powerloss.IMAGE_ENV] = str(ledger_image)
            program = ["-c", powerloss.BOOT]
        return subprocess.run(
            [sys.executable, *program, "-c", str(self.config_path), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def submit(self, stat: str = "4242") -> str:
        result = self.cli("submit", "--stat", stat, "--start", "20261101", "--end", "20261102")
        assert result.returncode == 0, result.stderr
        job_id = result.stdout.strip()
        self.sim.job(job_id).wait_delivered(30)
        return job_id

    def archived_files(self) -> list[Path]:
        if not self.archive_dir.exists():
            return []
        return sorted(p for p in self.archive_dir.rglob("*.json") if p.is_file())

    def part_files(self) -> list[Path]:
        if not self.archive_dir.exists():
            return []
        return sorted(self.archive_dir.rglob("*.part"))

    def manifest(self) -> list[dict[str, Any]]:
        path = self.archive_dir / "manifest.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def messages(self, folder: str | None = None) -> dict[int, tuple[bytes, ...]]:
        """Return UID -> flags of every message in *folder* (default: the test folder)."""
        client = self.server.client()
        try:
            client.select_folder(folder or self.folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            return {uid: data[b"FLAGS"] for uid, data in client.fetch(uids, ["FLAGS"]).items()}
        finally:
            client.logout()


def prepare_loop_env(
    root: Path,
    dovecot: TestAccount,
    folder: str,
    sim: PinpointeSimulator,
    *,
    imap_extra: str = "",
    processed_folder: str | None = None,
) -> LoopEnv:
    """Write the secrets and the config under *root*, for mail in *folder* on *dovecot*.

    Without *processed_folder* the processed folder is ``<folder>-done``, created
    here; with it, it is configured as given and left to inbox-poller to create.
    """
    if processed_folder is None:
        processed = f"{folder}-done"
        dovecot.create_folder(processed)
    else:
        processed = dovecot.folder_name(processed_folder)
    env = LoopEnv(root, dovecot, folder, processed, sim, processed_folder)
    write_secret(root / "secrets" / "usertoken", sim.token)
    write_secret(root / "secrets" / "imap-password", dovecot.password)
    env.write_config(imap_extra=imap_extra)
    return env


@pytest.fixture
def loop_env(
    tmp_path: Path, dovecot: DovecotServer, imap_folder: str, pinpointe_sim: PinpointeSimulator
) -> Iterator[LoopEnv]:
    """A configured inbox-poller against the session Dovecot and a fresh simulator."""
    env = prepare_loop_env(tmp_path, dovecot, imap_folder, pinpointe_sim)

    def deliver(raw: bytes) -> None:
        dovecot.append(imap_folder, raw)

    pinpointe_sim.deliver = deliver
    try:
        yield env
    finally:
        env.close()
        dovecot.delete_folder(env.processed)


@pytest.fixture
def server_loop_env(
    tmp_path: Path, imap_server: TestAccount, server_folder: str, pinpointe_sim: PinpointeSimulator
) -> Iterator[LoopEnv]:
    """A configured inbox-poller on each server, with ``processed_folder = "Processed"``."""
    env = prepare_loop_env(
        tmp_path, imap_server, server_folder, pinpointe_sim, processed_folder="Processed"
    )

    def deliver(raw: bytes) -> None:
        imap_server.append(server_folder, raw)

    pinpointe_sim.deliver = deliver
    try:
        yield env
    finally:
        env.close()
        if imap_server.folder_exists(env.processed):
            imap_server.delete_folder(env.processed)
