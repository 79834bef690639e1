"""The composition root: build the object graph the configuration names.

This is the one place that builds the network edges (``imap/``, ``oauth/``,
``pinpointe/``, ``download/``) and hands them to the loop; the IMAP mailbox gets its
OAuth2 tokens from here, through ``ports.AccessTokens``. Those edges, and the loop's
parts, are imported where they are built, so commands that never use them (``status``,
``exports``) do not pay for importing them (bench/bench_cli_startup.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from inbox_poller.errors import ConfigError
from inbox_poller.ports import ArchiveStore, Metrics, NoMetrics, PayloadSink

if TYPE_CHECKING:
    from inbox_poller.archive.s3 import S3Archive
    from inbox_poller.config import Config
    from inbox_poller.download.fetcher import SafeDownloader
    from inbox_poller.hooks.environment import BucketArchive
    from inbox_poller.imap.mailbox import ImapMailbox
    from inbox_poller.ledger.opening import Daemons, MailboxGuard
    from inbox_poller.ledger.store import Store
    from inbox_poller.loop.hooks import HookSettings
    from inbox_poller.loop.parts import LoopParts
    from inbox_poller.loop.reader import ReaderSettings
    from inbox_poller.loop.submitter import Submitter
    from inbox_poller.metrics.registry import Mode, PrometheusMetrics
    from inbox_poller.models import DownloadResult
    from inbox_poller.oauth.tokens import TokenSource
    from inbox_poller.pinpointe.client import PinpointeApi


def reader_settings(config: Config) -> ReaderSettings:
    """What reading mail needs from *config*."""
    from inbox_poller.loop.reader import ReaderSettings

    return ReaderSettings(
        rules=config.download.host_rules,
        keyword=config.imap.keyword,
        sender_policy=config.sender_policy,
        by_elimination=config.matching.by_elimination,
    )


def build_mailbox(
    config: Config, tokens: TokenSource | None = None, *, metrics: Metrics | None = None
) -> ImapMailbox:
    """The IMAP mailbox named by the configuration (not yet connected).

    With ``auth = "oauth2"`` it logs in with *tokens*, or a token source of its own that
    counts its failed refreshes in *metrics*.
    """
    from inbox_poller.imap.mailbox import ImapMailbox

    if config.imap.auth == "oauth2":
        tokens = tokens or build_token_source(config, metrics=metrics)
        return ImapMailbox(config.imap, tokens=tokens, ca_file=config.imap_ca)
    return ImapMailbox(config.imap, config.imap_password.read(), ca_file=config.imap_ca)


def build_token_source(config: Config, *, metrics: Metrics | None = None) -> TokenSource:
    """The OAuth2 access tokens ``[imap.oauth2]`` names (nothing is requested yet)."""
    from inbox_poller.oauth.provider import build_token_source as build

    return build(config, metrics=metrics)


def build_api(config: Config) -> PinpointeApi:
    """The Pinpointe client named by the configuration."""
    from inbox_poller.pinpointe.client import PinpointeApi

    return PinpointeApi(config.pinpointe, config.usertoken.read(), ca_file=config.pinpointe_ca)


def build_metrics(config: Config, mode: Mode) -> PrometheusMetrics | None:
    """The metrics ``[metrics]`` asks for, listening already; None when it asks for none.

    prometheus_client is imported only here, and only when metrics are configured.
    :raises MetricsError: the listen address cannot be bound.
    """
    if config.metrics.address is None and config.metrics_textfile is None:
        return None
    from inbox_poller.metrics.registry import PrometheusMetrics

    metrics = PrometheusMetrics(
        mode=mode,
        poll_interval_s=config.imap.poll_interval,
        labels=config.metrics.labels,
        textfile=config.metrics_textfile,
    )
    if config.metrics.address is not None:
        metrics.listen(*config.metrics.address)
    return metrics


def hook_settings(config: Config) -> HookSettings:
    """What running hooks needs from *config*."""
    from inbox_poller.loop.hooks import HookSettings

    return HookSettings(on_archived=config.hooks.on_archived, timeout_s=config.hooks.timeout)


class DownloaderPool:
    """A ``ports.Downloader`` that lends each download a ``SafeDownloader`` of its own.

    A ``SafeDownloader`` serves one download at a time and keeps its idle keep-alive
    connections for the next one (``download/addresses.py``). The daemon's pool and
    ``run --once`` download on several threads, and ``run --once`` starts new threads for
    each batch, so a download takes the downloader that finished last (its connections
    are the warmest) rather than one tied to its thread: there are never more downloaders
    than downloads at once. ``close`` closes the idle ones and their connections.
    """

    def __init__(self, make: Callable[[], SafeDownloader]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._idle: list[SafeDownloader] = []

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        with self._lock:
            downloader = self._idle.pop() if self._idle else None
        if downloader is None:
            downloader = self._make()
        try:
            return downloader.download(url, sink, expected=expected)
        finally:
            with self._lock:
                self._idle.append(downloader)

    def close(self) -> None:
        """Close the idle downloaders' connections; never raises."""
        with self._lock:
            idle, self._idle = self._idle, []
        for downloader in idle:
            downloader.close()


def build_loop(
    config: Config, *, stop: threading.Event | None = None, metrics: Metrics | None = None
) -> LoopParts:
    """Wire the ledger, archive, mailbox and downloader named by the configuration.

    *stop*, when set, makes a download under way park itself (the daemon's shutdown).
    """
    from inbox_poller.download.fetcher import SafeDownloader
    from inbox_poller.loop.archiver import ExportArchiver
    from inbox_poller.loop.hooks import HookDispatcher
    from inbox_poller.loop.parts import LoopParts
    from inbox_poller.loop.poller import Poller

    metrics = metrics or NoMetrics()
    mailbox = build_mailbox(config, metrics=metrics)
    store = open_store(config)
    hooks = hook_settings(config)
    downloaders = DownloaderPool(
        lambda: SafeDownloader(config.download, ca_file=config.download_ca, stop=stop)
    )
    archiver = ExportArchiver(
        store,
        build_archive(config),
        downloaders,
        max_attempts=config.download.max_attempts,
        stop=stop,
        metrics=metrics,
        hooks=hooks.queued,
        workers=config.daemon.download_workers,
    )
    poller = Poller(store, archiver, reader_settings(config), metrics=metrics)
    dispatcher = HookDispatcher(store, config.archive_dir, hooks, bucket=hook_bucket(config))
    return LoopParts(store, mailbox, archiver, poller, dispatcher, downloaders.close)


def hook_bucket(config: Config) -> BucketArchive | None:
    """Where an S3 archive is, as hooks are told (None for a directory)."""
    from inbox_poller.hooks.environment import BucketArchive

    s3 = config.archive_s3
    if s3 is None:
        return None
    return BucketArchive(s3.bucket, s3.prefix, s3.endpoint_url, s3.region)


def build_archive(config: Config) -> ArchiveStore:
    """The archive the configuration names: ``archive.dir``, or the bucket of ``archive.url``
    (boto3 is imported only then)."""
    if config.archive_s3 is not None:
        return build_s3_archive(config)
    from inbox_poller.archive import Archive

    return Archive(config.archive_dir, config.archive_group)


def build_s3_archive(config: Config) -> S3Archive:
    """The S3 archive of ``archive.url``; a clear error when boto3 (the ``[s3]`` extra) is
    not installed."""
    assert config.archive_s3 is not None
    try:
        from inbox_poller.archive.s3 import S3Archive
    except ImportError as exc:
        raise ConfigError(
            f"an S3 archive needs boto3, which is not installed ({exc}): "
            "pip install 'inbox-poller[s3]'",
            path=str(config.path),
            key="archive.url",
        ) from None
    return S3Archive.from_settings(config.archive_s3)


def build_submitter(config: Config, store: Store, *, metrics: Metrics | None = None) -> Submitter:
    """Wire the Pinpointe client and the ledger for submissions."""
    from inbox_poller.loop.submitter import Submitter

    return Submitter(store, build_api(config), metrics=metrics)


# ---- the ledger: SQLite ([state] path) or PostgreSQL ([state] url) ---------------------------


def _state_password(config: Config) -> Callable[[], str] | None:
    return config.state_password.read if config.state_password is not None else None


def open_store(config: Config, *, read_only: bool = False) -> Store:
    """Open the configured ledger (``ledger.opening``)."""
    from inbox_poller.ledger.opening import open_ledger

    return open_ledger(
        config.state_path, config.state_url, _state_password(config), read_only=read_only
    )


def ledger_lock(config: Config) -> AbstractContextManager[None]:
    """The ledger's run lock ``run`` holds (``ledger.opening.run_lock``): SQLite's one
    process, or this process's share of a PostgreSQL ledger, named by its owner."""
    from inbox_poller.ledger.opening import run_lock
    from inbox_poller.loop.leases import process_owner

    return run_lock(config.state_path, config.state_url, _state_password(config), process_owner())


def ledger_cluster(config: Config) -> Daemons | None:
    """Who runs on the configured PostgreSQL ledger and who watches the mailbox (``status``);
    None for a SQLite ledger (one process, which watches)."""
    if config.state_url is None:
        return None
    from inbox_poller.ledger.opening import cluster

    return cluster(config.state_url, _state_password(config), mailbox_identity(config))


def mailbox_identity(config: Config) -> tuple[str, str, str]:
    """The mailbox a daemon watches: server, user, folder (the key of its lock)."""
    return (config.imap.host, config.imap.username, config.imap.folder)


def mailbox_lock(config: Config) -> MailboxGuard:
    """The lock this process must hold to read the mailbox (``ledger.opening.mailbox_lock``)."""
    from inbox_poller.ledger.opening import mailbox_lock as lock
    from inbox_poller.loop.leases import process_owner

    return lock(
        config.state_url, _state_password(config), mailbox_identity(config), process_owner()
    )


def ledger_running(config: Config) -> bool:
    """Whether a daemon or pass holds the configured ledger's lock."""
    from inbox_poller.ledger.opening import daemon_running

    return daemon_running(config.state_path, config.state_url, _state_password(config))
