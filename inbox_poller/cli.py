"""The command line: the composition root, logging set-up and exit codes.

Exit codes: 0 ok, 1 failure, 2 usage, 78 configuration (``EX_CONFIG``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inbox_poller import __version__
from inbox_poller.archive import Archive
from inbox_poller.config import Config, load_config, resolve_config_path
from inbox_poller.errors import ConfigError, InboxPollerError
from inbox_poller.models import DATE_RE, STAT_ID_RE, ExportRequest, ExportState
from inbox_poller.poller import LAST_POLL_KEY, Poller, PollerSettings
from inbox_poller.store import Store
from inbox_poller.submitter import Submitter
from inbox_poller.urlpolicy import HostRule, parse_host_rule, redact_url

logger = logging.getLogger("inbox_poller")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


class UsageError(InboxPollerError):
    """Raised for command-line arguments that parse but make no sense."""


def _date(value: str) -> str:
    if not DATE_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a date in YYYYMMDD form")
    return value


def _stat(value: str) -> str:
    if not STAT_ID_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a stat ID (digits only)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inbox-poller",
        description="Submit Pinpointe async exports and archive the payloads their "
        "notification mails link to, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="the TOML configuration (default: $INBOX_POLLER_CONFIG, else "
        "/etc/inbox-poller/config.toml)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (journald-friendly, the default) or one JSON object per line",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="read the mailbox, download, archive, acknowledge")
    run.add_argument(
        "--once",
        action="store_true",
        help="one mailbox pass plus all pending downloads and acknowledgements, then exit",
    )

    submit = commands.add_parser("submit", help="submit one contact-data export; print its job ID")
    submit.add_argument("--stat", required=True, type=_stat, help="the campaign send's stat ID")
    submit.add_argument("--start", type=_date, metavar="YYYYMMDD", help="first day (inclusive)")
    submit.add_argument("--end", type=_date, metavar="YYYYMMDD", help="end day (exclusive)")

    status = commands.add_parser(
        "status", help="the daemon's health; exits 1 when it is unhealthy or not running"
    )
    status.add_argument("--json", action="store_true", help="print JSON")

    exports = commands.add_parser("exports", help="list the exports in the ledger")
    exports.add_argument(
        "--state", choices=[s.value for s in ExportState], help="only exports in this state"
    )
    exports.add_argument("--json", action="store_true", help="one JSON array, for scripts")

    check = commands.add_parser("check", help="validate the setup and probe the servers")
    check.add_argument(
        "--offline", action="store_true", help="skip the IMAP login and the Pinpointe call"
    )

    inspect = commands.add_parser(
        "inspect-email", help="show what inbox-poller reads in one .eml file"
    )
    inspect.add_argument("path", metavar="PATH", help="an RFC 822 message (.eml)")
    inspect.add_argument(
        "--pending",
        action="append",
        default=[],
        metavar="JOB_ID",
        help="treat this job ID as a pending export (repeatable)",
    )
    inspect.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="download.allowed_hosts entry to judge links with (default: from the config "
        "when one is given, else .mypinpointe.com)",
    )
    inspect.add_argument("--json", action="store_true", help="print JSON")

    sandbox = commands.add_parser(
        "sandbox",
        help="run the whole loop on this machine against a simulated Pinpointe and a local Dovecot",
    )
    sandbox.add_argument("--dir", metavar="DIR", help="keep the sandbox's files here")
    sandbox.add_argument(
        "--records", type=int, default=20000, help="records in the simulated payload"
    )
    return parser


_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """Prefix each line with ``<N>`` so journald records its priority (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the job ID, export and mail UID when known."""

    KEYS = ("job_id", "export_id", "uid")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self.KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(verbose: bool, log_format: str = "text") -> None:
    """Log to stderr without timestamps (journald adds them); quiet third-party loggers."""
    handler = logging.StreamHandler(sys.stderr)
    text = "%(levelname)s %(name)s: %(message)s"
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter(text))
    else:
        handler.setFormatter(logging.Formatter(text))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # imapclient logs every server line (message bodies, signed links) at DEBUG
    logging.getLogger("imapclient").setLevel(logging.WARNING)
    # urllib3 logs request paths with their signed query strings at DEBUG
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@contextmanager
def run_lock(state_path: Path) -> Iterator[None]:
    """Hold an exclusive lock next to the ledger: one pass or daemon per state."""
    lock_path = state_path.with_name(state_path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InboxPollerError(
                f"another inbox-poller is already running on {state_path} (lock {lock_path})"
            ) from None
        yield
    finally:
        os.close(fd)


def _settings(config: Config) -> PollerSettings:
    return PollerSettings(
        rules=config.download.host_rules,
        keyword=config.imap.keyword,
        max_download_attempts=config.download.max_attempts,
        sender_policy=config.sender_policy,
    )


def build_poller(
    config: Config, *, downloads: bool = True, stop: threading.Event | None = None
) -> Poller:
    """Wire the mailbox, downloader, ledger and archive named by the configuration."""
    from inbox_poller.download import SafeDownloader
    from inbox_poller.mailbox import ImapMailbox

    return Poller(
        Store(config.state_path),
        Archive(config.archive_dir),
        _settings(config),
        mailbox=ImapMailbox(config.imap, config.imap_password.read(), ca_file=config.imap_ca),
        downloader=SafeDownloader(config.download, ca_file=config.download_ca, stop=stop)
        if downloads
        else None,
        stop=stop,
    )


def build_submitter(config: Config, store: Store | None = None) -> Submitter:
    """Wire the Pinpointe client and the ledger for submissions."""
    from inbox_poller.api import PinpointeApi

    api = PinpointeApi(config.pinpointe, config.usertoken.read(), ca_file=config.pinpointe_ca)
    return Submitter(store or Store(config.state_path), api)


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    if not args.once:
        from inbox_poller.daemon import Daemon

        Archive(config.archive_dir).ensure_writable()
        with run_lock(config.state_path):
            daemon = Daemon(
                resolve_config_path(args.config),
                config,
                lambda cfg, stop: build_poller(cfg, stop=stop),
                lambda cfg, store: build_submitter(cfg, store),
            )
            return daemon.run()
    logger.info("%s", config.summary())
    Archive(config.archive_dir).ensure_writable()
    with run_lock(config.state_path):
        poller = build_poller(config)
        report = poller.run_once()
    print(
        f"read {report.mails_seen} mail(s): {len(report.matched)} matched, "
        f"{report.unmatched} unmatched, {len(report.refused)} refused; "
        f"archived {len(report.archived)}, acknowledged {report.acknowledged}, "
        f"failed {len(report.failed)}"
    )
    for job in report.archived:
        export = poller.store.export_by_job_id(job)
        if export is not None and export.archived is not None:
            print(f"archived job {job}: {config.archive_dir / export.archived.path}")
    for line in report.refused:
        print(f"refused mail {line}")
    for line in report.failed:
        print(f"failed: {line}")
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_submit(config: Config, args: argparse.Namespace) -> int:
    if args.start and args.end and args.start >= args.end:
        raise UsageError("--end must be after --start (the end date is exclusive)")
    submitter = build_submitter(config)
    export = submitter.submit(ExportRequest(stat=args.stat, startdate=args.start, enddate=args.end))
    print(export.job_id)
    return EXIT_OK


def _export_dict(export: Any, archive_dir: Path) -> dict[str, Any]:
    archived = export.archived
    return {
        "export_id": export.export_id,
        "state": export.state.value,
        "job_id": export.job_id,
        "stat": export.request.stat,
        "method": export.request.method,
        "startdate": export.request.startdate,
        "enddate": export.request.enddate,
        "reason": export.reason,
        "created_at": export.created_at.isoformat(),
        "updated_at": export.updated_at.isoformat(),
        "submitted_at": export.submitted_at.isoformat() if export.submitted_at else None,
        "archived_at": export.archived_at.isoformat() if export.archived_at else None,
        "acknowledged_at": export.acknowledged_at.isoformat() if export.acknowledged_at else None,
        "attempts": export.attempts,
        "download": redact_url(export.download_url) if export.download_url else None,
        "mail": str(export.mail) if export.mail else None,
        "message_id": export.message_id,
        "path": str(archive_dir / archived.path) if archived else None,
        "bytes": archived.bytes if archived else None,
        "sha256": archived.sha256 if archived else None,
        "records": archived.records if archived else None,
    }


def daemon_running(state_path: Path) -> bool:
    """Return whether a daemon or pass holds the lock next to the ledger."""
    lock_path = state_path.with_name(state_path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from datetime import datetime

    from inbox_poller.health import assess
    from inbox_poller.models import utc_now

    store = Store(config.state_path)
    last = store.daemon_values().get(LAST_POLL_KEY)
    health = assess(
        store.list_exports(),
        datetime.fromisoformat(last) if last else None,
        utc_now(),
        poll_interval_s=config.imap.poll_interval,
        notify_deadline_s=config.exports.notify_deadline,
    )
    running = daemon_running(config.state_path)
    problems = list(health.problems) if running else ["the daemon is not running", *health.problems]
    if args.json:
        print(
            json.dumps(
                {
                    "healthy": not problems,
                    "running": running,
                    "status": health.status_line(),
                    "problems": problems,
                    "pending": health.pending,
                    "oldest_pending_age_s": health.oldest_pending_age_s,
                    "last_poll_age_s": health.last_poll_age_s,
                    "counts": health.counts,
                },
                indent=2,
            )
        )
    else:
        print(health.status_line())
        print(f"daemon: {'running' if running else 'not running'}")
        for state in ExportState:
            if health.counts.get(state.value):
                print(f"  {state.value:<15} {health.counts[state.value]}")
        for problem in problems:
            print(f"problem: {problem}")
    return EXIT_OK if not problems else EXIT_FAILURE


def cmd_exports(config: Config, args: argparse.Namespace) -> int:
    store = Store(config.state_path)
    states = [ExportState(args.state)] if args.state else None
    exports = [_export_dict(e, config.archive_dir) for e in store.list_exports(states)]
    if args.json:
        print(json.dumps(exports, indent=2))
        return EXIT_OK
    if not exports:
        print("no exports")
        return EXIT_OK
    print(f"{'id':>5}  {'state':<14} {'job':<14} {'stat':<10} {'window':<19} detail")
    for e in exports:
        window = f"{e['startdate'] or '-'}..{e['enddate'] or '-'}"
        detail = e["path"] or e["reason"] or ""
        print(
            f"{e['export_id']:>5}  {e['state']:<14} {e['job_id'] or '-':<14} "
            f"{e['stat']:<10} {window:<19} {detail}"
        )
    return EXIT_OK


def _check_archive(config: Config) -> str:
    Archive(config.archive_dir).ensure_writable()
    return f"{config.archive_dir} is writable"


def _check_ledger(config: Config) -> str:
    counts = Store(config.state_path).counts_by_state()
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "empty"
    return f"{config.state_path} ({summary})"


def _check_secret(secret: Any) -> str:
    secret.read()
    return f"readable from {secret.source()}"


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from inbox_poller.api import PinpointeApi
    from inbox_poller.mailbox import ImapMailbox

    probes: list[tuple[str, Callable[[], str]]] = [
        ("archive", lambda: _check_archive(config)),
        ("ledger", lambda: _check_ledger(config)),
        ("imap password", lambda: _check_secret(config.imap_password)),
        ("pinpointe token", lambda: _check_secret(config.usertoken)),
    ]
    if not args.offline:
        probes.append(
            (
                "imap",
                lambda: ImapMailbox(
                    config.imap, config.imap_password.read(), ca_file=config.imap_ca
                ).check(),
            )
        )
        probes.append(
            (
                "pinpointe",
                lambda: PinpointeApi(
                    config.pinpointe, config.usertoken.read(), ca_file=config.pinpointe_ca
                ).check(),
            )
        )
    print(f"ok   config: {config.path}")
    failures = 0
    for name, probe in probes:
        try:
            print(f"ok   {name}: {probe()}")
        except InboxPollerError as exc:
            failures += 1
            print(f"FAIL {name}: {exc}")
    return EXIT_OK if failures == 0 else EXIT_FAILURE


def _inspection_rules(args: argparse.Namespace) -> tuple[HostRule, ...]:
    if args.allowed_host:
        try:
            return tuple(parse_host_rule(entry) for entry in args.allowed_host)
        except ValueError as exc:
            raise UsageError(f"--allowed-host: {exc}") from None
    if args.config or os.environ.get("INBOX_POLLER_CONFIG"):
        return load_config(resolve_config_path(args.config)).download.host_rules
    return (parse_host_rule(".mypinpointe.com"),)


def cmd_inspect(args: argparse.Namespace) -> int:
    from inbox_poller.inspection import format_inspection, inspect_email

    try:
        raw = Path(args.path).read_bytes()
    except OSError as exc:
        raise InboxPollerError(f"cannot read {args.path}: {exc.strerror}") from None
    report = inspect_email(raw, args.pending, _inspection_rules(args))
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from inbox_poller.sandbox import run_sandbox

    return run_sandbox(Path(args.dir) if args.dir else None, records=args.records)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    configure_logging(args.verbose, args.log_format)
    try:
        if args.command == "inspect-email":
            return cmd_inspect(args)
        if args.command == "sandbox":
            return cmd_sandbox(args)
        config = load_config(resolve_config_path(args.config))
        handlers = {
            "run": cmd_run,
            "submit": cmd_submit,
            "exports": cmd_exports,
            "status": cmd_status,
            "check": cmd_check,
        }
        return handlers[args.command](config, args)
    except ConfigError as exc:
        print(f"inbox-poller: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"inbox-poller: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InboxPollerError as exc:
        print(f"inbox-poller: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("inbox-poller: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`inbox-poller exports | head`): no traceback, and no
        # second error when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
