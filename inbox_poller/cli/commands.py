"""The subcommands behind ``inbox-poller``: each takes the parsed arguments, prints its
result and returns an exit code.

Every exit code the command line uses is defined here; ``program`` maps the errors a
command raises (``ConfigError``, ``UsageError``, any other ``InboxPollerError``) to them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from inbox_poller.archive import Archive
from inbox_poller.archive_reader import verify
from inbox_poller.config import (
    CONFIG_ENV,
    Config,
    DownloadConfig,
    Secret,
    load_config,
    resolve_config_path,
)
from inbox_poller.errors import InboxPollerError, UsageError
from inbox_poller.ledger.lock import daemon_running, run_lock
from inbox_poller.ledger.store import Store
from inbox_poller.models import Export, ExportRequest, ExportState
from inbox_poller.service.health import Health, format_age, ledger_health, utc_iso
from inbox_poller.urlpolicy import HostRule, parse_host_rule, redact_url
from inbox_poller.wiring import (
    build_api,
    build_loop,
    build_mailbox,
    build_metrics,
    build_submitter,
)

logger = logging.getLogger("inbox_poller.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
"""``EX_CONFIG`` from sysexits.h: the unit file does not restart on it."""


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    Archive(config.archive_dir, config.archive_group).ensure_writable()
    with run_lock(config.state_path):
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
                )
                return daemon.run()
            logger.info("%s", config.summary())
            parts = build_loop(config, metrics=metrics)
            try:
                report = parts.poller.run_once(parts.mailbox)
                archived = [parts.store.export_by_job_id(job) for job in report.archived]
                if metrics is not None:
                    from inbox_poller.models import utc_now

                    metrics.run_ended(report.ok)
                    metrics.observe_health(ledger_health(parts.store, config, utc_now()).sample())
            finally:
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
    for export in archived:
        if export is not None and export.archived is not None:
            print(f"archived job {export.job_id}: {config.archive_dir / export.archived.path}")
    for line in report.refused:
        print(f"refused mail {line}")
    for line in report.failed:
        print(f"failed: {line}")
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_submit(config: Config, args: argparse.Namespace) -> int:
    if args.start and args.end and args.start >= args.end:
        raise UsageError("--end must be after --start (the end date is exclusive)")
    with Store(config.state_path) as store:
        submitter = build_submitter(config, store)
        request = ExportRequest(stat=args.stat, startdate=args.start, enddate=args.end)
        export = submitter.submit(request)
    print(export.job_id)
    return EXIT_OK


def _export_dict(export: Export, archive_dir: Path) -> dict[str, Any]:
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


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from inbox_poller.models import utc_now

    with Store(config.state_path) as store:
        health = ledger_health(store, config, utc_now())
    running = daemon_running(config.state_path)
    mode = "daemon" if running else health.mode
    problems = list(health.problems)
    if mode == "daemon" and not running:
        problems.insert(0, "the daemon is not running")
    if args.json:
        print(json.dumps(_status_dict(health, running, mode, problems), indent=2))
    else:
        print(health.status_line())
        if mode == "once":
            print(f"run --once: last run {_ago(health.last_run_at, health)}")
        else:
            print(f"daemon: {'running' if running else 'not running'}")
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
    with Store(config.state_path) as store:
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
    Archive(config.archive_dir, config.archive_group).ensure_writable()
    group = config.archive_group
    return f"{config.archive_dir} is writable" + (f", shared with group {group}" if group else "")


def _check_ledger(config: Config) -> str:
    with Store(config.state_path) as store:
        counts = store.counts_by_state()
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "empty"
    return f"{config.state_path} ({summary})"


def _check_secret(secret: Secret) -> str:
    secret.read()
    return f"readable from {secret.source()}"


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    probes: list[tuple[str, Callable[[], str]]] = [
        ("archive", lambda: _check_archive(config)),
        ("ledger", lambda: _check_ledger(config)),
        ("imap password", lambda: _check_secret(config.imap_password)),
        ("pinpointe token", lambda: _check_secret(config.usertoken)),
    ]
    if not args.offline:
        probes.append(("imap", lambda: build_mailbox(config).check()))
        probes.append(("pinpointe", lambda: build_api(config).check()))
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


def _configured_archive(args: argparse.Namespace) -> Path:
    return load_config(resolve_config_path(args.config)).archive_dir


def cmd_archive(args: argparse.Namespace) -> int:
    """``archive verify``: the archive against its manifest; exit 1 on any problem."""
    root = Path(args.dir) if args.dir else _configured_archive(args)
    started = time.monotonic()
    report = verify(root, None if args.json else lambda problem: print(problem, flush=True))
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

    return run_sandbox(Path(args.dir) if args.dir else None, records=args.records)
