"""The token source: access tokens on demand, refreshed ahead of expiry, never in a loop.

:class:`TokenSource` implements ``ports.AccessTokens`` over one ``grants.Grant``. Its
rules (docs/reliability.md §2.8):

* **Reuse, then refresh ahead.** An access token lives in memory only and is handed out
  until less than a third of its lifetime (at most ``MAX_MARGIN_S``) is left; then the
  next caller gets a new one. So a new IMAP login always gets a token with more than the
  margin left, and a daemon asks the endpoint about once per lifetime, not per poll.
* **Rotated refresh tokens are kept at once**, through ``chain.RefreshChain``, before the
  new access token is used.
* **A refusal that needs a person** (``failures.classify``) raises ``TokenRefused`` with
  what to do, and is not asked again with the same inputs for ``PERMANENT_RETRY_S``; as
  soon as an input changes (a new refresh token in the configured place, a new client
  secret or key) the next caller tries at once. That is the whole recovery.
* **A failure that passes** raises ``TokenError`` and waits a back-off (doubling from
  ``BACKOFF_INITIAL_S`` to ``BACKOFF_MAX_S``, or the server's ``Retry-After``); meanwhile a
  cached token with more than ``FALLBACK_MIN_LEFT_S`` left is still handed out.
* **A hard bound**: at most ``MAX_REQUESTS_PER_MINUTE`` token requests in any 60 s,
  whatever the callers do.

Each new token, rotation and failure is written (without any token) to
``oauth2-status.json`` in the state directory, for ``inbox-poller auth status``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inbox_poller.errors import ConfigError, TokenError, TokenRefused
from inbox_poller.oauth.chain import STATUS_FILE, RefreshChain, digest, write_private
from inbox_poller.oauth.failures import GrantFailed, Remedies, classify
from inbox_poller.oauth.grants import Grant, TokenAnswer
from inbox_poller.oauth.http import Exchange
from inbox_poller.ports import Metrics, NoMetrics

logger = logging.getLogger("inbox_poller.oauth")

MAX_MARGIN_S = 300.0
"""A token is refreshed once less than a third of its lifetime, and at most this, is left."""
MAX_REQUESTS_PER_MINUTE = 6
"""The hard bound on token requests in any 60 s window."""
PERMANENT_RETRY_S = 300.0
"""A refused grant is asked again with unchanged inputs at most this often (a consent an
administrator granted again is noticed within this time)."""
BACKOFF_INITIAL_S = 2.0
BACKOFF_MAX_S = 120.0
FALLBACK_MIN_LEFT_S = 30.0
"""While the endpoint fails transiently, a cached token with more than this left is used."""
MAX_RETRY_AFTER_S = 600.0


def refresh_margin_s(lifetime_s: float) -> float:
    """The time left at which a token of *lifetime_s* is replaced: a third, at most 5 min."""
    return min(lifetime_s / 3.0, MAX_MARGIN_S)


@dataclass(frozen=True)
class _Cached:
    token: str
    obtained_at: float
    expires_at: float
    margin_s: float

    def left_s(self, now: float) -> float:
        return self.expires_at - now

    def __repr__(self) -> str:
        return f"_Cached(expires_at={self.expires_at})"


class TokenSource:
    """Access tokens from *grant*, by the rules above (implements ``ports.AccessTokens``).

    *chain* is the refresh-token chain (``grant = "refresh_token"`` only); *inputs*
    returns a digest of every other input a person may change (client secret, service
    account key); *clock* is wall-clock seconds (tokens expire in real time).
    """

    def __init__(
        self,
        grant: Grant,
        *,
        remedies: Remedies,
        exchange: Exchange,
        chain: RefreshChain | None = None,
        inputs: Callable[[], str] = lambda: "",
        state_dir: Path | None = None,
        describe: str = "",
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._grant = grant
        self._remedies = remedies
        self.exchange = exchange
        self._chain = chain
        self._inputs = inputs
        self._state_dir = state_dir
        self._describe = describe
        self._clock = clock
        self._metrics: Metrics = metrics or NoMetrics()
        self._lock = threading.Lock()
        self._cached: _Cached | None = None
        self._requests: deque[float] = deque()
        self.fetches = 0
        """Token requests made (each may be retried by its library, boundedly)."""
        self._refused: tuple[str, float, str] | None = None
        """(inputs fingerprint, when, message) of the last permanent refusal."""
        self._hold_until = 0.0
        self._transient_failures = 0
        self._last_transient = ""
        self._unsaved: tuple[str, str] | None = None
        """(old, new) refresh tokens not yet written to the chain (the write failed)."""

    # ---- ports.AccessTokens -------------------------------------------------------------

    def access_token(self) -> str:
        """Return a token with more than its refresh margin left (see the module rules).

        :raises TokenRefused:
        :raises TokenError:
        """
        with self._lock:
            now = self._clock()
            cached = self._cached
            if cached is not None and cached.left_s(now) > cached.margin_s:
                return cached.token
            return self._renew(now)

    def forget(self, token: str) -> None:
        """Drop *token*: the IMAP server refused it, so the next caller gets a new one."""
        with self._lock:
            if self._cached is not None and self._cached.token == token:
                self._cached = None

    # ---- for check and auth status ------------------------------------------------------

    @property
    def where(self) -> str:
        """The token endpoint, safe to show."""
        return self._grant.where

    def expires_at(self) -> datetime | None:
        """When the cached access token expires (None when there is none)."""
        cached = self._cached
        return None if cached is None else datetime.fromtimestamp(cached.expires_at, UTC)

    # ---- internals ----------------------------------------------------------------------

    def _fingerprint(self) -> str:
        parts = [self._inputs()]
        if self._chain is not None:
            parts.append(self._chain.fingerprint())
        return digest("|".join(parts))

    def _renew(self, now: float) -> str:
        if self._refused is not None:
            fingerprint, when, message = self._refused
            if fingerprint == self._fingerprint() and now - when < PERMANENT_RETRY_S:
                raise TokenRefused(message)
        usable = self._cached is not None and self._cached.left_s(now) > FALLBACK_MIN_LEFT_S
        if now < self._hold_until:
            if usable and self._cached is not None:
                return self._cached.token
            wait = self._hold_until - now
            raise TokenError(f"{self._last_transient}; next token request in {wait:.0f}s")
        while self._requests and now - self._requests[0] >= 60.0:
            self._requests.popleft()
        if len(self._requests) >= MAX_REQUESTS_PER_MINUTE:
            if usable and self._cached is not None:
                return self._cached.token
            raise TokenError(
                f"OAuth2: {MAX_REQUESTS_PER_MINUTE} token requests in the last minute; "
                "holding back (docs/reliability.md §2.8)"
            )
        self._requests.append(now)
        self.fetches += 1
        try:
            answer = self._fetch(now)
        except TokenRefused as exc:
            self._metrics.token_refresh_failed()
            self._refused = (self._fingerprint(), now, str(exc))
            self._cached = None
            self._write_status(now, failure=str(exc), permanent=True)
            raise
        except TokenError as exc:
            self._metrics.token_refresh_failed()
            if usable and self._cached is not None:
                logger.warning("%s; using the current access token meanwhile", exc)
                return self._cached.token
            raise
        self._refused = None
        self._transient_failures = 0
        self._hold_until = 0.0
        margin = refresh_margin_s(answer.lifetime_s)
        self._cached = _Cached(answer.access_token, now, now + answer.lifetime_s, margin)
        self._write_status(now)
        logger.info(
            "oauth2: new access token from %s, valid %.0fs (refreshed %.0fs before expiry)%s",
            self._grant.where,
            answer.lifetime_s,
            margin,
            "; the refresh token was rotated and kept" if answer.refresh_token else "",
        )
        return answer.access_token

    def _fetch(self, now: float) -> TokenAnswer:
        """One token request, under the chain's lock when there is a chain.

        :raises TokenRefused:
        :raises TokenError:
        """
        try:
            if self._chain is None:
                return self._ask(None, now)
            with self._chain.locked():
                self._save_unsaved(now)
                refresh_token = self._chain.current()
                answer = self._ask(refresh_token, now)
                if answer.refresh_token is not None:
                    self._keep(refresh_token, answer.refresh_token, now)
                return answer
        except ConfigError as exc:
            raise TokenRefused(f"OAuth2: {exc}") from None
        except OSError as exc:  # the state directory or its lock
            raise TokenError(f"OAuth2: cannot use the state directory: {exc}") from None

    def _ask(self, refresh_token: str | None, now: float) -> TokenAnswer:
        try:
            return self._grant.fetch(refresh_token)
        except GrantFailed as failure:
            verdict = classify(failure, self._remedies, self._grant.where)
            if verdict.permanent:
                raise TokenRefused(verdict.message) from None
            self._transient_failures += 1
            backoff = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (self._transient_failures - 1))
            retry_after = _seconds(failure.retry_after)
            if retry_after is not None:
                backoff = max(backoff, min(retry_after, MAX_RETRY_AFTER_S))
            self._hold_until = now + backoff
            self._last_transient = verdict.message
            self._write_status(now, failure=verdict.message, permanent=False)
            raise TokenError(verdict.message) from None

    def _keep(self, old: str, new: str, now: float) -> None:
        assert self._chain is not None
        try:
            self._chain.rotate(old, new, datetime.fromtimestamp(now, UTC))
        except OSError as exc:
            # the provider may already refuse the old token: keep the new one in memory and
            # try to write it again before the next request
            self._unsaved = (old, new)
            logger.error(
                "oauth2: cannot keep the rotated refresh token in %s (%s); a restart now "
                "would fall back to the replaced one",
                self._chain.path,
                exc.strerror or exc,
            )

    def _save_unsaved(self, now: float) -> None:
        if self._unsaved is not None and self._chain is not None:
            old, new = self._unsaved
            self._chain.rotate(old, new, datetime.fromtimestamp(now, UTC))
            self._unsaved = None

    def _write_status(self, now: float, *, failure: str = "", permanent: bool = False) -> None:
        if self._state_dir is None:
            return
        cached = self._cached
        record: dict[str, Any] = {
            "source": self._describe,
            "token_url": self._grant.where,
            "updated_at": _iso(now),
            "access_token_obtained_at": _iso(cached.obtained_at) if cached else None,
            "access_token_expires_at": _iso(cached.expires_at) if cached else None,
            "token_requests": self.fetches,
            "failure": failure or None,
            "failure_permanent": permanent if failure else None,
        }
        try:
            write_private(self._state_dir / STATUS_FILE, json.dumps(record, indent=1).encode())
        except OSError as exc:
            logger.debug("oauth2: cannot write %s: %s", STATUS_FILE, exc)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _seconds(retry_after: str | None) -> float | None:
    if retry_after is None or not retry_after.strip().isdigit():
        return None
    return float(retry_after.strip())
