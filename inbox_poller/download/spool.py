"""Hash, store and check the decoded body of a download on two helper threads.

The downloading thread reads each piece of the body straight into one of a few reused
buffers (:meth:`Spool.buffer`, :meth:`Spool.put`) and goes back to the network at once.
Two helpers take every piece in order, from the same buffer:

* the *writer* hashes it (SHA-256) and writes it to the sink: both release the GIL;
* the *checker* feeds it to the fast JSON check (``fastcheck.FastCheck``, simdjson).

A buffer is read into again only when both have finished with it, so memory is bounded
by ``BUFFERS`` pieces whatever the payload's size, and no piece is copied on its way
(the sink copies it into the page cache, the check into its window). Reusing the
buffers also spares the allocator: a fresh megabyte per piece, freed on another thread,
made glibc map and fault in fresh pages (measured: 40,000 minor faults for 512 MiB).

The helpers start with the second piece: a body read in one piece (most notifications'
payloads are well under a megabyte) is hashed, written and checked by the downloading
thread in :meth:`Spool.finish`, where two threads started and joined per download cost
more than the work they would overlap (bench/README.md, "backlog").
Measured layouts are in bench/README.md.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from inbox_poller.errors import ArchiveError, InboxPollerError

BUFFERS = 6
"""Pieces in flight at most (each ``chunk_bytes``): enough to absorb the jitter of three
threads. Buffers are made as the reader gets ahead, so a small payload uses one."""


class Check(Protocol):
    """What the checker feeds (``fastcheck.FastCheck``): it never raises."""

    def feed(self, data: memoryview) -> None: ...


_Item = tuple[int, int] | None
"""(buffer index, bytes in it), or None: the end."""


class Spool:
    """Hash and write every piece put, and feed it to *check*, in order (on two threads
    once there is a second piece).

    :param write: the sink's ``write``; it gets a memoryview valid only during the call.
        A failure stops writing and is raised by the next ``buffer``/``put`` or by
        ``finish`` (as ``ArchiveError`` unless it is one of ours).
    :param check: fed the same pieces, in order, on its own thread.
    """

    def __init__(
        self, write: Callable[[memoryview], None], check: Check, *, chunk_bytes: int
    ) -> None:
        self._write = write
        self._check = check
        self._sha = hashlib.sha256()
        self._chunk_bytes = chunk_bytes
        self._views: list[memoryview] = []  # made when needed: a small payload needs one
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._users = [0] * BUFFERS
        self._lock = threading.Lock()
        self._to_writer: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._to_checker: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._current: int | None = None
        self._held: tuple[int, int] | None = None  # the first piece, until a second comes
        self._threads: list[threading.Thread] = []  # started by the second piece
        self._open = True

    # --- the downloading thread ------------------------------------------------------------

    def buffer(self) -> memoryview:
        """A free buffer to read the next piece into (waits while all are in use)."""
        self._raise_error()
        if self._current is None:
            try:
                self._current = self._free.get_nowait()
            except queue.Empty:
                if len(self._views) < BUFFERS:
                    self._views.append(memoryview(bytearray(self._chunk_bytes)))
                    self._current = len(self._views) - 1
                else:
                    self._current = self._free.get()
        return self._views[self._current]

    def put(self, size: int) -> None:
        """Hand on the first *size* bytes of the buffer last returned by :meth:`buffer`."""
        self._raise_error()
        index = self._current
        assert index is not None, "put() without buffer()"
        self._current = None
        if not self._threads:
            if self._held is None:
                self._held = (index, size)
                return
            self._start_helpers()
            self._hand_on(*self._held)
            self._held = None
        self._hand_on(index, size)

    def finish(self) -> str:
        """Wait until every piece is written and checked; return the SHA-256 hex digest.

        A body of one piece is written and checked here, by the calling thread.
        """
        if self._open and self._held is not None:
            index, size = self._held
            self._held = None
            with self._views[index][:size] as piece:
                self._store(piece)
                self._feed(piece)
        self.close()
        self._raise_error()
        return self._sha.hexdigest()

    def close(self) -> None:
        """Stop both helpers after the pieces already put; idempotent."""
        if self._open:
            self._open = False
            self._held = None
            if self._threads:
                self._to_writer.put(None)
                self._to_checker.put(None)
                for thread in self._threads:
                    thread.join()

    def _start_helpers(self) -> None:
        self._threads = [
            threading.Thread(target=self._writer, name="download-write", daemon=True),
            threading.Thread(target=self._checker, name="download-check", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _hand_on(self, index: int, size: int) -> None:
        with self._lock:
            self._users[index] = 2
        self._to_writer.put((index, size))
        self._to_checker.put((index, size))

    # --- the helpers ----------------------------------------------------------------------

    def _writer(self) -> None:
        while (item := self._to_writer.get()) is not None:
            index, size = item
            if self._error is None:  # after a failure, keep draining so buffer() never waits
                with self._views[index][:size] as piece:
                    self._store(piece)
            self._release(index)

    def _checker(self) -> None:
        while (item := self._to_checker.get()) is not None:
            index, size = item
            with self._views[index][:size] as piece:
                self._feed(piece)
            self._release(index)

    def _store(self, piece: memoryview) -> None:
        try:
            self._sha.update(piece)
            self._write(piece)
        except BaseException as exc:  # re-raised in the downloading thread
            self._error = exc

    def _feed(self, piece: memoryview) -> None:
        try:
            self._check.feed(piece)
        except BaseException as exc:  # the check never raises; a bug is not hidden
            self._error = self._error or exc

    def _release(self, index: int) -> None:
        with self._lock:
            self._users[index] -= 1
            free = self._users[index] == 0
        if free:
            self._free.put(index)

    def _raise_error(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, InboxPollerError):
            raise self._error
        raise ArchiveError(f"writing the payload failed: {self._error}") from self._error
