"""Hash and store the decoded chunks of a download on a helper thread.

SHA-256 and file writes release the GIL, so they run beside the downloading thread,
which reads (TLS releases the GIL too) and runs the fast JSON check (simdjson holds it).
Measured on 512 MiB over loopback (bench/README.md), this layout was as fast as any
other tried (write, hash and check on three threads; write alone and hash with the
check), and it is the simplest: the sink is written from one thread, in order.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable

from inbox_poller.errors import ArchiveError, InboxPollerError

QUEUE_DEPTH = 4
"""Chunks queued for the helper: enough to absorb jitter; each one is a network read
(1 MiB), so this bounds the memory in flight (measured: 8 cost 4 MiB more RSS, no time)."""


class Spool:
    """Hash and write every chunk put, in order, on a helper thread.

    :param write: the sink's ``write``; a failure stops writing and is raised by the
        next ``put`` or by ``finish`` (as ``ArchiveError`` unless it is one of ours).
    """

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="download-spool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after a failure, keep draining so put() never blocks
                try:
                    self._sha.update(chunk)
                    self._write(chunk)
                except BaseException as exc:  # re-raised in the downloading thread
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        """Queue *chunk*; raise an earlier write failure."""
        self._raise_error()
        self._queue.put(chunk)

    def finish(self) -> str:
        """Wait until every chunk is written; return the SHA-256 hex digest."""
        self.close()
        self._raise_error()
        return self._sha.hexdigest()

    def close(self) -> None:
        """Stop the helper thread after the chunks already queued; idempotent."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, InboxPollerError):
            raise self._error
        raise ArchiveError(f"writing the payload failed: {self._error}") from self._error
