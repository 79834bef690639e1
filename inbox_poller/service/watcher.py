"""The mailbox watcher: push through IDLE, with a scheduled poll as the floor.

``MailboxWatcher.run()`` keeps one IMAP session open and calls the daemon's
``on_pass(mailbox, status)`` (the catch-up pass: fetch everything above the ledger's
watermark) whenever the session (re)opens, the server reports new mail, the
daemon sets ``wake``, or ``poll_interval_s`` has passed since the last pass.

Every wait is bounded (docs/reliability.md §2.2): IDLE is renewed every
``idle_timeout_s`` and each answer is awaited at most the socket's read
timeout, so a silently dead connection raises ``MailboxError`` within
``idle_timeout_s`` + read timeout and is replaced. Any failure closes the
session and reconnects after an exponential, jittered back-off that waits on
``stop``; nothing escapes the loop, and since every session starts with a
catch-up pass by UID, mail delivered during an outage is processed once.

``on_progress`` is called after each completed wait or pass and while
backing off: the daemon pings the systemd watchdog from it (docs/reliability.md
§7.2), so a session stuck beyond its timeouts stops the pings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from inbox_poller.errors import LedgerUnavailable, MailboxError, MailboxLoginError, TokenRefused
from inbox_poller.models import MailboxStatus
from inbox_poller.ports import Mailbox, Metrics, NoMetrics

logger = logging.getLogger("inbox_poller.service")

IDLE_RENEW_S = 5.0
"""How long one IDLE lasts before DONE and a new IDLE: far inside RFC 2177's 29 minutes,
and the bound on how long a silently dead connection goes unnoticed (plus the read
timeout). Without IDLE, the period of the NOOP that asks the server for news."""
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 300.0
PROGRESS_EVERY_S = 1.0
"""How often ``on_progress("backoff")`` is called while waiting to reconnect (or more
often, when ``idle_timeout_s`` is shorter)."""
WAKE_CHECK_S = 0.1
"""How often a NOOP-polling wait (no IDLE) looks at ``wake``; ``stop`` ends it at once."""
REASON_MAX_CHARS = 200
LOGIN_PROBLEM_MAX_CHARS = 600


def backoff_delay(failures: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Return the wait before reconnect attempt number *failures* (1 for the first).

    The ceiling doubles per failure from *initial_s* up to *max_s*; the delay is
    drawn uniformly from the upper half of it ("equal jitter"). Unlike full
    jitter, which may draw ~0, this never retries at once, so even a refused
    login cannot make a hot loop, while still spreading reconnects out.
    """
    if failures < 1:
        raise ValueError("failures counts from 1")
    # min() before the power would overflow for a long outage; cap the exponent instead
    ceiling = min(max_s, initial_s * 2.0 ** min(failures - 1, 64))
    return rng.uniform(ceiling / 2, ceiling)


def _short(exc: BaseException) -> str:
    """Describe *exc* in one line for the state and STATUS text."""
    text = str(exc) if isinstance(exc, MailboxError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


class MailboxWatcher:
    """Keep one session on the mailbox and run ``on_pass`` whenever mail may be new.

    *on_pass* gets the open *mailbox* and the ``MailboxStatus`` of its session (whose
    folder and UIDVALIDITY key the ledger's watermark); it reads and acknowledges
    through that mailbox, and a ``MailboxError`` it raises ends the session.
    ``stop`` ends ``run()``; ``wake`` asks for a pass soon (a download finished and
    mail needs acknowledging, or the daemon's own schedule). *clock* is monotonic
    seconds, used for the poll schedule and ``last_pass_at``.

    Read-only attributes for STATUS lines: ``state`` (``"connecting"``, ``"idle"``,
    ``"polling"``, ``"backoff: <reason>"``, ``"stopped"``), ``last_pass_at`` (clock
    value of the last completed pass, or None), ``sessions`` (sessions opened),
    ``failures`` (consecutive failed sessions).
    """

    def __init__(
        self,
        mailbox: Mailbox,
        on_pass: Callable[[Mailbox, MailboxStatus], None],
        *,
        poll_interval_s: float,
        stop: threading.Event,
        wake: threading.Event,
        idle_timeout_s: float = IDLE_RENEW_S,
        on_progress: Callable[[str], None] = lambda what: None,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_login_problem: Callable[[str], None] = lambda problem: None,
        metrics: Metrics | None = None,
    ) -> None:
        for name, value in (
            ("poll_interval_s", poll_interval_s),
            ("idle_timeout_s", idle_timeout_s),
            ("backoff_initial_s", backoff_initial_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if backoff_max_s < backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        self._mailbox = mailbox
        self._on_pass = on_pass
        self._poll_interval_s = poll_interval_s
        self._idle_timeout_s = idle_timeout_s
        self._stop = stop
        self._wake = wake
        self._on_progress = on_progress
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng: random.Random = rng or random.SystemRandom()
        self._clock = clock
        self._on_login_problem = on_login_problem
        self.login_problem = ""
        """Why the last session could not log in ("" once one did): a refused login or
        OAuth2 grant, which waiting will not fix."""
        self._metrics: Metrics = metrics or NoMetrics()
        self.state = "connecting"
        self._token_refused = False
        self.last_pass_at: float | None = None
        self.sessions = 0
        self.failures = 0

    def run(self) -> None:
        """Watch until ``stop`` is set; never raises (except BaseException like SystemExit)."""
        logger.info(
            "mailbox watcher: started (poll every %ss, IDLE renewed every %ss)",
            self._poll_interval_s,
            self._idle_timeout_s,
        )
        while not self._stop.is_set():
            reason = self._session()
            self._close()
            if reason is None or self._stop.is_set():
                break
            self._back_off(reason, self._poll_interval_s if self._token_refused else None)
        self.state = "stopped"
        logger.info("mailbox watcher: stopped")

    # ---- one session ------------------------------------------------------------------

    def _session(self) -> str | None:
        """Run one session until ``stop`` (return None) or a failure (return why)."""
        self._token_refused = False
        try:
            self._serve()
        except (MailboxLoginError, TokenRefused) as exc:
            # a refused grant is not asked again until its inputs change, so trying
            # once per poll interval costs no request and notices a fix soon
            self._token_refused = isinstance(exc, TokenRefused)
            text = " ".join(str(exc).split())[:LOGIN_PROBLEM_MAX_CHARS]
            if text != self.login_problem:
                logger.error("mailbox watcher: %s", exc)
            else:  # said once already; the status keeps saying it
                logger.debug("mailbox watcher: still: %s", exc)
            self._set_login_problem(text)
            self._metrics.failure("mailbox", exc)
            return _short(exc)
        except MailboxError as exc:
            logger.warning("mailbox watcher: %s", exc)
            self._metrics.failure("mailbox", exc)
            return _short(exc)
        except LedgerUnavailable as exc:  # not a bug: the pass is made again once it is back
            logger.warning("mailbox watcher: the ledger is unavailable: %s", exc)
            return "ledger unavailable"
        except Exception as exc:  # a bug or a failing callback: keep watching, loudly
            logger.exception("mailbox watcher: unexpected error; reconnecting")
            self._metrics.failure("mailbox", exc)
            return _short(exc)
        return None

    def _serve(self) -> None:
        self.state = "connecting"
        status = self._mailbox.open()
        self._set_login_problem("")
        self.sessions += 1
        if self.sessions > 1:
            logger.info("mailbox watcher: reconnected (session %d)", self.sessions)
        self._pass(status)  # the catch-up: mail that arrived while we were away
        healthy = False
        while not self._stop.is_set():
            due_s = self._poll_due_in_s()
            if due_s <= 0 or self._wake.is_set():
                self._pass(status)
                continue
            new_mail = self._wait(status, min(self._idle_timeout_s, due_s))
            if not healthy:
                # a session that got through a wait is working: start back-off afresh
                self.failures = 0
                healthy = True
            self._progress("idle")
            if new_mail and not self._stop.is_set():
                self._pass(status)

    def _poll_due_in_s(self) -> float:
        if self.last_pass_at is None:
            return 0.0
        return self.last_pass_at + self._poll_interval_s - self._clock()

    def _wait(self, status: MailboxStatus, timeout_s: float) -> bool:
        """Wait for new mail, ``wake`` or ``stop``, at most *timeout_s* (plus timeouts)."""
        self.state = "idle"
        if status.has_idle:
            return self._mailbox.idle_wait(timeout_s, self._interrupted)
        # no IDLE: wait on our own events, then ask the server with a NOOP
        self._wait_for_events(timeout_s)
        if self._stop.is_set():
            return False
        return self._mailbox.idle_wait(0)

    def _interrupted(self) -> bool:
        return self._stop.is_set() or self._wake.is_set()

    def _wait_for_events(self, timeout_s: float) -> None:
        """Sleep on ``stop`` (noticed at once) until *timeout_s* passes or ``wake`` is set."""
        deadline = time.monotonic() + timeout_s
        while not self._wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.wait(min(remaining, WAKE_CHECK_S)):
                return

    def _pass(self, status: MailboxStatus) -> None:
        self.state = "polling"
        self._wake.clear()  # before the pass: a request made during it gets its own pass
        self._on_pass(self._mailbox, status)
        self.last_pass_at = self._clock()
        self.state = "idle"
        self._progress("pass")

    # ---- between sessions -------------------------------------------------------------

    def _close(self) -> None:
        try:
            self._mailbox.close()
        except Exception:  # close() promises not to raise; a broken one must not stop us
            logger.exception("mailbox watcher: closing the session failed")

    def _back_off(self, reason: str, cap_s: float | None = None) -> None:
        """Wait before the next attempt, on ``stop``, reporting progress meanwhile.

        *cap_s* lowers the ceiling of the back-off (for a refused OAuth2 grant, which
        costs no request to try again).
        """
        self.failures += 1
        ceiling_s = self._backoff_max_s if cap_s is None else min(cap_s, self._backoff_max_s)
        delay_s = backoff_delay(
            self.failures,
            min(self._backoff_initial_s, ceiling_s),
            ceiling_s,
            self._rng,
        )
        self.state = f"backoff: {reason}"
        logger.info(
            "mailbox watcher: reconnecting in %.1fs (failure %d in a row)", delay_s, self.failures
        )
        remaining_s = delay_s
        while remaining_s > 0:
            # an outage is not a hang: keep the watchdog fed while we wait for the server
            self._progress("backoff")
            step_s = min(remaining_s, PROGRESS_EVERY_S, self._idle_timeout_s)
            if self._stop.wait(step_s):
                return
            remaining_s -= step_s

    def _set_login_problem(self, problem: str) -> None:
        if problem == self.login_problem:
            return
        self.login_problem = problem
        try:
            self._on_login_problem(problem)
        except Exception:  # a failing report must not take the watcher down
            logger.exception("mailbox watcher: recording the login problem failed")

    def _progress(self, what: str) -> None:
        try:
            self._on_progress(what)
        except Exception:  # a failing ping must not take the watcher down
            logger.exception("mailbox watcher: on_progress(%r) failed", what)
