"""Read each mail in a worker process, within a time and a memory budget it cannot escape.

The extractor's own caps (``matching/parser.py``, ``charsets.py``, ``markup.py``) bound
every costly input found so far; this is the backstop for the next one nobody has found
(docs/reliability.md §4.3). :class:`MailBudget` keeps one worker process, started on first
use (or earlier, :meth:`MailBudget.start_soon`) and again after a refusal, and sends it one
mail at a time:

* the worker limits its own address space (``RLIMIT_AS``, :data:`READ_MEMORY_LIMIT`), its
  CPU time per mail (``RLIMIT_CPU``: it ends itself if the daemon dies mid-mail), and has
  no core dumps and no files to write;
* the daemon waits at most :data:`READ_TIME_LIMIT_S` for its answer, in slices of
  :data:`PROGRESS_EVERY_S` with a ``progress()`` call after each (the watchdog, §7.2), then
  kills it;
* the answer is JSON, checked field by field: nothing the worker sends is executed
  (never pickle from the process that reads hostile input).

A mail over budget raises :class:`~inbox_poller.errors.MailTooCostly` and the reader
records it as refused. A worker that cannot be started is not the mail's fault:
:class:`~inbox_poller.errors.ReaderUnavailable`, and the mail is read again later.

The worker is ``python -I -c`` (isolated: no environment variables, no user site, no
current directory on the path) with this module's package on ``sys.path``, started with
``subprocess`` (no fork of the threaded daemon), an empty environment, and stdin and
stdout as its only channels. Under the shipped systemd unit it needs nothing more than the
daemon: ``prlimit64`` is in ``@system-service`` (glibc's ``setrlimit`` uses it; the
``setrlimit`` system call itself is filtered with ``@resources``).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import inbox_poller
from inbox_poller.errors import ExtractError, MailTooCostly, ReaderUnavailable
from inbox_poller.models import Link, Notification

logger = logging.getLogger("inbox_poller.loop")

READ_TIME_LIMIT_S = 10.0
"""Wall-clock seconds one mail may take to read, transfer included. Real notifications take
under 0.1 s; the largest mail ``imap.max_message_bytes`` admits, under 1 s."""
READ_MEMORY_LIMIT = 512 * 1024 * 1024
"""The worker's address space (``RLIMIT_AS``), interpreter included (about 60 MiB)."""
PROGRESS_EVERY_S = 0.25
"""The longest wait between two ``progress()`` calls (a quarter of a 1 s watchdog)."""
START_TIMEOUT_S = 30.0
"""How long a new worker may take to start (an interpreter and the extractor's imports)."""
MAX_ANSWER_BYTES = 64 * 1024 * 1024
"""The largest answer accepted (the extractor keeps at most 4 MiB of text)."""
EXTRACT_TARGET = "inbox_poller.matching.extract:extract"
"""What the worker runs on each mail: ``module:function``, bytes in, Notification out."""
TARGET_ENV = "INBOX_POLLER_READ_TARGET"
"""Names another target for fault-injection tests of the daemon as a process (like
``crashpoints.CRASH_ENV``); unset, the extractor is the target."""

_HEADER_BYTES = 8
_READY = b"ready\n"
_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from inbox_poller.loop.budget import worker_main; worker_main(sys.argv[2:])"
)


class MailBudget:
    """Reads mail through one worker process; one mail at a time (a lock guards it)."""

    def __init__(
        self,
        *,
        time_limit_s: float = READ_TIME_LIMIT_S,
        memory_limit: int = READ_MEMORY_LIMIT,
        target: str | None = None,
    ) -> None:
        self.time_limit_s = time_limit_s
        self.memory_limit = memory_limit
        self.target = target or os.environ.get(TARGET_ENV) or EXTRACT_TARGET
        self._lock = threading.Lock()
        self._worker: subprocess.Popen[bytes] | None = None
        self._closed = False
        self.workers_started = 0
        """How many workers this budget has started (one, unless mail was refused)."""

    def read(self, raw: bytes, progress: Callable[[], None] = lambda: None) -> Notification:
        """Read *raw* in the worker and return what the extractor made of it.

        *progress* is called at least every :data:`PROGRESS_EVERY_S` while waiting.
        :raises ExtractError: the extractor refused the mail (as it would in process).
        :raises MailTooCostly: the mail took more than the time limit or the memory limit,
            or made the worker die twice.
        :raises ReaderUnavailable: no worker could be started.
        """
        with self._lock:
            for attempt in (1, 2):
                worker = self._worker or self._start(progress)
                try:
                    answer = _exchange(worker, raw, self.time_limit_s, progress)
                except _WorkerDied as exc:
                    self._discard()
                    if attempt == 2:
                        raise MailTooCostly(f"the reading process died twice ({exc})") from None
                    continue
                except _TimedOut:
                    self._discard()
                    raise MailTooCostly(
                        f"reading took more than {self.time_limit_s:g} s (stopped)"
                    ) from None
                return self._answer(answer)
        raise AssertionError("unreachable")  # pragma: no cover

    def start(self, progress: Callable[[], None] = lambda: None) -> None:
        """Start the worker now rather than on the first mail (benchmarks, tests)."""
        with self._lock:
            if self._worker is None:
                self._start(progress)

    def start_soon(self) -> threading.Thread:
        """Start the worker on a thread of its own, and return that thread.

        ``run --once`` starts it while the mailbox connects, so that the first mail does
        not wait for an interpreter to start (about 60 ms). The first :meth:`read` waits
        for the start under way (the lock); a worker that could not start is started
        again by that read, which reports the failure (the mail is read later).
        """

        def start() -> None:
            try:
                self.start()
            except ReaderUnavailable as exc:
                logger.debug("mail reader: early start failed: %s", exc)

        thread = threading.Thread(target=start, name="mail-reader-start", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop the worker (it also ends by itself when the daemon's end of its pipe closes).

        A mail being read meanwhile (the daemon stopping) is not waited for: its worker is
        killed, and that read ends in :class:`ReaderUnavailable`, blaming no mail.
        """
        self._closed = True
        worker = self._worker
        if worker is not None and worker.poll() is None:
            worker.kill()  # only the reading thread closes its pipes
        with self._lock:
            self._discard()

    def _answer(self, answer: dict[str, Any]) -> Notification:
        if "notification" in answer:
            return notification_from_json(answer["notification"])
        message = str(answer.get("error", "the reading process gave no answer"))
        if answer.get("restart"):
            self._discard()  # a worker that ran out of memory may hold on to a lot of it
        if answer.get("costly"):
            raise _AlreadyCostly(message)
        raise ExtractError(message)

    def _start(self, progress: Callable[[], None]) -> subprocess.Popen[bytes]:
        if self._closed:
            raise ReaderUnavailable("the mail reader is closed (the daemon is stopping)")
        root = str(Path(inbox_poller.__file__).resolve().parent.parent)
        args = [sys.executable, "-I", "-c", _BOOTSTRAP, root, self.target]
        args += [str(self.memory_limit), repr(self.time_limit_s)]
        try:
            worker = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # it reads hostile mail: nothing of it in our logs
                env={},
                close_fds=True,
            )
        except OSError as exc:
            raise ReaderUnavailable(f"the mail reader cannot start: {exc}") from exc
        assert worker.stdout is not None
        try:
            ready = _receive(worker.stdout.fileno(), len(_READY), START_TIMEOUT_S, progress)
        except (_WorkerDied, _TimedOut) as exc:
            _kill(worker)
            raise ReaderUnavailable(f"the mail reader did not start ({exc})") from None
        if ready != _READY:
            _kill(worker)
            raise ReaderUnavailable(f"the mail reader did not start ({_quote(ready)})")
        self._worker = worker
        self.workers_started += 1
        logger.debug("mail reader: worker %d started", worker.pid)
        return worker

    def _discard(self) -> None:
        if self._worker is not None:
            _kill(self._worker)
            self._worker = None


# --- the daemon's side of the pipe ----------------------------------------------------


class _AlreadyCostly(MailTooCostly):
    """A refusal the worker wrote in full ("too costly to read: ..."), passed on as it is."""

    def __init__(self, message: str) -> None:
        ExtractError.__init__(self, message)


class _WorkerDied(Exception):
    """The worker's pipe closed: it exited or was killed (local control flow)."""


class _TimedOut(Exception):
    """The deadline passed before the worker answered (local control flow)."""


def _exchange(
    worker: subprocess.Popen[bytes], raw: bytes, limit_s: float, progress: Callable[[], None]
) -> dict[str, Any]:
    assert worker.stdin is not None and worker.stdout is not None
    deadline = time.monotonic() + limit_s
    _send(worker.stdin.fileno(), len(raw).to_bytes(_HEADER_BYTES, "big") + raw, deadline, progress)
    out = worker.stdout.fileno()
    header = _receive(out, _HEADER_BYTES, deadline - time.monotonic(), progress)
    size = int.from_bytes(header, "big")
    if size > MAX_ANSWER_BYTES:
        raise _WorkerDied(f"an answer of {size:,} bytes")
    body = _receive(out, size, deadline - time.monotonic(), progress)
    try:
        answer = json.loads(body)
    except ValueError:
        raise _WorkerDied("an answer that is not JSON") from None
    if not isinstance(answer, dict):
        raise _WorkerDied("an answer that is not an object")
    return answer


def _send(fd: int, data: bytes, deadline: float, progress: Callable[[], None]) -> None:
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    os.set_blocking(fd, False)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TimedOut("sending the mail")
        if not poller.poll(min(left, PROGRESS_EVERY_S) * 1000):
            progress()
            continue
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise _WorkerDied("its input closed") from None


def _receive(fd: int, size: int, left_s: float, progress: Callable[[], None]) -> bytes:
    deadline = time.monotonic() + left_s
    chunks: list[bytes] = []
    missing = size
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    os.set_blocking(fd, False)
    while missing:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _TimedOut("waiting for the answer")
        if not poller.poll(min(left, PROGRESS_EVERY_S) * 1000):
            progress()
            continue
        try:
            chunk = os.read(fd, min(missing, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise _WorkerDied("it exited")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _kill(worker: subprocess.Popen[bytes]) -> None:
    for stream in (worker.stdin, worker.stdout):
        if stream is not None:
            stream.close()
    if worker.poll() is None:
        worker.kill()
    try:
        worker.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
        logger.warning("mail reader: worker %d did not exit after SIGKILL", worker.pid)


def _quote(data: bytes) -> str:
    return repr(data[:40])


# --- the answer: JSON, checked field by field ----------------------------------------


def notification_to_json(notification: Notification) -> dict[str, Any]:
    """The worker's half: a Notification as plain JSON values."""
    return {
        "message_id": notification.message_id,
        "sender": notification.sender,
        "subject": notification.subject,
        "texts": list(notification.texts),
        "links": [[k.url, k.text, k.source, k.via] for k in notification.links],
        "candidate_job_ids": list(notification.candidate_job_ids),
        "defects": list(notification.defects),
        "auth_results": list(notification.auth_results),
        "from_domain": notification.from_domain,
    }


def notification_from_json(value: object) -> Notification:
    """The daemon's half: rebuild a Notification, refusing anything of another shape.

    :raises MailTooCostly: the answer is not what a worker sends (a worker gone wrong).
    """
    try:
        if not isinstance(value, dict):
            raise TypeError("not an object")
        links = tuple(
            Link(url=_str(u), text=_str(t), source=_str(s), via=_opt(v))
            for u, t, s, v in _list(value["links"])
        )
        return Notification(
            message_id=_opt(value["message_id"]),
            sender=_opt(value["sender"]),
            subject=_str(value["subject"]),
            texts=tuple(_str(t) for t in _list(value["texts"])),
            links=links,
            candidate_job_ids=tuple(_str(j) for j in _list(value["candidate_job_ids"])),
            defects=tuple(_str(d) for d in _list(value["defects"])),
            auth_results=tuple(_str(a) for a in _list(value["auth_results"])),
            from_domain=_opt(value["from_domain"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MailTooCostly(f"the reading process sent a malformed answer ({exc})") from None


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt(value: object) -> str | None:
    return None if value is None else _str(value)


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


# --- the worker's side --------------------------------------------------------------


def worker_main(argv: list[str]) -> None:
    """Serve mails from stdin until it closes: ``TARGET MEMORY_LIMIT TIME_LIMIT_S``."""
    target, memory_limit, time_limit_s = argv[0], int(argv[1]), float(argv[2])
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    # nothing a library prints may reach the protocol stream
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    _limit_self(memory_limit)
    read = _import_target(target)
    answers.write(_READY)
    while True:
        header = _read_exactly(requests, _HEADER_BYTES)
        if header is None:
            return  # the daemon closed the pipe, or is gone
        raw = _read_exactly(requests, int.from_bytes(header, "big"))
        if raw is None:
            return
        _limit_cpu(time_limit_s)
        answer = _read_one(read, raw, memory_limit)
        body = json.dumps(answer, ensure_ascii=True).encode("ascii")
        answers.write(len(body).to_bytes(_HEADER_BYTES, "big") + body)
        if answer.get("restart"):
            return


def _read_one(
    read: Callable[[bytes], Notification], raw: bytes, memory_limit: int
) -> dict[str, Any]:
    """Return the answer for one mail; ``restart`` asks for a fresh worker after it."""
    try:
        return {"notification": notification_to_json(read(raw))}
    except MemoryError:
        what = f"reading needs more than {memory_limit >> 20} MiB of memory"
        return {"error": str(MailTooCostly(what)), "costly": True, "restart": True}
    except MailTooCostly as exc:  # the extractor's own caps, or its MemoryError
        return {"error": str(exc), "costly": True, "restart": True}
    except ExtractError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # a bug in the reading code, not a property of the mail
        return {"error": f"the mail could not be read ({type(exc).__name__})"}


def _limit_self(memory_limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # never a core file of a hostile mail
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # nothing to write anywhere


def _limit_cpu(time_limit_s: float) -> None:
    """End this process (SIGXCPU) if one mail takes twice the daemon's limit in CPU time: the
    daemon kills it sooner, unless the daemon itself is gone."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + 2 * int(time_limit_s) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _import_target(target: str) -> Callable[[bytes], Notification]:
    module_name, _, name = target.partition(":")
    module = __import__(module_name, fromlist=[name])
    function: Callable[[bytes], Notification] = getattr(module, name)
    return function


def _read_exactly(stream: Any, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
