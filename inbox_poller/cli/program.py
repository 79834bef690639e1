"""The command line: the parser, dispatch to the subcommands and exit codes.

Exit codes: 0 ok, 1 failure, 2 usage, 78 configuration (``EX_CONFIG``); ``wait`` adds
124 (timed out). The object graph is built in ``wiring``, logging is set up by
``logsetup`` and the subcommands live in ``commands``.

Each subcommand's parser is defined by one ``_add_<name>`` function listed in
:data:`SUBCOMMANDS`, through :func:`add_command`, which gives it the global options
(``-c``, ``-v``, ``-q``, ``--log-format``: accepted before or after the subcommand) and
a ``--help`` with a description, an example and the exit codes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, TypeAlias

from inbox_poller import __version__
from inbox_poller.cli.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_TEMPFAIL, EXIT_USAGE
from inbox_poller.cli.logsetup import configure_logging, report_final_error
from inbox_poller.errors import ConfigError, InboxPollerError, LedgerUnavailable, UsageError
from inbox_poller.methods import ALL_OPTION_KEYS, FORMATS, METHODS
from inbox_poller.models import CONTACT_DATA_METHOD, JOB_ID_RE, STAT_ID_RE, ExportState

PROG = "inbox-poller"

if TYPE_CHECKING:
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

_DATE_FORMS = (
    re.compile(r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})"),
    re.compile(r"(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})"),
)

EXIT_CODES_COMMON = (
    ("2", "usage error (an unknown option, a malformed value)"),
    ("75", "the PostgreSQL ledger is unavailable for now (try again later)"),
    ("78", "configuration error (the file, a key or a secret; nothing was done)"),
)


def _date(value: str) -> str:
    """Return *value*, a real date as YYYYMMDD or YYYY-MM-DD, as YYYYMMDD."""
    for form in _DATE_FORMS:
        if found := form.fullmatch(value):
            try:
                day = date(int(found["y"]), int(found["m"]), int(found["d"]))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{value!r} is not a real date: {exc}") from None
            return f"{day:%Y%m%d}"
    raise argparse.ArgumentTypeError(f"{value!r} is not a date in YYYYMMDD or YYYY-MM-DD form")


def _stat(value: str) -> str:
    if not STAT_ID_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a stat ID (digits only)")
    return value


def _job_id(value: str) -> str:
    if not JOB_ID_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a job ID")
    return value


def _duration(value: str) -> float:
    from inbox_poller.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Add ``-c``, ``-v``, ``-q`` and ``--log-format``.

    On the top-level parser they carry the defaults; on each subcommand they are
    ``SUPPRESS``ed, so that a value given there overrides the top level's and a value
    not given there leaves it alone.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options (before or after the subcommand)")
    group.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=default(None),
        help="the TOML configuration (default: $INBOX_POLLER_CONFIG, else "
        "/etc/inbox-poller/config.toml)",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log debug details"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="log warnings and errors only",
    )
    group.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=default("text"),
        help="text (journald-friendly, the default) or one JSON object per line",
    )


def _epilog(examples: Sequence[str], exit_codes: Sequence[tuple[str, str]]) -> str:
    """Return the examples and the exit codes (the command's own first, then the common
    ones it does not give itself)."""
    codes = dict(exit_codes)
    for code, meaning in EXIT_CODES_COMMON:
        codes.setdefault(code, meaning)
    lines = ["example:" if len(examples) == 1 else "examples:"]
    lines += [f"  {example}" for example in examples]
    lines += ["", "exit status:"]
    width = max(len(code) for code in codes)
    for code in sorted(codes, key=int):
        wrapped = textwrap.wrap(codes[code], width=75 - width)
        lines.append(f"  {code:<{width}}  {wrapped[0]}")
        lines += [f"  {'':<{width}}  {more}" for more in wrapped[1:]]
    return "\n".join(lines)


def _command(name: str) -> Callable[..., int]:
    """The subcommand *name* of ``commands``, imported when it runs: ``--help`` and a usage
    error import none of them, and ``commands`` imports only what every command shares
    (bench/bench_cli_startup.py)."""

    def run(*args: object) -> int:
        from inbox_poller.cli import commands

        return int(getattr(commands, name)(*args))

    run.__name__ = run.__qualname__ = name
    return run


def add_command(
    commands: SubParsers,
    name: str,
    *,
    summary: str,
    description: str,
    examples: Sequence[str],
    exit_codes: Sequence[tuple[str, str]],
    handler: Callable[..., int] | None,
    needs_config: bool = True,
) -> argparse.ArgumentParser:
    """Add one subcommand with the global options and a ``--help`` that shows its use.

    *exit_codes* lists what the command itself returns; usage (2) and configuration
    (78) errors are added. *handler* is ``handler(config, args)`` when *needs_config*,
    else ``handler(args)``; ``None`` for a group whose own subcommands have handlers.
    """
    parser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, width=79),
        epilog=_epilog(examples, exit_codes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, suppress=True)
    parser.set_defaults(handler=handler, needs_config=needs_config)
    return parser


# ---- the subcommands, one function each -------------------------------------------------


def _add_run(commands: SubParsers) -> None:
    run = add_command(
        commands,
        "run",
        summary="read the mailbox, download, archive, acknowledge",
        description="Run the daemon (IDLE on the mailbox, the download pool, scheduled "
        "exports, hooks) until SIGTERM; SIGHUP reloads the configuration. With --once, make "
        "one mailbox pass with every pending download, acknowledgement and due hook, then "
        "exit (for cron).",
        examples=[f"{PROG} run --once"],
        exit_codes=[
            ("0", "stopped on request (--once: everything it tried worked)"),
            ("1", "--once: the mailbox could not be read, a download or a hook failed"),
            (
                "78",
                "configuration error, or archive.dir is unusable (not creatable, not "
                "writable, a file); the fix is named",
            ),
        ],
        handler=_command("cmd_run"),
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="one mailbox pass plus all pending downloads and acknowledgements, then exit",
    )


def _add_submit(commands: SubParsers) -> None:
    submit = add_command(
        commands,
        "submit",
        summary="submit one async export (any Pinpointe method); print its job ID",
        description="Record one async export in the ledger, POST it to Pinpointe once, and "
        "print the job ID it answers with. --method picks the method (default "
        f"{CONTACT_DATA_METHOD}); each method takes its own options, and an option or "
        "--format it does not take is a usage error. Dates are checked before anything is "
        "written.",
        examples=[
            f"{PROG} submit --stat 12345 --start 2026-11-01 --end 2026-11-02",
            f"{PROG} submit --method GetTagSubscribersAsync --tag 7 --format csv",
        ],
        exit_codes=[
            ("0", "submitted: the job ID is on stdout"),
            ("1", "Pinpointe refused the request, or its answer was lost (see `exports`)"),
            (
                "2",
                "usage error, an option or format the method does not take, a date that does "
                "not exist, or --end not after --start",
            ),
        ],
        handler=_command("cmd_submit"),
    )
    submit.add_argument(
        "--method",
        default=CONTACT_DATA_METHOD,
        choices=list(METHODS),
        metavar="METHOD",
        help=f"the Pinpointe method: {', '.join(METHODS)} (default: %(default)s)",
    )
    submit.add_argument("--stat", type=_stat, help="the campaign send's stat ID")
    for key in ALL_OPTION_KEYS:
        if key == "stat":
            continue
        kinds = {o.kind: o for m in METHODS.values() if (o := m.option(key)) is not None}
        option = kinds.get("ids") or next(iter(kinds.values()))
        users = ", ".join(
            name + (" (repeatable)" if o.kind == "ids" else "")
            for name, m in METHODS.items()
            if (o := m.option(key)) is not None
        )
        if option.kind == "flag":
            submit.add_argument(
                option.flag, dest=key, action="store_true", default=None, help=f"({users})"
            )
        else:
            submit.add_argument(
                option.flag,
                dest=key,
                action="append" if option.kind == "ids" else "store",
                metavar=option.key.upper(),
                help=f"{option.help} ({users})",
            )
    submit.add_argument(
        "--format", choices=list(FORMATS), help="the payload format, where the method takes one"
    )
    submit.add_argument(
        "--start", type=_date, metavar="DATE", help="first day, inclusive (YYYYMMDD or YYYY-MM-DD)"
    )
    submit.add_argument(
        "--end", type=_date, metavar="DATE", help="end day, exclusive (YYYYMMDD or YYYY-MM-DD)"
    )


def _add_wait(commands: SubParsers) -> None:
    wait = add_command(
        commands,
        "wait",
        summary="block until an export is archived; print its file's path",
        description="Wait until the export with this job ID is archived and print the "
        "archived file's path on stdout (for Airflow, cron and shell callers). An export "
        "that Pinpointe failed and the daemon resubmits is followed to its replacement. "
        "Reads the ledger only; the daemon (or `run --once`) does the work.",
        examples=[f'path=$({PROG} wait "$({PROG} submit --stat 12345)" --timeout 2h)'],
        exit_codes=[
            ("0", "archived: the file's path is on stdout"),
            ("1", "the export failed for good, or no export has this job ID"),
            ("124", "timed out; the export is still under way"),
        ],
        handler=_command("cmd_wait"),
    )
    wait.add_argument("job_id", metavar="JOB_ID", type=_job_id, help="the job ID `submit` printed")
    wait.add_argument(
        "--timeout",
        type=_duration,
        default=24 * 3600.0,
        metavar="DURATION",
        help="give up after this long: seconds, or 90s, 30m, 2h, 1d (default: 1d)",
    )
    wait.add_argument(
        "--interval",
        type=_duration,
        default=2.0,
        metavar="DURATION",
        help="how often to look at the ledger (default: 2s)",
    )


def _add_status(commands: SubParsers) -> None:
    status = add_command(
        commands,
        "status",
        summary="the daemon's health; exits 1 when it is unhealthy or not running",
        description="Judge the daemon from its ledger: pending exports and their age, "
        "the last mailbox pass, exports past their deadline, failing hooks. Opens the "
        "ledger read-only.",
        examples=[f"{PROG} status --json"],
        exit_codes=[
            ("0", "healthy"),
            ("1", "unhealthy, not running, or no ledger yet (every problem is printed)"),
        ],
        handler=_command("cmd_status"),
    )
    status.add_argument("--json", action="store_true", help="print JSON")


def _add_exports(commands: SubParsers) -> None:
    exports = add_command(
        commands,
        "exports",
        summary="list the exports in the ledger",
        description="List every export in the ledger, oldest first, with its state, window, "
        "archived file or the reason it failed, and its hooks. Opens the ledger read-only.",
        examples=[f"{PROG} exports --state failed", f"{PROG} exports --json | jq '.[].path'"],
        exit_codes=[("0", "listed"), ("1", "no ledger at the configured state.path")],
        handler=_command("cmd_exports"),
    )
    states = [s.value for s in ExportState]
    exports.add_argument(
        "--state",
        choices=states,
        metavar="STATE",
        help=f"only exports in this state: {', '.join(states)}",
    )
    exports.add_argument("--json", action="store_true", help="one JSON array, for scripts")


def _add_check(commands: SubParsers) -> None:
    check = add_command(
        commands,
        "check",
        summary="validate the setup and probe the servers",
        description="Check the configuration, the archive directory, the ledger (read-only), "
        "the secrets and the hooks, then log in to IMAP and call Pinpointe's "
        "Authentication/APITest. Prints one line per check: ok, warn or FAIL.",
        examples=[f"{PROG} check --offline"],
        exit_codes=[("0", "every check passed (warnings allowed)"), ("1", "a check failed")],
        handler=_command("cmd_check"),
    )
    check.add_argument(
        "--offline", action="store_true", help="skip the IMAP login and the Pinpointe call"
    )


def _add_migrate(commands: SubParsers) -> None:
    migrate = add_command(
        commands,
        "migrate",
        summary="move a SQLite ledger to PostgreSQL and a local archive to S3",
        description="Copy the ledger (every table, keeping IDs) and the archive (every "
        "payload the manifest names, checked by SHA-256, and one manifest object each) from "
        "the configuration given with -c to the one given with --to. Each half moves only "
        "when the two differ ([state] path to url, [archive] dir to url). Stop the daemon "
        "first. Safe to run again: it resumes, and a finished migration changes nothing. "
        "See docs/migration.md.",
        examples=[f"{PROG} migrate --to /etc/inbox-poller/new.toml --dry-run"],
        exit_codes=[
            ("0", "everything is in the target"),
            ("1", "something could not be copied (listed), or the target was refused"),
        ],
        handler=_command("cmd_migrate"),
    )
    migrate.add_argument(
        "--to",
        required=True,
        metavar="CONFIG",
        help="the configuration the daemon will run with afterwards (the target)",
    )
    migrate.add_argument(
        "--dry-run", action="store_true", help="say what would be copied; change nothing"
    )
    halves = migrate.add_mutually_exclusive_group()
    halves.add_argument("--ledger-only", action="store_true", help="move the ledger only")
    halves.add_argument("--archive-only", action="store_true", help="move the archive only")


def _add_auth(commands: SubParsers) -> None:
    group = add_command(
        commands,
        "auth",
        summary="OAuth2 sign-in for the mailbox (imap.auth = oauth2)",
        description="Get the first refresh token, and see the state of the OAuth2 sign-in.",
        examples=[f"{PROG} auth login", f"{PROG} auth status"],
        exit_codes=[("0", "done")],
        handler=None,
    )
    actions = group.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    login = add_command(
        actions,
        "login",
        summary="sign in once and write the refresh token where the daemon reads it",
        description="Run the interactive consent once, where a person is present: the "
        "device-code flow for Microsoft (prints a code and the page to enter it on), the "
        "authorization-code flow with PKCE and a loopback redirect on 127.0.0.1 for Google "
        "and generic providers (prints the URL to open). The refresh token is written with "
        "mode 0600 to imap.oauth2.refresh_token_file (or --output); it is never printed.",
        examples=[f"{PROG} auth login", f"{PROG} auth login --output ./refresh-token"],
        exit_codes=[("0", "the refresh token was written"), ("1", "the sign-in failed")],
        handler=_command("cmd_auth"),
    )
    login.add_argument(
        "--output",
        metavar="FILE",
        help="write the refresh token here (default: imap.oauth2.refresh_token_file)",
    )
    status = add_command(
        actions,
        "status",
        summary="the grant, the access token's expiry and rotations (never a token)",
        description="Show what the daemon (or the last command) recorded in the state "
        "directory, without a token request: the grant, the token endpoint, when the access "
        "token expires, whether the refresh token was rotated and the last failure. Tokens "
        "themselves are never shown; `check` gets a token and logs in with it.",
        examples=[f"{PROG} auth status --json"],
        exit_codes=[("0", "shown")],
        handler=_command("cmd_auth"),
    )
    status.add_argument("--json", action="store_true", help="print JSON")


def _add_config(commands: SubParsers) -> None:
    group = add_command(
        commands,
        "config",
        summary="show the effective configuration",
        description="Work with the configuration file.",
        examples=[f"{PROG} config show"],
        exit_codes=[("0", "done")],
        handler=None,
    )
    actions = group.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = add_command(
        actions,
        "show",
        summary="print the effective configuration, secrets redacted",
        description="Print the configuration as inbox-poller reads it: every key with its "
        "default filled in, relative paths resolved, and for each secret where it is read "
        "from (never its value). The TOML output is itself a valid configuration.",
        examples=[f"{PROG} -c /etc/inbox-poller/config.toml config show"],
        exit_codes=[("0", "printed")],
        handler=_command("cmd_config_show"),
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")


def _add_inspect(commands: SubParsers) -> None:
    inspect = add_command(
        commands,
        "inspect-email",
        summary="show what inbox-poller reads in one .eml file",
        description="Read one saved mail as the daemon would: its job IDs, links, the "
        "verdict on each link and which export it would match. Nothing is recorded.",
        examples=[f"{PROG} inspect-email notification.eml --pending 987654 --json"],
        exit_codes=[("0", "shown"), ("1", "the file cannot be read")],
        handler=_command("cmd_inspect"),
        needs_config=False,
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


def _add_archive(commands: SubParsers) -> None:
    group = add_command(
        commands,
        "archive",
        summary="check the archive",
        description="Work with the archive (archive.dir, or the bucket of archive.url).",
        examples=[f"{PROG} archive verify"],
        exit_codes=[("0", "done")],
        handler=None,
        needs_config=False,
    )
    actions = group.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    verify = add_command(
        actions,
        "verify",
        summary="check every payload against the manifest; exit 1 on any problem",
        description="Check the archive against manifest.jsonl, like `restic check`: every "
        "line names its own job ID and file, every file has the recorded size and SHA-256, "
        "and no other file (stray or partial) lies in the archive. Reads each file once, "
        "as a stream; run it as a member of archive.group, or as the service's user. On an "
        "S3 archive (archive.url) the manifest is one object per export under manifest/, "
        "and leftover .parts/ objects and incomplete multipart uploads are reported too.",
        examples=[f"{PROG} archive verify --json", f"{PROG} archive verify --dir /srv/archive"],
        exit_codes=[("0", "no problem"), ("1", "a problem (each one is printed)")],
        handler=_command("cmd_archive"),
        needs_config=False,
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument(
        "--dir",
        metavar="DIR",
        help="the archive directory to check (default: archive.dir or archive.url of the config)",
    )


def _add_sandbox(commands: SubParsers) -> None:
    sandbox = add_command(
        commands,
        "sandbox",
        summary="run the whole loop on this machine against a simulated Pinpointe and a "
        "local Dovecot",
        description="Start a throwaway Dovecot and the Pinpointe simulator, write a "
        "configuration for them, and submit, receive, download, archive and acknowledge one "
        "export with inbox-poller's real code. Running it again in the same --dir adds "
        "another export to the same ledger and archive.",
        examples=[f"{PROG} sandbox --dir ~/inbox-poller-sandbox --records 500"],
        exit_codes=[("0", "the export was archived and acknowledged"), ("1", "a step failed")],
        handler=_command("cmd_sandbox"),
        needs_config=False,
    )
    sandbox.add_argument("--dir", metavar="DIR", help="keep the sandbox's files here")
    sandbox.add_argument(
        "--records", type=int, default=20000, help="records in the simulated payload"
    )
    sandbox.add_argument(
        "--method",
        default=CONTACT_DATA_METHOD,
        choices=list(METHODS),
        metavar="METHOD",
        help=f"the Pinpointe method to export: {', '.join(METHODS)} (default: %(default)s)",
    )
    sandbox.add_argument(
        "--format", choices=list(FORMATS), help="the payload format, where the method takes one"
    )


SUBCOMMANDS: dict[str, Callable[[SubParsers], None]] = {
    "run": _add_run,
    "submit": _add_submit,
    "wait": _add_wait,
    "status": _add_status,
    "exports": _add_exports,
    "check": _add_check,
    "auth": _add_auth,
    "config": _add_config,
    "inspect": _add_inspect,
    "archive": _add_archive,
    "migrate": _add_migrate,
    "sandbox": _add_sandbox,
}
_VALUED_OPTIONS = ("--config", "--log-format")
"""The global options that take a value (``-c`` is ``--config``'s short form)."""


def named_command(argv: Sequence[str]) -> str | None:
    """Return the subcommand *argv* runs, if it names a known one before any doubt.

    The first word that is neither an option nor an option's value is the command. An
    abbreviated long option (argparse takes ``--conf`` for ``--config``) counts as one
    that takes a value when it abbreviates one that does.
    """
    words = iter(argv)
    for word in words:
        if word == "-c" or (
            word.startswith("--")
            and "=" not in word
            and any(o.startswith(word) for o in _VALUED_OPTIONS)
        ):
            next(words, None)
        elif not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the command line's parser; with *command*, with that subcommand only.

    Building all twelve subcommands' parsers costs about 15 ms, a tenth of a command's
    start-up (bench/bench_cli_startup.py), so ``main`` builds the one it will run; an
    unknown or missing command gets them all, for the list of choices and the help.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Submit Pinpointe async exports and archive the payloads their "
        "notification mails link to, exactly once.",
        epilog=f"`{PROG} COMMAND --help` shows each command's use, an example and its exit "
        "codes.\nexit status: 0 ok, 1 failure, 2 usage, 75 ledger unavailable, 78 configuration.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in SUBCOMMANDS.items():
        if command is None or name == command:
            add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser(named_command(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
        if args.verbose and args.quiet:
            parser.error("-v and -q cannot be used together")
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    configure_logging(args.verbose, args.log_format, quiet=args.quiet)
    try:
        if not args.needs_config:
            return int(args.handler(args))
        from inbox_poller.config import load_config, resolve_config_path

        config = load_config(resolve_config_path(args.config))
        return int(args.handler(config, args))
    except ConfigError as exc:
        report_final_error(f"configuration error: {exc}", EXIT_CONFIG, args.log_format)
        return EXIT_CONFIG
    except UsageError as exc:
        report_final_error(str(exc), EXIT_USAGE, args.log_format)
        return EXIT_USAGE
    except LedgerUnavailable as exc:
        report_final_error(
            f"{exc} (the ledger is unavailable; try again later)", EXIT_TEMPFAIL, args.log_format
        )
        return EXIT_TEMPFAIL
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
