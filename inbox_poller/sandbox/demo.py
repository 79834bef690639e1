"""``inbox-poller sandbox``: the whole loop on this machine, with no Pinpointe account.

A throwaway Dovecot (IMAP over TLS on loopback) stands in for the mailbox and the
simulator (:mod:`inbox_poller.sandbox.simulator`, HTTPS with a generated CA) for
Pinpointe: on submit it delivers a notification into the mailbox and serves the
payload. Everything else is the daemon's real code, configured through a real TOML file.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from inbox_poller.archive import sha256_of
from inbox_poller.archive_reader import MANIFEST_NAME
from inbox_poller.config import Config, load_config
from inbox_poller.errors import InboxPollerError, UsageError
from inbox_poller.loop.parts import LoopParts
from inbox_poller.loop.submitter import Submitter
from inbox_poller.methods import describe, make_request, method
from inbox_poller.models import CONTACT_DATA_METHOD, ExportRequest, ExportState, utc_now
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.simulator.server import PinpointeSimulator

SANDBOX_STAT = "1001"
SANDBOX_TARGETS = {"stat": SANDBOX_STAT, "list": "12", "segment": "7", "tag": "9"}
"""The ID the sandbox exports, by the method's target option (``methods.Method.target``)."""
WAIT_FOR_ARCHIVE_S = 60.0

CONFIG_TEMPLATE = """\
# Written by `inbox-poller sandbox`: the same keys as config.example.toml.
[pinpointe]
api_url = "{api_url}"
username = "{api_user}"
usertoken_file = "secrets/usertoken"
notify_email = "pinpointe-exports@sandbox.example"
ca_file = "{ca_file}"

[imap]
host = "127.0.0.1"
port = {imaps_port}
security = "tls"
username = "{imap_user}"
password_file = "secrets/imap-password"
folder = "INBOX"
processed_folder = "Processed"
ca_file = "{imap_ca}"

[download]
allowed_hosts = ["{host_rule}"]
allow_private_addresses = true
ca_file = "{ca_file}"

[archive]
dir = "archive"

[state]
path = "state/state.db"
"""


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def write_secret(path: Path, value: str) -> None:
    """Write a secret file a config names: mode 0600 from the start, in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")


def _sandbox_dir(directory: Path | None) -> Path:
    """Return the sandbox's directory, absolute (the closing hint works from anywhere).

    :raises UsageError: when *directory* is a file or cannot be created.
    """
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="inbox-poller-sandbox-"))
    base = directory.expanduser().absolute()
    if base.exists() and not base.is_dir():
        raise UsageError(f"--dir {directory}: not a directory")
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--dir {directory}: cannot create it: {exc.strerror}") from None
    return base


def shell_command() -> str:
    """Return how to run this inbox-poller from a fresh shell, where $PATH may lack it."""
    script = Path(sys.executable).parent / "inbox-poller"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m inbox_poller"


def sandbox_request(name: str, fmt: str | None) -> ExportRequest:
    """The export the sandbox submits for method *name* (yesterday, where it takes dates).

    :raises UsageError: a format the method does not take.
    """
    found = method(name)
    today = utc_now().date()
    start = end = None
    if found.date_form != "none":
        start = (today - timedelta(days=1)).strftime("%Y%m%d")
        end = today.strftime("%Y%m%d")
    key = found.target.key
    try:
        return make_request(name, {key: SANDBOX_TARGETS[key]}, fmt, start, end)
    except ValueError as exc:
        raise UsageError(f"sandbox: {exc}") from None


def run_sandbox(
    directory: Path | None,
    *,
    records: int,
    method_name: str = CONTACT_DATA_METHOD,
    fmt: str | None = None,
) -> int:
    """Run one export end to end and print each step; return the exit code.

    Run again in the same *directory*, it adds one more export to the same ledger and
    archive (a new Dovecot and simulator each time; the simulator's job IDs continue).
    """
    from inbox_poller.wiring import build_loop, build_submitter

    request = sandbox_request(method_name, fmt)
    base = _sandbox_dir(directory)
    _step(f"sandbox directory: {base}")
    with DovecotServer() as dovecot:
        _step(
            f"Dovecot (IMAP over TLS) listening on {dovecot.host}:{dovecot.imaps_port}, "
            f"mailbox user {dovecot.user!r}"
        )
        dovecot.create_folder("Processed")

        def deliver(raw: bytes) -> None:
            uid = dovecot.append("INBOX", raw)
            _step(f"simulator: notification mail delivered to INBOX (UID {uid})")

        simulator = PinpointeSimulator(
            base / "simulator", deliver=deliver, payload_records=records, notify_delay_s=0.5
        )
        with simulator:
            _step(f"simulated Pinpointe API at {simulator.api_url} (CA {simulator.ca_file})")
            config_path = base / "config.toml"
            # the Dovecot instance is deleted at the end; its CA stays usable for the config
            imap_ca = base / "imap-ca.pem"
            shutil.copyfile(dovecot.ca_file, imap_ca)
            write_secret(base / "secrets" / "usertoken", simulator.token)
            write_secret(base / "secrets" / "imap-password", dovecot.password)
            config_path.write_text(
                CONFIG_TEMPLATE.format(
                    api_url=simulator.api_url,
                    api_user=simulator.username,
                    ca_file=simulator.ca_file,
                    imaps_port=dovecot.imaps_port,
                    imap_user=dovecot.user,
                    imap_ca=imap_ca,
                    host_rule=simulator.host_rule,
                ),
                encoding="utf-8",
            )
            _step(f"configuration written to {config_path}")
            config = load_config(config_path)
            parts = build_loop(config)
            try:
                submitter = build_submitter(config, parts.store)
                return _run_loop(parts, submitter, simulator, config, config_path, request)
            finally:
                parts.close()


def _run_loop(
    parts: LoopParts,
    submitter: Submitter,
    simulator: PinpointeSimulator,
    config: Config,
    config_path: Path,
    request: ExportRequest,
) -> int:
    window = f" {request.startdate}..{request.enddate}" if request.startdate else ""
    _step(f"submitting {request.method} {describe(request)}{window}")
    export = submitter.submit(request)
    _step(f"Pinpointe answered with job ID {export.job_id}; waiting for its notification")
    deadline = time.monotonic() + WAIT_FOR_ARCHIVE_S
    while True:
        report = parts.poller.run_once(parts.mailbox)
        export = parts.store.get_export(export.export_id)
        if export.state is ExportState.ACKNOWLEDGED or time.monotonic() > deadline:
            break
        if report.failed:
            break
        time.sleep(0.5)
    if export.state is not ExportState.ACKNOWLEDGED or export.archived is None:
        _step(f"FAILED: export is {export.state.value}: {export.reason or report.failed}")
        return 1
    path = config.archive_dir / export.archived.path
    served = simulator.job(export.job_id or "").sha256
    if sha256_of(path) != served:
        raise InboxPollerError(f"{path}: the archived bytes differ from what was served")
    _step(
        f"archived {export.archived.bytes} bytes of {export.archived.format.upper()}, "
        f"{export.archived.records} records, "
        f"sha256 {export.archived.sha256} (equal to what the simulator served)"
    )
    _step(f"the mail was acknowledged: {export.mail} (keyword {config.imap.keyword}, moved)")
    again = parts.poller.run_once(parts.mailbox)
    _step(
        f"a second pass changes nothing: read {again.mails_seen} mail(s), archived "
        f"{len(again.archived)}, acknowledged {again.acknowledged}"
    )
    print()
    print(f"payload:   {path}")
    print(f"manifest:  {config.archive_dir / MANIFEST_NAME}")
    print(f"ledger:    {parts.store.path}")
    print(f"config:    {config_path}")
    print(f"look at the ledger with: {shell_command()} -c {shlex.quote(str(config_path))} exports")
    return 0
