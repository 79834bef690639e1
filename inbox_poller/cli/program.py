"""The command line: the parser, dispatch to the subcommands and exit codes.

Exit codes: 0 ok, 1 failure, 2 usage, 78 configuration (``EX_CONFIG``).
The object graph is built in ``wiring``, logging is set up by ``logsetup`` and the
subcommands live in ``commands``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from inbox_poller import __version__
from inbox_poller.cli.commands import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_USAGE,
    cmd_archive,
    cmd_check,
    cmd_exports,
    cmd_inspect,
    cmd_run,
    cmd_sandbox,
    cmd_status,
    cmd_submit,
)
from inbox_poller.cli.logsetup import configure_logging, report_final_error
from inbox_poller.config import load_config, resolve_config_path
from inbox_poller.errors import ConfigError, InboxPollerError, UsageError
from inbox_poller.models import DATE_RE, STAT_ID_RE, ExportState


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

    archive = commands.add_parser(
        "archive",
        help="check the archive",
        description="Work with the archive directory (archive.dir).",
    )
    archive_commands = archive.add_subparsers(
        dest="archive_command", required=True, metavar="ARCHIVE_COMMAND"
    )
    verify = archive_commands.add_parser(
        "verify",
        help="check every payload against the manifest; exit 1 on any problem",
        description="Check the archive against manifest.jsonl, like `restic check`: every "
        "line names its own job ID and file, every file has the recorded size and SHA-256, "
        "and no other file (stray or partial) lies in the archive. Reads each file once, "
        "as a stream; run it as a member of archive.group, or as the service's user.",
        epilog="example: inbox-poller archive verify --json\n"
        "exit codes: 0 no problem, 1 a problem (each one is printed), 2 usage, "
        "78 configuration",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument(
        "--dir", metavar="DIR", help="the archive to check (default: archive.dir of the config)"
    )

    sandbox = commands.add_parser(
        "sandbox",
        help="run the whole loop on this machine against a simulated Pinpointe and a local Dovecot",
    )
    sandbox.add_argument("--dir", metavar="DIR", help="keep the sandbox's files here")
    sandbox.add_argument(
        "--records", type=int, default=20000, help="records in the simulated payload"
    )
    return parser


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
        if args.command == "archive":
            return cmd_archive(args)
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
        report_final_error(f"configuration error: {exc}", EXIT_CONFIG, args.log_format)
        return EXIT_CONFIG
    except UsageError as exc:
        report_final_error(str(exc), EXIT_USAGE, args.log_format)
        return EXIT_USAGE
    except InboxPollerError as exc:
        report_final_error(str(exc), EXIT_FAILURE, args.log_format)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        report_final_error("interrupted", 130, args.log_format)
        return 130
    except BrokenPipeError:
        # the reader went away (`inbox-poller exports | head`): no traceback, and no
        # second error when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
