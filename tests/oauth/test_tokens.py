"""The token source's rules, against the real local OAuth2 server (the clock is ours).

Reuse until a third of the lifetime is left, keep rotated refresh tokens, never ask
again for a refused grant until its inputs change, back off on failures that pass, and
never exceed the bound on token requests.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from inbox_poller.config import load_config
from inbox_poller.errors import TokenError, TokenRefused
from inbox_poller.oauth.provider import build_token_source
from inbox_poller.oauth.tokens import MAX_REQUESTS_PER_MINUTE, PERMANENT_RETRY_S, TokenSource
from inbox_poller.sandbox.demo import write_secret
from inbox_poller.sandbox.oauth.server import OAuthServer
from tests.oauth.test_login import CONFIG


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(oauth_server: OAuthServer) -> OAuthServer:
    oauth_server.reset()
    return oauth_server


def _source(
    root: Path, server: OAuthServer, clock: Clock, *, grant: str = "refresh_token", ca: bool = True
) -> tuple[TokenSource, str]:
    client = f"app-{uuid.uuid4().hex[:8]}"
    server.add_client(client, "the-secret")
    write_secret(root / "client-secret", "the-secret")
    lines = [
        'provider = "generic"',
        f'grant = "{grant}"',
        f'client_id = "{client}"',
        'client_secret_file = "client-secret"',
        f'token_url = "{server.token_url}"',
    ]
    if grant == "refresh_token":
        write_secret(root / "refresh-token", server.issue_refresh_token("box", client))
        lines.append('refresh_token_file = "refresh-token"')
    text = CONFIG.format(oauth2="\n".join(lines), ca=server.ca_file)
    if not ca:
        text = text.replace(f'ca_file = "{server.ca_file}"', "")
    (root / "config.toml").write_text(text)
    return build_token_source(load_config(root / "config.toml"), clock=clock), client


def test_a_token_is_reused_until_a_third_of_its_lifetime_is_left(
    tmp_path: Path, server: OAuthServer
) -> None:
    server.access_lifetime_s = 30
    clock = Clock()
    tokens, _ = _source(tmp_path, server, clock)
    since = server.mark()
    first = tokens.access_token()
    clock.now += 19  # 11 s left: more than the margin (10 s)
    assert tokens.access_token() == first
    clock.now += 2  # 9 s left
    second = tokens.access_token()
    assert second != first
    assert len(server.token_requests(since)) == 2


def test_a_rotated_refresh_token_is_kept_before_the_access_token_is_used(
    tmp_path: Path, server: OAuthServer
) -> None:
    server.rotate_refresh_tokens = True
    tokens, _ = _source(tmp_path, server, Clock())
    configured = (tmp_path / "refresh-token").read_text().strip()
    tokens.access_token()
    kept = (tmp_path / "state" / "oauth2-refresh-token.json").read_text()
    assert configured not in server.live_refresh_tokens("box")
    assert any(token in kept for token in server.live_refresh_tokens("box"))


def test_a_refused_grant_is_not_asked_again_until_its_input_changes(
    tmp_path: Path, server: OAuthServer
) -> None:
    clock = Clock()
    tokens, client = _source(tmp_path, server, clock)
    server.revoke((tmp_path / "refresh-token").read_text().strip())
    since = server.mark()
    with pytest.raises(TokenRefused, match="run `inbox-poller auth login`"):
        tokens.access_token()
    for _ in range(5):
        clock.now += 30
        with pytest.raises(TokenRefused):
            tokens.access_token()
    assert len(server.token_requests(since)) == 1
    clock.now += PERMANENT_RETRY_S  # an unchanged grant is asked again, rarely
    with pytest.raises(TokenRefused):
        tokens.access_token()
    assert len(server.token_requests(since)) == 2
    # a person puts a new refresh token in place: the very next call uses it
    write_secret(tmp_path / "refresh-token", server.issue_refresh_token("box", client))
    clock.now += 1
    assert tokens.access_token()
    assert len(server.token_requests(since)) == 3


def test_a_wrong_client_secret_names_where_the_secret_goes(
    tmp_path: Path, server: OAuthServer
) -> None:
    tokens, _ = _source(tmp_path, server, Clock(), grant="client_credentials")
    write_secret(tmp_path / "client-secret", "an outdated secret")
    with pytest.raises(TokenRefused, match=r"client secret refused: put .*client-secret"):
        tokens.access_token()
    write_secret(tmp_path / "client-secret", "the-secret")  # fixed: tried again at once
    assert tokens.access_token()


def test_a_failure_that_passes_backs_off_and_then_works(
    tmp_path: Path, server: OAuthServer
) -> None:
    clock = Clock()
    tokens, _ = _source(tmp_path, server, clock, grant="client_credentials")
    server.fail_next(1, status=503)
    since = server.mark()
    with pytest.raises(TokenError, match="HTTP 503") as failed:
        tokens.access_token()
    assert not isinstance(failed.value, TokenRefused)
    with pytest.raises(TokenError, match="next token request in 2s"):
        tokens.access_token()  # held back: no request
    assert len(server.token_requests(since)) == 1
    clock.now += 2
    assert tokens.access_token()
    assert len(server.token_requests(since)) == 2


def test_while_the_endpoint_fails_a_token_with_time_left_is_still_used(
    tmp_path: Path, server: OAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.access_lifetime_s = 300
    clock = Clock()
    tokens, _ = _source(tmp_path, server, clock, grant="client_credentials")
    first = tokens.access_token()
    clock.now += 201  # 99 s left: due for a refresh (margin 100 s), still usable
    server.fail_next(1, status=502)
    with caplog.at_level(logging.WARNING, logger="inbox_poller.oauth"):
        assert tokens.access_token() == first
    assert "using the current access token meanwhile" in caplog.text
    assert first not in caplog.text


def test_token_requests_are_bounded_whatever_the_callers_do(
    tmp_path: Path, server: OAuthServer
) -> None:
    server.access_lifetime_s = 1  # every call would need a new token
    clock = Clock()
    tokens, _ = _source(tmp_path, server, clock, grant="client_credentials")
    since = server.mark()
    held = 0
    for _ in range(30):
        clock.now += 1
        try:
            tokens.access_token()
        except TokenError:
            held += 1
    assert len(server.token_requests(since)) <= MAX_REQUESTS_PER_MINUTE
    assert held == 30 - len(server.token_requests(since))


def test_an_untrusted_token_endpoint_says_to_set_ca_file(
    tmp_path: Path, server: OAuthServer
) -> None:
    tokens, _ = _source(tmp_path, server, Clock(), grant="client_credentials", ca=False)
    with pytest.raises(TokenRefused, match=r"imap\.oauth2\.ca_file"):
        tokens.access_token()
