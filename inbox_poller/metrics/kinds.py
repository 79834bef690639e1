"""Which bounded ``kind`` label an error gets in ``inbox_poller_errors_total``."""

from __future__ import annotations

from inbox_poller.errors import (
    ApiAuthError,
    ApiError,
    ApiUnavailable,
    ArchiveError,
    DownloadRefused,
    DownloadTransient,
    LinkExpired,
    MailboxError,
    MailboxLoginError,
    PayloadInvalid,
    PayloadTooLarge,
    ProcessedFolderError,
)

SOURCES = ("mailbox", "api", "download")

KINDS: dict[str, tuple[str, ...]] = {
    "mailbox": ("login", "processed_folder", "connection", "other"),
    "api": ("auth", "unavailable", "refused", "unknown_outcome", "other"),
    "download": (
        "refused",
        "link_expired",
        "too_large",
        "invalid",
        "transient",
        "archive",
        "other",
    ),
}
"""Every (source, kind) pair, exported at 0 from the start so that ``increase()`` sees the
first error."""


_CLASSES: dict[str, tuple[tuple[type[BaseException], str], ...]] = {
    "mailbox": (
        (MailboxLoginError, "login"),
        (ProcessedFolderError, "processed_folder"),
        (MailboxError, "connection"),
    ),
    "api": ((ApiAuthError, "auth"), (ApiUnavailable, "unavailable")),
    "download": (
        (DownloadRefused, "refused"),
        (LinkExpired, "link_expired"),
        (PayloadTooLarge, "too_large"),
        (PayloadInvalid, "invalid"),
        (DownloadTransient, "transient"),
        (ArchiveError, "archive"),
    ),
}
"""The first class *error* is an instance of names its kind (subclasses first)."""


def error_kind(source: str, error: BaseException) -> str:
    """Return the ``kind`` label of *error* reported by *source*; ``other`` when unknown."""
    for cls, kind in _CLASSES.get(source, ()):
        if isinstance(error, cls):
            return kind
    if source == "api" and isinstance(error, ApiError):
        return "refused" if error.definitive else "unknown_outcome"
    return "other"
