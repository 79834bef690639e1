"""Deterministic crash points for recovery tests (mbsync's ``-Ts<step>``, docs/reliability.md §8.2).

Every durable step of the loop calls :func:`crash_point` with its name. When the
environment variable ``INBOX_POLLER_CRASH_AT`` names that step, the process
exits at once with status 100 (``os._exit``: no cleanup, no flush, no commit),
exactly like a ``kill -9`` at that point. Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os

CRASH_ENV = "INBOX_POLLER_CRASH_AT"
CRASH_EXIT_STATUS = 100

POINTS = (
    "submit:before-post",
    "submit:after-post",
    "mail:before-record",
    "mail:mid-batch",
    "mail:after-record",
    "download:after-start",
    "download:mid-body",
    "download:after-verified",
    "archive:after-rename",
    "archive:before-manifest-line",
    "archive:mid-manifest-line",
    "download:after-manifest",
    "ack:before-mark",
    "ack:after-mark",
)
"""Every crash point, in the order a normal export passes them."""

S3_POINTS = ("archive:mid-upload", "archive:mid-copy")
"""Points only the S3 archive passes (issue 14): after the first part of a multipart
upload is sent, so a crash leaves an incomplete upload behind; after the first range of
a multipart copy to the final key (a payload over 5 GiB) is copied."""


def armed(name: str) -> bool:
    """Whether ``INBOX_POLLER_CRASH_AT`` names *name*: for a step that must do part of its
    work before it crashes (a write cut in the middle)."""
    return os.environ.get(CRASH_ENV) == name


def crash_point(name: str) -> None:
    """Exit immediately with status 100 if ``INBOX_POLLER_CRASH_AT`` is *name*."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(CRASH_EXIT_STATUS)
