"""The local OAuth2 server: token, device, authorization and introspection endpoints.

One threaded HTTPS server on 127.0.0.1 (certificate from
:mod:`inbox_poller.sandbox.localca`) answers:

* ``POST …/token``: the grants ``refresh_token``, ``client_credentials``,
  ``urn:ietf:params:oauth:grant-type:jwt-bearer`` (Google service accounts, RFC 7523),
  ``authorization_code`` (with PKCE, RFC 7636) and
  ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628), with client secrets by
  HTTP Basic or in the body; errors as RFC 6749 §5.2 JSON;
* ``GET …/v2.0/.well-known/openid-configuration``: the document msal reads for an
  authority ``https://127.0.0.1:PORT/<tenant>``;
* ``POST …/devicecode`` and ``GET …/authorize`` for ``inbox-poller auth login`` (the
  authorization is granted at once, for :attr:`OAuthServer.consent_user`);
* ``POST /introspect``: RFC 7662 introspection, as Dovecot's ``oauth2`` passdb asks it
  (``introspection_mode = post``).

Access tokens are short-lived when asked (:attr:`OAuthServer.access_lifetime_s`),
refresh tokens can rotate (the old one then fails with ``invalid_grant``), anything can
be revoked, failures can be queued, and every request is counted. Every token issued is
remembered (:meth:`OAuthServer.issued_tokens`), so a test can look for them in logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from inbox_poller.sandbox.localca import LocalCA, make_local_ca
from inbox_poller.sandbox.oauth.keys import AssertionRefused, verify_assertion
from inbox_poller.sandbox.tlsserver import LoopbackHandler, LoopbackTlsServer

logger = logging.getLogger("inbox_poller.sandbox")

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"
"""google-auth signs every assertion for Google's endpoint, whatever the token_uri."""
MAX_BODY_BYTES = 64 * 1024


@dataclass
class _Refresh:
    user: str
    client_id: str
    scope: str
    alive: bool = True


@dataclass
class _Access:
    user: str
    client_id: str
    scope: str
    expires_at: float
    alive: bool = True


@dataclass
class _Device:
    client_id: str
    scope: str
    user_code: str
    user: str | None = None
    used: bool = False


@dataclass
class _Code:
    client_id: str
    scope: str
    redirect_uri: str
    challenge: str
    user: str
    used: bool = False


@dataclass(frozen=True)
class TokenRequest:
    """One request the token endpoint answered (for counting; never a token)."""

    at: float
    grant: str
    status: int
    error: str | None


@dataclass
class _Fault:
    status: int
    error: str
    count: int
    retry_after: str | None = None


@dataclass
class OAuthServer:
    """A throwaway OAuth2 authorization server; start it with ``with`` or :meth:`start`.

    *directory* holds its CA and certificate (trust ``ca_file``).
    """

    directory: Path
    access_lifetime_s: float = 3600.0
    rotate_refresh_tokens: bool = False
    consent_user: str = "inbox-poller"
    """Who approves a device code or an authorization request (``auth login`` tests)."""
    clients: dict[str, str | None] = field(default_factory=dict)
    """client_id -> secret (None: a public client)."""
    service_accounts: dict[str, bytes] = field(default_factory=dict)
    """client e-mail -> public key (PEM); :meth:`add_service_account` fills it."""
    delegations: dict[str, set[str]] = field(default_factory=dict)
    """client e-mail -> the users it may act for (domain-wide delegation)."""
    app_mailboxes: dict[str, str] = field(default_factory=dict)
    """client_id -> the mailbox its app-only (client credentials) tokens may open, as
    Exchange's application access policy says."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, _Access] = {}
        self._devices: dict[str, _Device] = {}
        self._codes: dict[str, _Code] = {}
        self._faults: deque[_Fault] = deque()
        self._issued: list[str] = []
        self.requests: list[TokenRequest] = []
        self.introspections = 0
        self.introspected_left_s: list[float] = []
        """For each active token introspected: the seconds it had left then."""
        self._httpd: _TlsServer | None = None
        self._thread: threading.Thread | None = None
        self._ca: LocalCA | None = None

    # ---- life cycle -------------------------------------------------------------------

    def start(self) -> OAuthServer:
        self._ca = make_local_ca(self.directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._ca.server_cert, self._ca.server_key)
        self._httpd = _TlsServer(context, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="oauth-server", daemon=True
        )
        self._thread.start()
        logger.info("oauth server: listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- addresses ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start the server first"
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def ca_file(self) -> Path:
        assert self._ca is not None, "start the server first"
        return self._ca.ca_cert

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.base_url}/introspect"

    def microsoft_token_url(self, tenant: str) -> str:
        return f"{self.base_url}/{tenant}/oauth2/v2.0/token"

    @property
    def authorization_url(self) -> str:
        return f"{self.base_url}/authorize"

    # ---- controls for tests -----------------------------------------------------------

    def add_client(
        self, client_id: str, secret: str | None = None, *, mailbox: str | None = None
    ) -> None:
        """Register a client; *mailbox* is what its app-only tokens may open."""
        self.clients[client_id] = secret
        if mailbox is not None:
            self.app_mailboxes[client_id] = mailbox

    def add_service_account(self, client_email: str, public_key: bytes, *users: str) -> None:
        self.service_accounts[client_email] = public_key
        self.delegations.setdefault(client_email, set()).update(users)

    def issue_refresh_token(self, user: str, client_id: str, scope: str = "") -> str:
        """A refresh token as a person's consent would give it."""
        with self._lock:
            return self._new_refresh(user, client_id, scope)

    def mint_access_token(self, user: str, lifetime_s: float = 3600.0) -> str:
        """An access token for the test helpers' own IMAP logins (not counted)."""
        with self._lock:
            token = self._token("at")
            self._access[token] = _Access(user, "test-helper", "", time.time() + lifetime_s)
            return token

    def revoke(self, token: str) -> None:
        """Revoke a refresh token, and every access token of its user and client."""
        with self._lock:
            record = self._refresh.get(token)
            if record is None:
                raise KeyError("no such refresh token")
            record.alive = False
            for access in self._access.values():
                if access.user == record.user and access.client_id == record.client_id:
                    access.alive = False

    def revoke_access_tokens(self, user: str) -> None:
        """Revoke every access token of *user*; refresh tokens stay valid."""
        with self._lock:
            for access in self._access.values():
                if access.user == user:
                    access.alive = False

    def revoke_all(self, user: str) -> None:
        """Revoke every refresh and access token of *user* (consent withdrawn)."""
        with self._lock:
            for record in self._refresh.values():
                if record.user == user:
                    record.alive = False
            for access in self._access.values():
                if access.user == user:
                    access.alive = False

    def live_refresh_tokens(self, user: str) -> list[str]:
        with self._lock:
            return [t for t, r in self._refresh.items() if r.user == user and r.alive]

    def fail_next(
        self,
        count: int,
        status: int = 503,
        error: str = "temporarily_unavailable",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next *count* token requests with *status* and *error*."""
        with self._lock:
            self._faults.append(_Fault(status, error, count, retry_after))

    def approve_device(self, user_code: str, user: str | None = None) -> None:
        """The person enters *user_code* and consents (as *user*)."""
        with self._lock:
            for device in self._devices.values():
                if device.user_code == user_code:
                    device.user = user or self.consent_user
                    return
        raise KeyError(f"no device code with user code {user_code!r}")

    def token_requests(self, since: int = 0) -> list[TokenRequest]:
        """The token requests answered, oldest first, from number *since* on (see
        :meth:`mark`); polling a device code that is not yet approved is not counted."""
        with self._lock:
            return [r for r in self.requests[since:] if r.error != "authorization_pending"]

    def mark(self) -> int:
        """The number of requests so far, to count from (``token_requests(since=…)``)."""
        with self._lock:
            return len(self.requests)

    def reset(self) -> None:
        """Back to the defaults, for the next test of a shared server."""
        with self._lock:
            self.access_lifetime_s = 3600.0
            self.rotate_refresh_tokens = False
            self._faults.clear()
            self.consent_user = "inbox-poller"

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token this server has handed out."""
        with self._lock:
            return list(self._issued)

    # ---- the endpoints (called by the handler) --------------------------------------

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        prefix = f"{self.base_url}/{tenant}"
        return {
            "issuer": f"{prefix}/v2.0",
            "token_endpoint": f"{prefix}/oauth2/v2.0/token",
            "authorization_endpoint": f"{prefix}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{prefix}/oauth2/v2.0/devicecode",
            "introspection_endpoint": self.introspection_url,
        }

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        status, answer, headers = self._grant(grant, form, authorization)
        with self._lock:
            self.requests.append(TokenRequest(time.time(), grant, status, answer.get("error")))
        answer.update(headers)
        return status, answer

    def _grant(
        self, grant: str, form: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, Any], dict[str, Any]]:
        with self._lock:
            if self._faults:
                fault = self._faults[0]
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.popleft()
                extra = {"__retry_after": fault.retry_after} if fault.retry_after else {}
                return fault.status, {"error": fault.error}, extra
        if grant == JWT_BEARER:
            return (*self._jwt_bearer(form), {})
        client_id, problem = self._client(form, authorization)
        if problem is not None:
            return 401, {"error": "invalid_client", "error_description": problem}, {}
        with self._lock:
            if grant == "refresh_token":
                return (*self._refresh_grant(form, client_id), {})
            if grant == "client_credentials":
                if self.clients.get(client_id) is None:
                    return 400, {"error": "unauthorized_client"}, {}
                scope = form.get("scope", "")
                mailbox = self.app_mailboxes.get(client_id, f"app:{client_id}")
                return 200, self._answer(mailbox, client_id, scope, None), {}
            if grant == "authorization_code":
                return (*self._code_grant(form, client_id), {})
            if grant == DEVICE_CODE:
                return (*self._device_grant(form, client_id), {})
        return 400, {"error": "unsupported_grant_type"}, {}

    def _client(self, form: dict[str, str], authorization: str | None) -> tuple[str, str | None]:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:]).decode("utf-8")
            except ValueError:
                return "", "bad Basic credentials"
            user, _, password = decoded.partition(":")
            client_id, secret = unquote(user), unquote(password)
        if client_id not in self.clients:
            return client_id, "unknown client"
        expected = self.clients[client_id]
        if expected is not None and secret != expected:
            return client_id, "wrong client secret"
        return client_id, None

    def _refresh_grant(self, form: dict[str, str], client_id: str) -> tuple[int, dict[str, Any]]:
        token = form.get("refresh_token", "")
        record = self._refresh.get(token)
        if record is None or not record.alive or record.client_id != client_id:
            return 400, {
                "error": "invalid_grant",
                "error_description": "the refresh token is expired, revoked or unknown",
            }
        rotated = None
        if self.rotate_refresh_tokens:
            record.alive = False
            rotated = self._new_refresh(record.user, client_id, record.scope)
        scope = form.get("scope") or record.scope
        return 200, self._answer(record.user, client_id, scope, rotated)

    def _jwt_bearer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            claims = verify_assertion(
                form.get("assertion", ""), self.service_accounts, GOOGLE_AUDIENCE
            )
        except AssertionRefused as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        issuer, subject = str(claims["iss"]), str(claims.get("sub", ""))
        if subject not in self.delegations.get(issuer, set()):
            return 401, {
                "error": "unauthorized_client",
                "error_description": "Client is unauthorized to retrieve access tokens "
                "using this method, or client not authorized for any of the scopes requested.",
            }
        with self._lock:
            return 200, self._answer(subject, issuer, str(claims.get("scope", "")), None)

    def _code_grant(self, form: dict[str, str], client_id: str) -> tuple[int, dict[str, Any]]:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.used or code.client_id != client_id:
            return 400, {"error": "invalid_grant", "error_description": "bad code"}
        if form.get("redirect_uri") != code.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri differs"}
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE check failed"}
        code.used = True
        refresh = self._new_refresh(code.user, client_id, code.scope)
        return 200, self._answer(code.user, client_id, code.scope, refresh)

    def _device_grant(self, form: dict[str, str], client_id: str) -> tuple[int, dict[str, Any]]:
        device = self._devices.get(form.get("device_code", ""))
        if device is None or device.used or device.client_id != client_id:
            return 400, {"error": "expired_token"}
        if device.user is None:
            return 400, {"error": "authorization_pending"}
        device.used = True
        refresh = self._new_refresh(device.user, client_id, device.scope)
        return 200, self._answer(device.user, client_id, device.scope, refresh)

    def device_authorization(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id = form.get("client_id", "")
        if client_id not in self.clients:
            return 400, {"error": "invalid_client"}
        with self._lock:
            device_code = self._token("dc")
            user_code = secrets.token_hex(4).upper()
            self._devices[device_code] = _Device(client_id, form.get("scope", ""), user_code)
        verification = f"{self.base_url}/devicelogin"
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification,
            "expires_in": 600,
            "interval": 1,
            "message": f"To sign in, open {verification} and enter the code {user_code} "
            "to authenticate.",
        }

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """Grant the request at once; return (status, Location or error text)."""
        client_id, redirect = query.get("client_id", ""), query.get("redirect_uri", "")
        if client_id not in self.clients or not redirect.startswith("http://127.0.0.1:"):
            return 400, "unknown client or redirect_uri"
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return 400, "response_type=code with PKCE S256 expected"
        with self._lock:
            code = self._token("code")
            self._codes[code] = _Code(
                client_id,
                query.get("scope", ""),
                redirect,
                query.get("code_challenge", ""),
                self.consent_user,
            )
        return 302, f"{redirect}?{urlencode({'code': code, 'state': query.get('state', '')})}"

    def introspect(self, form: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self.introspections += 1
            record = self._access.get(form.get("token", ""))
            if record is None or not record.alive or record.expires_at <= time.time():
                return {"active": False}
            self.introspected_left_s.append(record.expires_at - time.time())
            return {
                "active": True,
                "username": record.user,
                "scope": record.scope,
                "client_id": record.client_id,
                "token_type": "Bearer",
                "exp": int(record.expires_at),
            }

    # ---- helpers (under the lock) --------------------------------------------------

    def _token(self, kind: str) -> str:
        token = f"{kind}-{secrets.token_urlsafe(24)}"
        if kind in ("at", "rt"):
            self._issued.append(token)
        return token

    def _new_refresh(self, user: str, client_id: str, scope: str) -> str:
        token = self._token("rt")
        self._refresh[token] = _Refresh(user, client_id, scope)
        return token

    def _answer(self, user: str, client_id: str, scope: str, refresh: str | None) -> dict[str, Any]:
        access = self._token("at")
        self._access[access] = _Access(user, client_id, scope, time.time() + self.access_lifetime_s)
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": int(self.access_lifetime_s),
            "scope": scope,
        }
        if refresh is not None:
            answer["refresh_token"] = refresh
        return answer


class _TlsServer(LoopbackTlsServer):
    def __init__(self, context: ssl.SSLContext, oauth: OAuthServer) -> None:
        self.oauth = oauth
        super().__init__(context, _Handler, "oauth server")


class _Handler(LoopbackHandler):
    server: _TlsServer

    def log_message(self, format: str, *args: Any) -> None:
        # never the request line: an authorization redirect carries a code
        logger.debug("oauth server: %s %s", self.command, urlsplit(self.path).path)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        oauth = self.server.oauth
        if parts.path.endswith("/v2.0/.well-known/openid-configuration"):
            tenant = parts.path.strip("/").split("/")[0]
            self._json(200, oauth.openid_configuration(tenant))
        elif parts.path.endswith("/authorize"):
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            status, where = oauth.authorize(query)
            if status == 302:
                self._send(302, b"", "text/plain", {"Location": where})
            else:
                self._send(status, where.encode(), "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self._send(411, b"bad length\n", "text/plain")
            return
        raw = self.rfile.read(int(length)).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        path = urlsplit(self.path).path
        oauth = self.server.oauth
        if path.endswith("/token"):
            status, answer = oauth.token(form, self.headers.get("Authorization"))
            retry_after = answer.pop("__retry_after", None)
            extra = {"Retry-After": str(retry_after)} if retry_after else None
            if status >= 500:
                self._send(status, b"<html>unavailable</html>", "text/html", extra)
            else:
                self._json(status, answer, extra)
        elif path.endswith("/devicecode"):
            self._json(*oauth.device_authorization(form))
        elif path == "/introspect":
            self._json(200, oauth.introspect(form))
        else:
            self._send(404, b"not found\n", "text/plain")

    def _json(
        self, status: int, answer: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        extra = {"Cache-Control": "no-store", **(headers or {})}
        self._send(status, json.dumps(answer).encode(), "application/json", extra)
