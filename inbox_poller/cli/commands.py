"""The subcommands behind ``inbox-poller``: each takes the parsed arguments, prints its
result and returns an exit code.

Every exit code the command line uses is defined here; ``program`` maps the errors a
command raises (``ConfigError``, ``UsageError``, any other ``InboxPollerError``) to them.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inbox_poller.cli import exits
from inbox_poller.cli.configshow import render_toml
from inbox_poller.config import (
    CONFIG_ENV,
    Config,
    DownloadConfig,
    Secret,
    load_config,
    resolve_config_path,
)
from inbox_poller.errors import (
    ArchiveError,
    ConfigError,
    InboxPollerError,
    StoreError,
    UsageError,
)
from inbox_poller.methods import ALL_OPTION_KEYS, METHODS, make_request, target
from inbox_poller.models import (
    CONTACT_DATA_METHOD,
    Export,
    ExportRequest,
    ExportState,
    HookRun,
    utc_now,
)
from inbox_poller.service.health import Health, format_age, ledger_health, utc_iso
from inbox_poller.urlpolicy import HostRule, parse_host_rule, redact_url
from inbox_poller.wiring import (
    build_api,
    build_loop,
    build_mailbox,
    build_metrics,
    build_submitter,
    build_token_source,
    ledger_cluster,
    ledger_lock,
    ledger_running,
    mailbox_lock,
    open_store,
)

if TYPE_CHECKING:
    from inbox_poller.archive_reader import Problem, Verification
    from inbox_poller.oauth.tokens import TokenSource

logger = logging.getLogger("inbox_poller.cli")

EXIT_OK = exits.EXIT_OK
EXIT_FAILURE = exits.EXIT_FAILURE
EXIT_USAGE = exits.EXIT_USAGE
EXIT_CONFIG = exits.EXIT_CONFIG
EXIT_TIMEOUT = exits.EXIT_TIMEOUT

_ARCHIVE_FIXES = {
    errno.EROFS: "the file system is read-only here; under the systemd unit only "
    "/var/lib/inbox-poller (StateDirectory=) is writable: put archive.dir under it, or name "
    "the directory in ReadWritePaths= in a drop-in (docs/systemd.md)",
    errno.EACCES: "make the directory (and its parents) writable by the user inbox-poller "
    "runs as (uid {uid}), or set archive.dir to one that is",
    errno.EPERM: "make the directory (and its parents) writable by the user inbox-poller "
    "runs as (uid {uid}), or set archive.dir to one that is",
    errno.ENOENT: "create the directory, or set archive.dir to one that exists",
    errno.ENOTDIR: "archive.dir, or one of its parents, is a file: point archive.dir at a "
    "directory",
    errno.EEXIST: "archive.dir is a file: point it at a directory",
    errno.ELOOP: "archive.dir goes through a symbolic link loop: point it at a directory",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter archive.dir",
}
"""What to do about an archive directory that cannot be used, by the errno that said so.
Other errors (a full disk, an I/O error) are not the configuration's and exit 1."""


def _archive_fix(exc: ArchiveError) -> str | None:
    cause = exc.__cause__
    if not isinstance(cause, OSError) or cause.errno not in _ARCHIVE_FIXES:
        return None
    return _ARCHIVE_FIXES[cause.errno].format(uid=os.geteuid())


def _require_s3_archive(config: Config) -> str:
    """Prove the bucket of archive.url reachable and writable; return its URL."""
    from inbox_poller.wiring import build_s3_archive

    assert config.archive_s3 is not None
    build_s3_archive(config).ensure_writable()
    return config.archive_s3.url


def _require_archive(config: Config) -> None:
    """Prove archive.dir usable; an unusable one is a configuration error (exit 78)."""
    from inbox_poller.archive import Archive  # here: status and exports need no archive

    if config.archive_s3 is not None:
        _require_s3_archive(config)
        return
    try:
        Archive(config.archive_dir, config.archive_group).ensure_writable()
    except ArchiveError as exc:
        fix = _archive_fix(exc)
        if fix is None:
            raise
        raise ConfigError(f"{exc}; fix: {fix}", path=str(config.path), key="archive.dir") from None


def _warn_exposed_secrets(config: Config) -> None:
    for secret in config.secrets:
        if warning := secret.exposure():
            logger.warning("%s", warning)


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    _require_archive(config)
    _warn_exposed_secrets(config)
    with ledger_lock(config):
        metrics = build_metrics(config, "once" if args.once else "daemon")
        try:
            if not args.once:
                from inbox_poller.service.daemon import Daemon

                daemon = Daemon(
                    resolve_config_path(args.config),
                    config,
                    lambda cfg, stop: build_loop(cfg, stop=stop, metrics=metrics),
                    lambda cfg, store: build_submitter(cfg, store, metrics=metrics),
                    metrics=metrics,
                    mailbox_lock=mailbox_lock,
                )
                return daemon.run()
            logger.info("%s", config.summary())
            parts = build_loop(config, metrics=metrics)
            # never read the mailbox while a daemon watches it (several daemons on one
            # PostgreSQL ledger): then this pass only downloads what is ready
            turn = mailbox_lock(config)
            try:
                read_mail = turn.try_acquire()
                if not read_mail:
                    logger.warning(
                        "mailbox: another inbox-poller watches %s; this pass only downloads",
                        config.imap.folder,
                    )
                report = parts.poller.run_once(parts.mailbox, read_mail=read_mail)
                paths = parts.store.archive_paths(report.archived)
                # after the pass: a hook never holds up reading, archiving or acknowledging
                report.failed.extend(parts.hooks.run_due())
                if metrics is not None:
                    metrics.run_ended(report.ok)
                    metrics.observe_health(ledger_health(parts.store, config, utc_now()).sample())
            finally:
                turn.release()
                parts.close()
        finally:
            if metrics is not None:
                metrics.close()
    print(
        f"read {report.mails_seen} mail(s): {len(report.matched)} matched, "
        f"{report.unmatched} unmatched, {len(report.refused)} refused; "
        f"archived {len(report.archived)}, acknowledged {report.acknowledged}, "
        f"failed {len(report.failed)}"
    )
    for job_id in report.archived:
        if job_id in paths:
            print(f"archived job {job_id}: {config.archive_location(paths[job_id])}")
    for line in report.refused:
        print(f"refused mail {line}")
    for line in report.failed:
        print(f"failed: {line}")
    return EXIT_OK if report.ok else EXIT_FAILURE


def _submit_request(args: argparse.Namespace) -> ExportRequest:
    """The request `submit`'s options ask for; ``UsageError`` for what the method refuses."""
    raw = {key: getattr(args, key, None) for key in ALL_OPTION_KEYS}
    if raw.get("custom_fields") is not None:
        raw["custom_fields"] = str(raw["custom_fields"])
    try:
        return make_request(args.method, raw, args.format, args.start, args.end)
    except ValueError as exc:
        flags = {key: "--" + key.replace("_", "-") for key in ALL_OPTION_KEYS}
        message = str(exc)
        for key, flag in flags.items():
            message = message.replace(f"'{key}'", flag)
        raise UsageError(f"submit: {message}") from None


def cmd_submit(config: Config, args: argparse.Namespace) -> int:
    if args.start and args.end and args.start >= args.end:
        raise UsageError("--end must be after --start (the end date is exclusive)")
    request = _submit_request(args)
    _warn_exposed_secrets(config)
    with open_store(config) as store:
        submitter = build_submitter(config, store)
        export = submitter.submit(request)
    print(export.job_id)
    return EXIT_OK


def _hook_dict(run: HookRun) -> dict[str, Any]:
    return {
        "hook": run.hook,
        "state": "failing" if run.failing else run.state.value,
        "attempts": run.attempts,
        "next_at": run.next_at.isoformat() if run.state.value == "pending" else None,
        "last_error": run.last_error,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _hook_detail(runs: list[dict[str, Any]]) -> str:
    """Say what is not done: a failing or waiting hook, in the table's detail column."""
    shown = []
    for run in runs:
        if run["state"] == "failing":
            shown.append(
                f"[hook {run['hook']} failing, {run['attempts']} tries: {run['last_error']}]"
            )
        elif run["state"] != "done":
            shown.append(f"[hook {run['hook']} {run['state']}]")
    return " ".join(shown)


def _export_dict(
    export: Export, config: Config, hooks: list[HookRun] | None = None
) -> dict[str, Any]:
    archived = export.archived
    return {
        "export_id": export.export_id,
        "state": export.state.value,
        "job_id": export.job_id,
        "stat": export.request.stat,
        "method": export.request.method,
        "options": json.loads(export.request.options or "{}"),
        "format": export.request.format,
        "payload_format": archived.format if archived else None,
        "target": target(export.request) if export.request.method in METHODS else None,
        "schedule": export.schedule,
        "origin": export.origin,
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
        "path": config.archive_location(archived.path) if archived else None,
        "bytes": archived.bytes if archived else None,
        "sha256": archived.sha256 if archived else None,
        "records": archived.records if archived else None,
        "hooks": [_hook_dict(run) for run in hooks or ()],
    }


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    with open_store(config, read_only=True) as store:
        health = ledger_health(store, config, utc_now())
        working = store.in_flight_by_owner() if config.state_url is not None else {}
    running = ledger_running(config)
    mode = "daemon" if running else health.mode
    problems = list(health.problems)
    if mode == "daemon" and not running:
        problems.insert(0, "the daemon is not running")
    daemons = ledger_cluster(config) if running else None
    if daemons is not None and daemons.watching is None:
        problems.insert(0, "no daemon watches the mailbox")
    if args.json:
        shown = _status_dict(health, running, mode, problems)
        if daemons is not None:
            shown["daemons"] = [
                {"name": name, "in_flight": working.get(name, 0)} for name in daemons.running
            ]
            shown["mailbox_watched_by"] = daemons.watching
        print(json.dumps(shown, indent=2))
    else:
        print(health.status_line())
        if mode == "once":
            print(f"run --once: last run {_ago(health.last_run_at, health)}")
        elif daemons is None:
            print(f"daemon: {'running' if running else 'not running'}")
        else:  # several daemons on one PostgreSQL ledger
            print(f"daemons: {len(daemons.running)} running")
            for name in daemons.running:
                role = ", watches the mailbox" if name == daemons.watching else ""
                print(f"  {name}: {working.get(name, 0)} export(s) in flight{role}")
        for state in ExportState:
            if health.counts.get(state.value):
                print(f"  {state.value:<15} {health.counts[state.value]}")
        for problem in problems:
            print(f"problem: {problem}")
    return EXIT_OK if not problems else EXIT_FAILURE


def _ago(moment: datetime | None, health: Health) -> str:
    if moment is None or health.at is None:
        return "never"
    return f"{format_age((health.at - moment).total_seconds())} ago ({utc_iso(moment)})"


def _status_dict(health: Health, running: bool, mode: str, problems: list[str]) -> dict[str, Any]:
    """``status --json``: ages in seconds, and the same moments as absolute UTC times."""
    return {
        "healthy": not problems,
        "running": running,
        "mode": mode,
        "status": health.status_line(),
        "problems": problems,
        "pending": health.pending,
        "oldest_pending_age_s": health.oldest_pending_age_s,
        "last_poll_age_s": health.last_poll_age_s,
        "counts": health.counts,
        "checked_at": utc_iso(health.at),
        "oldest_pending_since": utc_iso(health.oldest_pending_since),
        "last_poll_at": utc_iso(health.last_poll_at),
        "last_run_at": utc_iso(health.last_run_at),
        "overdue": health.overdue,
        "recent_failures": health.recent_failures,
    }


def cmd_exports(config: Config, args: argparse.Namespace) -> int:
    states = [ExportState(args.state)] if args.state else None
    with open_store(config, read_only=True) as store:
        runs: dict[int, list[HookRun]] = {}
        for run in store.hook_runs():
            runs.setdefault(run.export_id, []).append(run)
        exports = [
            _export_dict(e, config, runs.get(e.export_id)) for e in store.list_exports(states)
        ]
    if args.json:
        print(json.dumps(exports, indent=2))
        return EXIT_OK
    if not exports:
        print("no exports")
        return EXIT_OK
    print(f"{'id':>5}  {'state':<14} {'job':<14} {'stat':<10} {'window':<19} detail")
    for e in exports:
        window = f"{e['startdate'] or '-'}..{e['enddate'] or '-'}"
        origin = ", ".join(
            part
            for part in (
                f"schedule {e['schedule']}" if e["schedule"] else "",
                e["origin"] or "",
                f"{e['method']} {e['format']}" if e["method"] != CONTACT_DATA_METHOD else "",
            )
            if part
        )
        detail = " ".join(
            part
            for part in (
                e["path"] or e["reason"] or "",
                f"[{origin}]" if origin else "",
                _hook_detail(e["hooks"]),
            )
            if part
        )
        what = e["stat"] or e["target"] or "-"
        print(
            f"{e['export_id']:>5}  {e['state']:<14} {e['job_id'] or '-':<14} "
            f"{what:<10} {window:<19} {detail}"
        )
    return EXIT_OK


def _check_archive(config: Config) -> str:
    from inbox_poller.archive import Archive

    if config.archive_s3 is not None:
        return f"{_require_s3_archive(config)} is writable"
    try:
        Archive(config.archive_dir, config.archive_group).ensure_writable()
    except ArchiveError as exc:
        fix = _archive_fix(exc)
        raise ArchiveError(f"{exc}; fix: {fix}" if fix else str(exc)) from None
    group = config.archive_group
    return f"{config.archive_dir} is writable" + (f", shared with group {group}" if group else "")


def _creatable(path: Path) -> bool:
    """Return whether *path* could be created: its nearest existing parent is writable."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def _check_ledger(config: Config) -> str:
    path = config.state_path
    if config.state_url is None and not path.exists():
        if not _creatable(path):
            raise InboxPollerError(f"no ledger at {path}, and it cannot be created there")
        return f"no ledger at {path} yet; `run` creates it"
    with open_store(config, read_only=True) as store:
        counts = store.counts_by_state()
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "empty"
    return f"{config.state_location} ({summary})"


class _Warning(Exception):
    """A check that passed with something to fix: printed as ``warn``."""


def _check_secret(secret: Secret) -> str:
    secret.read()
    if warning := secret.exposure():
        raise _Warning(warning)
    return f"readable from {secret.source()}"


def _check_tokens(tokens: TokenSource) -> str:
    tokens.access_token()
    expires = tokens.expires_at()
    until = expires.isoformat(timespec="seconds") if expires else "unknown"
    return f"got an access token from {tokens.where}, valid until {until}"


def _secret_probe_name(secret: Secret) -> str:
    """``imap password``, or ``oauth2 refresh_token`` and its kind."""
    if secret.key == "imap.password":
        return "imap password"
    return "oauth2 " + secret.key.rsplit(".", 1)[-1]


def _check_hook(program: str) -> str:
    path = Path(program)
    if not path.is_file():
        raise InboxPollerError(f"{program}: no such file")
    if not os.access(path, os.X_OK):
        raise InboxPollerError(f"{program}: not executable (chmod +x {program})")
    return f"{program} is executable"


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    probes: list[tuple[str, Callable[[], str]]] = [
        ("archive", lambda: _check_archive(config)),
        ("ledger", lambda: _check_ledger(config)),
        *[
            (_secret_probe_name(secret), lambda secret=secret: _check_secret(secret))
            for secret in config.imap_secrets
        ],
        ("pinpointe token", lambda: _check_secret(config.usertoken)),
    ]
    if config.hooks.on_archived:
        program = config.hooks.on_archived[0]
        probes.append(("hook on_archived", lambda: _check_hook(program)))
    if not args.offline:
        tokens = build_token_source(config) if config.imap.auth == "oauth2" else None
        if tokens is not None:
            probes.append(("oauth2", lambda: _check_tokens(tokens)))
        probes.append(("imap", lambda: build_mailbox(config, tokens).check()))
        probes.append(("pinpointe", lambda: build_api(config).check()))
    print(f"ok   config: {config.path}")
    failures = 0
    for name, probe in probes:
        try:
            print(f"ok   {name}: {probe()}")
        except _Warning as warning:
            print(f"warn {name}: {warning}")
        except InboxPollerError as exc:
            failures += 1
            print(f"FAIL {name}: {exc}")
    return EXIT_OK if failures == 0 else EXIT_FAILURE


def cmd_auth(config: Config, args: argparse.Namespace) -> int:
    if config.imap.oauth2 is None:
        raise UsageError('auth needs imap.auth = "oauth2" and an [imap.oauth2] table')
    if args.auth_command == "status":
        from inbox_poller.oauth.status import auth_status, format_auth_status

        report = auth_status(config)
        print(json.dumps(report, indent=2) if args.json else format_auth_status(report))
        return EXIT_OK
    from inbox_poller.oauth.login import login, refresh_token_destination, save_refresh_token

    destination = refresh_token_destination(config, args.output)
    token = login(config, say=lambda text: print(text, flush=True))
    save_refresh_token(destination, token)
    print(
        f"refresh token written to {destination} (mode 0600); a running daemon uses it at "
        "its next login"
    )
    return EXIT_OK


def cmd_config_show(config: Config, args: argparse.Namespace) -> int:
    effective = config.effective()
    if args.json:
        print(json.dumps(effective, indent=2, ensure_ascii=False))
        return EXIT_OK
    header = [
        f"inbox-poller config show: the effective configuration of {config.path}",
        "(defaults filled in, relative paths resolved; secrets are never shown)",
        "secrets:",
        *(f"  {secret.key}: {secret.source()}" for secret in config.secrets),
    ]
    print(render_toml(effective, header), end="")
    return EXIT_OK


WAIT_FAILURE_GRACE_S = 15.0
"""How long a failed export may stay without a successor before ``wait`` gives up on it:
the daemon records a failure and its resubmission in two steps, a moment apart."""


WAIT_UNREADABLE_TRIES = 3
"""Failed looks at the ledger in a row that ``wait`` tolerates before it gives up."""


def _given_up(export: Export, config: Config, now_s: float) -> bool:
    """Return whether *export*, which has no successor, will not be archived any more."""
    final = export.state in (
        ExportState.SUBMIT_FAILED,
        ExportState.SUBMIT_UNKNOWN,
        ExportState.FAILED,
    ) or (
        # an expired link is asked for again after exports.notify_deadline, up to the limit
        export.state is ExportState.LINK_EXPIRED
        and export.resubmits >= config.exports.max_resubmits
    )
    return final and now_s - export.updated_at.timestamp() > WAIT_FAILURE_GRACE_S


def _read_export(config: Config, export_id: int) -> tuple[Export, Export | None]:
    """Return the export and its successor, from a fresh read-only look at the ledger
    (a connection opened while no writer ran would never see later changes)."""
    with open_store(config, read_only=True) as store:
        return store.get_export(export_id), store.successor(export_id)


def cmd_wait(config: Config, args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    with open_store(config, read_only=True) as store:
        first = store.export_by_job_id(args.job_id)
    if first is None:
        raise InboxPollerError(f"no export with job ID {args.job_id} in {config.state_location}")
    if not ledger_running(config):
        print(
            "inbox-poller: the daemon is not running: the export advances only when it "
            "does (or with `inbox-poller run --once`)",
            file=sys.stderr,
        )
    export_id = first.export_id
    unreadable = 0
    while True:
        try:
            export, successor = _read_export(config, export_id)
            unreadable = 0
        except StoreError:
            # a daemon starting while we read may show us a page in flux: look again
            unreadable += 1
            if unreadable > WAIT_UNREADABLE_TRIES:
                raise
            time.sleep(args.interval)
            continue
        if export.state in (ExportState.ARCHIVED, ExportState.ACKNOWLEDGED):
            assert export.archived is not None
            print(config.archive_location(export.archived.path))
            return EXIT_OK
        if successor is not None:
            print(
                f"inbox-poller: job {export.job_id} {export.state.value} "
                f"({export.reason or 'no reason recorded'}); following its resubmission, job "
                f"{successor.job_id or '(not yet submitted)'}",
                file=sys.stderr,
            )
            export_id = successor.export_id
            continue
        if _given_up(export, config, utc_now().timestamp()):
            print(
                f"inbox-poller: job {export.job_id} {export.state.value}: {export.reason}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(
                f"inbox-poller: timed out: job {export.job_id} is still {export.state.value}",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        time.sleep(min(args.interval, remaining))


def _inspection_rules(args: argparse.Namespace) -> tuple[HostRule, ...]:
    if args.allowed_host:
        try:
            return tuple(parse_host_rule(entry) for entry in args.allowed_host)
        except ValueError as exc:
            raise UsageError(f"--allowed-host: {exc}") from None
    if args.config or os.environ.get(CONFIG_ENV):
        return load_config(resolve_config_path(args.config)).download.host_rules
    return DownloadConfig().host_rules


def cmd_inspect(args: argparse.Namespace) -> int:
    from inbox_poller.matching.inspection import format_inspection, inspect_email

    try:
        raw = Path(args.path).read_bytes()
    except OSError as exc:
        raise InboxPollerError(f"cannot read {args.path}: {exc.strerror}") from None
    report = inspect_email(raw, args.pending, _inspection_rules(args))
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))
    return EXIT_OK


def _verify_configured_s3(
    config: Config, on_problem: Callable[[Problem], None] | None
) -> Verification:
    """``archive verify`` of the bucket of archive.url."""
    from inbox_poller.archive_reader import verify_bucket
    from inbox_poller.wiring import build_s3_archive

    assert config.archive_s3 is not None
    archive = build_s3_archive(config)
    return verify_bucket(archive.objects(), archive.prefix, on_problem)


def cmd_archive(args: argparse.Namespace) -> int:
    """``archive verify``: the archive against its manifest; exit 1 on any problem."""
    from inbox_poller.archive_reader import verify

    on_problem = None if args.json else lambda problem: print(problem, flush=True)
    started = time.monotonic()
    if args.dir:
        report = verify(Path(args.dir), on_problem)
    else:
        config = load_config(resolve_config_path(args.config))
        if config.archive_s3 is not None:
            report = _verify_configured_s3(config, on_problem)
        else:
            report = verify(config.archive_dir, on_problem)
    root = report.root
    took_s = time.monotonic() - started
    if args.json:
        summary: dict[str, Any] = {
            "archive": str(root),
            "ok": report.ok,
            "lines": report.lines,
            "payloads": report.payloads,
            "bytes": report.bytes,
            "seconds": round(took_s, 3),
            "problems": [
                {"kind": p.kind, "where": p.where, "detail": p.detail} for p in report.problems
            ],
        }
        print(json.dumps(summary, indent=2))
    else:
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        print(
            f"archive {root}: {report.lines} manifest line(s), {report.payloads} payload(s) "
            f"({report.bytes} bytes) checked in {took_s:.1f}s: {verdict}"
        )
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_sandbox(args: argparse.Namespace) -> int:
    from inbox_poller.sandbox.demo import run_sandbox

    return run_sandbox(
        Path(args.dir) if args.dir else None,
        records=args.records,
        method_name=args.method,
        fmt=args.format,
    )


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    """Move the ledger to PostgreSQL and the archive to S3, as ``--to`` configures them."""
    from inbox_poller.config import load_config
    from inbox_poller.migration import plan as planning
    from inbox_poller.migration import run as migration
    from inbox_poller.wiring import build_s3_archive

    target = load_config(Path(args.to))
    plan = planning.plan(
        config, target, ledger_only=args.ledger_only, archive_only=args.archive_only
    )
    report = migration.run(
        plan,
        source_url=config.state_url,
        password=config.state_password.read if config.state_password else None,
        target_password=target.state_password.read if target.state_password else None,
        target_archive=build_s3_archive(target) if plan.archive else None,
        dry_run=args.dry_run,
    )
    for line in report.lines():
        print(line)
    return exits.EXIT_OK if report.ok else exits.EXIT_FAILURE
