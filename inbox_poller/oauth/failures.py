"""Which token-endpoint failures need a person, and what that person must do.

A grant (``grants``) raises :class:`GrantFailed` with the facts of one failed request:
the HTTP status, the OAuth2 ``error`` and ``error_description`` (RFC 6749 §5.2), or a
transport problem. :func:`classify` turns those facts into a :class:`Verdict`:
*permanent* when only a person can fix it (``invalid_grant``: a refresh token expired,
revoked or already rotated away; ``invalid_client``: a wrong client secret or key;
consent missing or withdrawn; a refused scope; an untrusted certificate), *transient*
when waiting helps (5xx, 429, ``temporarily_unavailable``, a timeout, a refused
connection). The verdict's text is one line, built only from these facts: never from
a request body, and never with a token in it. ``GrantFailed`` is local control flow,
caught by ``tokens`` (see ``errors``).
"""

from __future__ import annotations

from dataclasses import dataclass

TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
"""OAuth2 ``error`` codes that say "try again later" (RFC 6749 §5.2, RFC 8628 §3.5)."""
CONSENT_ERRORS = frozenset({"consent_required", "interaction_required", "login_required"})
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


class GrantFailed(Exception):
    """One token request failed; the facts, never a token."""

    def __init__(
        self,
        *,
        status: int | None = None,
        error: str | None = None,
        description: str | None = None,
        transport: str | None = None,
        untrusted: bool = False,
        retry_after: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.description = description
        self.transport = transport
        """What went wrong below HTTP (no answer): a timeout, a refused connection."""
        self.untrusted = untrusted
        """The endpoint's certificate failed verification."""
        self.retry_after = retry_after
        super().__init__(self.facts())

    def facts(self) -> str:
        """The failure in a few words: ``HTTP 400 invalid_grant: AADSTS70008 …``."""
        if self.transport is not None:
            return self.transport
        parts = [f"HTTP {self.status}" if self.status is not None else "answer"]
        if self.error:
            parts.append(self.error)
        text = " ".join(parts)
        if self.description:
            text += f": {' '.join(self.description.split())}"
        return text


@dataclass(frozen=True)
class Verdict:
    permanent: bool
    message: str
    """One line: what failed, and for a permanent failure what a person must do."""


@dataclass(frozen=True)
class Remedies:
    """What a person can do, in this configuration's words (``tokens`` fills these in)."""

    grant: str
    """``refresh_token``, ``client_credentials`` or ``service_account``."""
    refresh_token_source: str = ""
    """Where the daemon reads the refresh token (``file /etc/…``)."""
    client_secret_source: str = ""
    username: str = ""
    scope: str = ""


def classify(failure: GrantFailed, remedies: Remedies, where: str) -> Verdict:
    """Judge one failed token request at *where* (the token URL, safe to show).

    A permanent verdict says first what a person must do (it must fit the 200
    characters of systemd's ``STATUS=``), then what the server answered.
    """
    answered = f"{where} answered {failure.facts()}"
    if failure.untrusted:
        return Verdict(
            True,
            "OAuth2 token endpoint not trusted: if it uses a private CA, name it in "
            f"imap.oauth2.ca_file ({where}: {failure.facts()})",
        )
    status, error = failure.status, (failure.error or "").lower()
    if failure.transport is not None:
        return Verdict(False, f"OAuth2 token request to {where} failed: {failure.facts()}")
    if error in TRANSIENT_ERRORS or (
        status is not None and (status >= 500 or status in (408, 429))
    ):
        return Verdict(False, f"OAuth2 token request failed for now ({answered})")
    if error == "invalid_grant":
        return Verdict(True, f"{_invalid_grant(remedies)} ({answered})")
    if error in CLIENT_ERRORS or (status == 401 and not error):
        return Verdict(True, f"{_client_refused(remedies)} ({answered})")
    if error in CONSENT_ERRORS or error == "access_denied":
        return Verdict(True, f"{_consent(remedies)} ({answered})")
    if error == "invalid_scope":
        return Verdict(
            True,
            f"OAuth2 scope {remedies.scope!r} refused: check imap.oauth2.scope against "
            f"docs/providers.md ({answered})",
        )
    if status is not None and 400 <= status < 500:
        return Verdict(True, f"OAuth2 request refused: check [imap.oauth2] ({answered})")
    # a 2xx or 3xx without a usable token: a confused server, worth asking again later
    return Verdict(False, f"OAuth2 token request failed for now ({answered})")


def _invalid_grant(remedies: Remedies) -> str:
    if remedies.grant == "refresh_token":
        return (
            "OAuth2 refresh token refused (expired, revoked or replaced): run "
            "`inbox-poller auth login` and put the new refresh token in "
            f"{remedies.refresh_token_source}; the daemon picks it up by itself"
        )
    if remedies.grant == "service_account":
        return (
            f"OAuth2 service account may not act for {remedies.username!r}: authorise its "
            "client ID for domain-wide delegation with this scope in the Google Admin "
            "console (docs/providers.md)"
        )
    return "OAuth2 grant refused: check [imap.oauth2] against docs/providers.md"


def _client_refused(remedies: Remedies) -> str:
    if remedies.grant == "service_account":
        return (
            "OAuth2 service account key refused (deleted or disabled?): put a current key "
            "in imap.oauth2.service_account_file"
        )
    if remedies.client_secret_source:
        return (
            "OAuth2 client secret refused: put the application's current client secret in "
            f"{remedies.client_secret_source} and check imap.oauth2.client_id"
        )
    return (
        "OAuth2 client refused: check imap.oauth2.client_id, and give a client secret if "
        "the application is not a public client"
    )


def _consent(remedies: Remedies) -> str:
    if remedies.grant == "refresh_token":
        return "OAuth2 consent missing or withdrawn: run `inbox-poller auth login` again"
    return (
        "OAuth2 consent missing or withdrawn: an administrator must grant the application "
        "its permission again (docs/providers.md)"
    )
