"""The grants: one request for a new access token, through the provider's own library.

* Microsoft (Entra ID): msal, ``acquire_token_by_refresh_token`` (delegated) and
  ``acquire_token_for_client`` (app-only); the authority is derived from the token URL,
  so a ``token_url`` on loopback turns instance discovery off and msal reads that
  server's OpenID configuration instead.
* Google: google-auth, ``service_account.Credentials`` with ``subject`` = the mailbox
  (domain-wide delegation, a signed JWT bearer assertion) and ``credentials.Credentials``
  (user consent, a refresh token).
* Any other provider: authlib's ``OAuth2Session`` (refresh token, client credentials).

Each library is given a session from ``http.prepare_session``, so ``ca_file``, the
timeouts and the record of answers are the same for all three. A grant returns a
:class:`TokenAnswer` or raises ``failures.GrantFailed`` with the facts; it never logs
and never puts a token in a message. Libraries are imported when a grant is built, so
a configuration without OAuth2 never loads them.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from inbox_poller.config import MICROSOFT_TOKEN_PATH, OAuth2Config
from inbox_poller.errors import ConfigError
from inbox_poller.oauth.failures import GrantFailed
from inbox_poller.oauth.http import Exchange

DEFAULT_LIFETIME_S = 3600.0
"""Assumed when an answer has no ``expires_in`` (RFC 6749 makes it only RECOMMENDED)."""
MSAL_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
"""msal adds these itself and refuses them in a scope list."""


@dataclass(frozen=True)
class TokenAnswer:
    """A successful answer: the access token, its lifetime, and a rotated refresh token."""

    access_token: str
    lifetime_s: float
    refresh_token: str | None = None

    def __repr__(self) -> str:  # never a token in a repr, a log line or a traceback
        return (
            f"TokenAnswer(lifetime_s={self.lifetime_s}, rotated={self.refresh_token is not None})"
        )


class Grant(Protocol):
    """One way of getting access tokens (``tokens.TokenSource`` holds one)."""

    where: str
    """The token endpoint, safe to show."""
    uses_refresh_token: bool

    def fetch(self, refresh_token: str | None) -> TokenAnswer:
        """Ask the token endpoint once (a library may retry a 5xx itself, boundedly).

        :raises GrantFailed:
        """
        ...


def _transport(exc: requests.RequestException, timeout_s: float) -> GrantFailed:
    """Describe a request that got no HTTP answer (never with its body)."""
    if isinstance(exc, requests.exceptions.SSLError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError) or (
                "CERTIFICATE_VERIFY_FAILED" in str(cause)
            ):
                return GrantFailed(transport="TLS certificate verification failed", untrusted=True)
            cause = cause.__cause__ or cause.__context__
        return GrantFailed(transport="TLS error")
    if isinstance(exc, requests.Timeout):
        return GrantFailed(transport=f"no answer within {timeout_s}s")
    if isinstance(exc, requests.ConnectionError):
        return GrantFailed(transport="connection failed")
    return GrantFailed(transport=type(exc).__name__)


def _from_exchange(exchange: Exchange, error: Any = None, description: Any = None) -> GrantFailed:
    """A failure from what the server answered (the exchange), or what the library saw."""
    return GrantFailed(
        status=exchange.status,
        error=exchange.error or (error if isinstance(error, str) else None),
        description=exchange.description
        or (description[:300] if isinstance(description, str) else None),
        retry_after=exchange.retry_after,
    )


def _lifetime(value: Any) -> float:
    try:
        lifetime = float(value)
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME_S
    return lifetime if lifetime > 0 else 0.0


class MicrosoftGrant:
    """Entra ID through msal: delegated (refresh token) or app-only (client credentials)."""

    def __init__(
        self,
        config: OAuth2Config,
        client_secret: Callable[[], str] | None,
        session: requests.Session,
        exchange: Exchange,
    ) -> None:
        token_url = config.effective_token_url
        assert token_url is not None and config.client_id is not None  # config validated
        self.where = token_url
        self.uses_refresh_token = config.grant == "refresh_token"
        self._config = config
        self._client_secret = client_secret
        self._session = session
        self._exchange = exchange
        self._authority = token_url[: -len(MICROSOFT_TOKEN_PATH)]
        self._custom = config.token_url is not None
        self._app: Any = None

    def _scopes(self) -> list[str]:
        return [s for s in self._config.effective_scope.split() if s not in MSAL_RESERVED_SCOPES]

    def _application(self) -> Any:
        if self._app is not None:
            return self._app
        import msal

        kwargs: dict[str, Any] = {
            "authority": self._authority,
            "http_client": self._session,
            "timeout": self._config.timeout_s,
            "token_cache": msal.TokenCache(),
        }
        if self._custom:
            # not a Microsoft host: read this server's OpenID configuration, without
            # asking Microsoft's instance discovery about it
            kwargs["instance_discovery"] = False
            kwargs["validate_authority"] = False
        self._exchange.reset()
        try:
            if self._client_secret is not None:
                self._app = msal.ConfidentialClientApplication(
                    self._config.client_id, client_credential=self._client_secret(), **kwargs
                )
            else:
                self._app = msal.PublicClientApplication(self._config.client_id, **kwargs)
        except requests.RequestException as exc:
            raise _transport(exc, self._config.timeout_s) from None
        except ValueError:
            # msal's "Unable to get authority configuration": the tenant or authority
            raise GrantFailed(
                status=self._exchange.status,
                error=self._exchange.error or "invalid_authority",
                description=f"no OpenID configuration for the authority {self._authority}",
            ) from None
        return self._app

    def fetch(self, refresh_token: str | None) -> TokenAnswer:
        app = self._application()
        self._exchange.reset()
        try:
            if self.uses_refresh_token:
                assert refresh_token is not None
                result = app.acquire_token_by_refresh_token(refresh_token, scopes=self._scopes())
            else:
                app.remove_tokens_for_client()  # a token the server refused must not come back
                result = app.acquire_token_for_client(scopes=self._scopes())
        except requests.HTTPError:
            raise _from_exchange(self._exchange) from None
        except requests.RequestException as exc:
            raise _transport(exc, self._config.timeout_s) from None
        except ValueError:  # an answer that is not JSON
            raise _from_exchange(self._exchange, "invalid_response") from None
        if not isinstance(result, dict) or "access_token" not in result:
            result = result if isinstance(result, dict) else {}
            raise _from_exchange(
                self._exchange, result.get("error"), result.get("error_description")
            )
        rotated = result.get("refresh_token")
        return TokenAnswer(
            result["access_token"],
            _lifetime(result.get("expires_in")),
            rotated if isinstance(rotated, str) and rotated != refresh_token else None,
        )


class GoogleGrant:
    """Google through google-auth: a service account acting for the mailbox, or a user's
    refresh token."""

    def __init__(
        self,
        config: OAuth2Config,
        username: str,
        *,
        client_secret: Callable[[], str] | None,
        service_account: Callable[[], str] | None,
        session: requests.Session,
        exchange: Exchange,
    ) -> None:
        self._config = config
        self._username = username
        self._client_secret = client_secret
        self._service_account = service_account
        self._session = session
        self._exchange = exchange
        self.uses_refresh_token = config.grant == "refresh_token"
        self.where = config.effective_token_url or "the service account's token_uri"

    def _service_account_info(self) -> dict[str, Any]:
        assert self._service_account is not None
        try:
            info = json.loads(self._service_account())
        except ValueError:
            raise ConfigError(
                "the service account file is not JSON (download a JSON key from the "
                "Google Cloud console)",
                key="imap.oauth2.service_account_file",
            ) from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise ConfigError(
                'the service account file is not a key of "type": "service_account"',
                key="imap.oauth2.service_account_file",
            )
        if self._config.token_url is not None:
            info["token_uri"] = self._config.token_url
        if isinstance(info.get("token_uri"), str):
            self.where = info["token_uri"]
        return info

    def fetch(self, refresh_token: str | None) -> TokenAnswer:
        from google.auth import exceptions as google_errors
        from google.auth.transport.requests import Request
        from google.oauth2 import credentials as user_credentials
        from google.oauth2 import service_account

        scopes = self._config.effective_scope.split()
        credentials: Any
        if self.uses_refresh_token:
            credentials = user_credentials.Credentials(
                None,
                refresh_token=refresh_token,
                token_uri=self.where,
                client_id=self._config.client_id,
                client_secret=self._client_secret() if self._client_secret else None,
                scopes=scopes,
            )
        else:
            try:
                credentials = service_account.Credentials.from_service_account_info(
                    self._service_account_info(), scopes=scopes, subject=self._username
                )
            except (ValueError, KeyError) as exc:
                raise ConfigError(
                    f"the service account key cannot be used ({type(exc).__name__}: a field is "
                    "missing or the private key is not valid)",
                    key="imap.oauth2.service_account_file",
                ) from None
        self._exchange.reset()
        try:
            credentials.refresh(Request(session=self._session))
        except google_errors.RefreshError as exc:
            data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            raise _from_exchange(
                self._exchange, data.get("error"), data.get("error_description")
            ) from None
        except google_errors.TransportError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, requests.RequestException):
                raise _transport(cause, self._config.timeout_s) from None
            raise GrantFailed(transport="no answer") from None
        token = credentials.token
        if not isinstance(token, str) or not token:
            raise _from_exchange(self._exchange, "invalid_response")
        expiry = credentials.expiry
        lifetime = DEFAULT_LIFETIME_S
        if isinstance(expiry, datetime):
            now = datetime.now(UTC).replace(tzinfo=None)  # google-auth's expiry is naive UTC
            lifetime = max(0.0, (expiry - now).total_seconds())
        rotated = getattr(credentials, "refresh_token", None) if self.uses_refresh_token else None
        return TokenAnswer(
            token,
            lifetime,
            rotated if isinstance(rotated, str) and rotated != refresh_token else None,
        )


class GenericGrant:
    """Any RFC 6749 token endpoint through authlib: refresh token or client credentials."""

    def __init__(
        self,
        config: OAuth2Config,
        client_secret: Callable[[], str] | None,
        make_session: Callable[..., requests.Session],
        exchange: Exchange,
    ) -> None:
        assert config.token_url is not None
        self.where = config.token_url
        self.uses_refresh_token = config.grant == "refresh_token"
        self._config = config
        self._client_secret = client_secret
        self._make_session = make_session
        self._exchange = exchange

    def fetch(self, refresh_token: str | None) -> TokenAnswer:
        from authlib.integrations.base_client import OAuthError
        from authlib.integrations.requests_client import OAuth2Session

        secret = self._client_secret() if self._client_secret else None
        session: Any = self._make_session(
            OAuth2Session,
            client_id=self._config.client_id,
            client_secret=secret,
            scope=self._config.effective_scope or None,
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
        )
        self._exchange.reset()
        try:
            with session:
                if self.uses_refresh_token:
                    token = session.refresh_token(self.where, refresh_token=refresh_token)
                else:
                    token = session.fetch_token(self.where, grant_type="client_credentials")
        except OAuthError as exc:
            raise _from_exchange(self._exchange, exc.error, exc.description) from None
        except requests.HTTPError:
            raise _from_exchange(self._exchange) from None
        except requests.RequestException as exc:
            raise _transport(exc, self._config.timeout_s) from None
        except ValueError:  # not a JSON object
            raise _from_exchange(self._exchange, "invalid_response") from None
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise _from_exchange(self._exchange, "invalid_response")
        rotated = token.get("refresh_token")
        return TokenAnswer(
            access,
            _lifetime(token.get("expires_in")),
            rotated if isinstance(rotated, str) and rotated != refresh_token else None,
        )
