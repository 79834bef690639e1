"""The simulator's signed export links: an HMAC over the token and the expiry time.

Like Pinpointe's, a link is only good as long as nobody changed it and it has not
expired; the signer holds a secret of its own, so links of another simulator (or of an
earlier run) are refused too. Nothing here is used in production.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime


class LinkSigner:
    """Sign export links, and say why a link presented for download is refused."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def sign(self, token: str, expires: str) -> str:
        """Return the ``sig`` of the link with *token* that expires at *expires* (epoch s)."""
        mac = hmac.new(self._secret, f"{token}.{expires}".encode(), hashlib.sha256)
        return mac.hexdigest()[:40]

    def refusal(self, token: str, expires: str, sig: str) -> int | None:
        """Return the status refusing the link (403 altered, 410 expired), or None if good."""
        if not expires.isdigit() or not hmac.compare_digest(sig, self.sign(token, expires)):
            return 403
        if int(expires) < datetime.now(UTC).timestamp():
            return 410
        return None
