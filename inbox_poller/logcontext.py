"""The export a log line is about, for lines logged by code that does not know it.

The archiver and the submitter enter :func:`log_context` around the work on one
export; the command line's log handler carries :class:`ContextFilter`, which adds the
context's keys (``export_id``, ``job_id``) to every record logged meanwhile, in that
thread, unless the record names them itself. So the fetcher's and the API client's lines
carry the export's IDs under ``--log-format json`` without being handed them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

_NONE: Mapping[str, object] = MappingProxyType({})
_keys: ContextVar[Mapping[str, object]] = ContextVar("inbox_poller_log_context", default=_NONE)


@contextmanager
def log_context(**keys: object) -> Iterator[None]:
    """Add *keys* (None values are left out) to the records logged in this block."""
    token = _keys.set({**_keys.get(), **{k: v for k, v in keys.items() if v is not None}})
    try:
        yield
    finally:
        _keys.reset(token)


class ContextFilter(logging.Filter):
    """Copy the current :func:`log_context` keys onto each record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _keys.get().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True
