"""``inbox-poller auth login``: the one interactive consent that yields a refresh token.

* Microsoft: the device-code flow (RFC 8628) through msal. The person opens the
  verification URL on any device and enters the code printed here.
* Google and any other provider: the authorization-code flow with PKCE (RFC 7636)
  through authlib, redirected to a listener on ``http://127.0.0.1:<port>/`` (RFC 8252
  §7.3); the person opens the printed URL. Google is asked for ``access_type=offline``
  and ``prompt=consent`` so that it hands out a refresh token.

The refresh token is written (temporary file, fsync, rename, mode 0600) to ``--output``,
or to ``refresh_token_file`` when that is an ordinary file of ours: the daemon notices
the new content at its next login and starts a new chain with it. It is never printed,
and the authorization code never leaves the listener.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from inbox_poller.config import MICROSOFT_TOKEN_PATH, Config, OAuth2Config
from inbox_poller.errors import TokenError, TokenRefused, UsageError
from inbox_poller.oauth.chain import write_private
from inbox_poller.oauth.grants import MSAL_RESERVED_SCOPES
from inbox_poller.oauth.http import Exchange, prepare_session

LOGIN_TIMEOUT_S = 600.0
"""How long the person has to finish the consent."""
DONE_PAGE = (
    b"<!doctype html><title>inbox-poller</title><p>Signed in. You can close this window "
    b"and return to the terminal.</p>"
)


def refresh_token_destination(config: Config, output: str | None) -> Path:
    """Where the new refresh token goes: *output*, or ``refresh_token_file`` when it is an
    ordinary file of ours (not a systemd credential).

    :raises UsageError: neither is possible; says what to give instead.
    """
    oauth2 = config.imap.oauth2
    if oauth2 is None:
        raise UsageError('auth login needs imap.auth = "oauth2" and an [imap.oauth2] table')
    if oauth2.grant != "refresh_token":
        raise UsageError(
            f'grant = "{oauth2.grant}" needs no sign-in: run `inbox-poller check` to test it'
        )
    if output is not None:
        return Path(output).expanduser().absolute()
    assert config.oauth2 is not None
    path = config.oauth2.refresh_token.path()
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None or (credentials and path.is_relative_to(credentials)):
        where = config.oauth2.refresh_token.source()
        raise UsageError(
            f"the refresh token is read from {where}, which auth login cannot write: give "
            "--output FILE, then put that file's content there (docs/providers.md)"
        )
    return path


def login(config: Config, *, say: Callable[[str], None], timeout_s: float = LOGIN_TIMEOUT_S) -> str:
    """Run the provider's interactive flow; return the refresh token it yields.

    :raises TokenRefused: the provider refused (or the person did not finish in time).
    :raises TokenError: the provider could not be reached.
    """
    oauth2, secrets = config.imap.oauth2, config.oauth2
    assert oauth2 is not None and secrets is not None
    exchange = Exchange()

    def session(cls: Any = requests.Session, **kwargs: Any) -> requests.Session:
        return prepare_session(
            cls(**kwargs), ca_file=secrets.ca_file, timeout_s=oauth2.timeout_s, exchange=exchange
        )

    secret = secrets.client_secret.read() if secrets.client_secret.configured else None
    try:
        if oauth2.provider == "microsoft":
            return _device_code(oauth2, session(), say, timeout_s)
        return _authorization_code(oauth2, secret, session, say, timeout_s)
    except requests.RequestException as exc:
        raise TokenError(f"OAuth2 sign-in failed: {type(exc).__name__}") from None


def _device_code(
    oauth2: OAuth2Config, session: requests.Session, say: Callable[[str], None], timeout_s: float
) -> str:
    import msal

    token_url = oauth2.effective_token_url
    assert token_url is not None and oauth2.client_id is not None
    kwargs: dict[str, Any] = {"http_client": session, "timeout": oauth2.timeout_s}
    if oauth2.token_url is not None:
        kwargs.update(instance_discovery=False, validate_authority=False)
    try:
        app = msal.PublicClientApplication(
            oauth2.client_id, authority=token_url[: -len(MICROSOFT_TOKEN_PATH)], **kwargs
        )
    except ValueError:
        raise TokenError(f"OAuth2 sign-in: no OpenID configuration for {token_url}") from None
    scopes = [s for s in oauth2.effective_scope.split() if s not in MSAL_RESERVED_SCOPES]
    flow = app.initiate_device_flow(scopes=scopes)
    if "user_code" not in flow:
        raise TokenRefused(f"OAuth2 sign-in refused: {_error(flow)}")
    say(str(flow.get("message") or f"Open {flow['verification_uri']}, enter {flow['user_code']}"))
    flow["expires_at"] = min(float(flow.get("expires_at", 0) or 0), time.time() + timeout_s)
    result = app.acquire_token_by_device_flow(flow)
    refresh = result.get("refresh_token") if isinstance(result, dict) else None
    if not isinstance(refresh, str) or not refresh:
        raise TokenRefused(f"OAuth2 sign-in did not finish: {_error(result)}")
    return refresh


@dataclass
class _Redirect:
    query: dict[str, str] | None = None


def _authorization_code(
    oauth2: OAuth2Config,
    secret: str | None,
    session: Callable[..., requests.Session],
    say: Callable[[str], None],
    timeout_s: float,
) -> str:
    from authlib.common.security import generate_token
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.requests_client import OAuth2Session

    authorization_url = oauth2.effective_authorization_url
    token_url = oauth2.effective_token_url
    if authorization_url is None or token_url is None:
        raise UsageError("auth login needs imap.oauth2.authorization_url for this provider")
    redirect = _Redirect()
    listener = _listen(redirect)
    try:
        redirect_uri = f"http://127.0.0.1:{listener.server_address[1]}/"
        client: Any = session(
            OAuth2Session,
            client_id=oauth2.client_id,
            client_secret=secret,
            scope=oauth2.effective_scope or None,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post" if secret else "none",
        )
        verifier = generate_token(64)
        extra = (
            {"access_type": "offline", "prompt": "consent"} if oauth2.provider == "google" else {}
        )
        url, state = client.create_authorization_url(
            authorization_url, code_verifier=verifier, **extra
        )
        say(f"Open this URL in a browser on this machine and sign in as the mailbox:\n{url}")
        thread = threading.Thread(target=listener.serve_forever, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout_s
        while redirect.query is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        listener.shutdown()
        listener.server_close()
    query = redirect.query
    if query is None:
        raise TokenRefused(f"OAuth2 sign-in did not finish within {timeout_s:.0f}s")
    if query.get("state") != state:
        raise TokenRefused("OAuth2 sign-in refused: the redirect's state does not match")
    if "code" not in query:
        raise TokenRefused(f"OAuth2 sign-in refused: {query.get('error', 'no code returned')}")
    try:
        token = client.fetch_token(token_url, code=query["code"], code_verifier=verifier)
    except OAuthError as exc:
        raise TokenRefused(f"OAuth2 sign-in refused: {exc.error}") from None
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise TokenRefused(
            "OAuth2 sign-in gave no refresh token (ask for offline access in the scope)"
        )
    return refresh


def _listen(redirect: _Redirect) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if "code" in query or "error" in query:
                redirect.query = query
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(DONE_PAGE)))
            self.end_headers()
            self.wfile.write(DONE_PAGE)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the request line holds the authorization code

    return HTTPServer(("127.0.0.1", 0), Handler)


def _error(result: Any) -> str:
    if isinstance(result, dict):
        error = result.get("error") or "no answer"
        description = result.get("error_description")
        return f"{error}: {description}" if isinstance(description, str) else str(error)
    return "no answer"


def save_refresh_token(destination: Path, token: str) -> None:
    """Write *token* to *destination* atomically, mode 0600."""
    write_private(destination, (token + "\n").encode("utf-8"))
