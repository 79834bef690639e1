"""Fixtures for the OAuth2 login: a local OAuth2 server and an OAuth2-only Dovecot.

* ``oauth_server``: one :class:`OAuthServer` over https on loopback for the session
  (the OAuth2 Dovecot asks its introspection endpoint); reset before each test.
* ``oauth_dovecot``: one Dovecot for the session that takes XOAUTH2 and OAUTHBEARER only
  (``passdb oauth2``, ``introspection_mode = post``). Missing Dovecot: skipped on a
  laptop, a failure in CI.
* ``oauth``: per test, a public and a confidential client of its own, and helpers that
  write ``[imap.oauth2]`` into a test bed's config.
* ``oauth_loop_env``: ``loop_env`` on the OAuth2 Dovecot (the config still has a
  password until ``OAuthSetup.configure`` turns it into ``auth = "oauth2"``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inbox_poller.sandbox.demo import write_secret
from inbox_poller.sandbox.dovecot.config import DovecotOAuth2
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.oauth.keys import make_service_account
from inbox_poller.sandbox.oauth.server import OAuthServer
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from tests.plugins.dovecot import require_dovecot
from tests.plugins.loop import LoopEnv, prepare_loop_env

TENANT = "contoso.example"


@pytest.fixture(scope="session")
def oauth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServer]:
    server = OAuthServer(tmp_path_factory.mktemp("oauth-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_server: OAuthServer) -> Iterator[DovecotServer]:
    require_dovecot()
    server = DovecotServer(
        oauth2=DovecotOAuth2(
            oauth_server.introspection_url, oauth_server.ca_file, oauth_server.mint_access_token
        )
    )
    server.start()
    yield server
    server.cleanup()


@dataclass
class OAuthSetup:
    """One test's clients on the shared OAuth2 server, and how to configure them."""

    server: OAuthServer
    user: str
    public_client: str
    client: str
    secret: str
    service_account: str

    def configure(self, env: LoopEnv, grant: str, *, provider: str, extra: str = "") -> Path:
        """Turn *env*'s config into ``auth = "oauth2"`` with *grant* at *provider*.

        Writes the secrets the grant needs under ``env.root/secrets``; returns the
        refresh token file (which may not be used by the grant).
        """
        secrets_dir = env.root / "secrets"
        refresh_file = secrets_dir / "refresh-token"
        write_secret(secrets_dir / "client-secret", self.secret)
        lines = [
            f'provider = "{provider}"',
            f'grant = "{grant}"',
            f'ca_file = "{self.server.ca_file}"',
        ]
        if provider == "microsoft":
            lines += [
                f'tenant = "{TENANT}"',
                f'token_url = "{self.server.microsoft_token_url(TENANT)}"',
            ]
        else:
            lines.append(f'token_url = "{self.server.token_url}"')
        if grant == "refresh_token":
            client = self.public_client if provider != "google" else self.client
            write_secret(refresh_file, self.server.issue_refresh_token(self.user, client))
            lines += [f'client_id = "{client}"', 'refresh_token_file = "secrets/refresh-token"']
            if provider == "google":
                lines.append('client_secret_file = "secrets/client-secret"')
        elif grant == "client_credentials":
            lines += [
                f'client_id = "{self.client}"',
                'client_secret_file = "secrets/client-secret"',
            ]
        else:
            public = make_service_account(
                secrets_dir / "service-account.json", self.service_account, self.server.token_url
            )
            self.server.add_service_account(self.service_account, public, self.user)
            lines.append('service_account_file = "secrets/service-account.json"')
        text = env.config_path.read_text(encoding="utf-8")
        text = text.replace('password_file = "secrets/imap-password"', 'auth = "oauth2"')
        text += "\n[imap.oauth2]\n" + "\n".join(lines) + "\n" + extra
        env.config_path.write_text(text, encoding="utf-8")
        (secrets_dir / "imap-password").unlink(missing_ok=True)
        return refresh_file


@pytest.fixture
def oauth(oauth_server: OAuthServer, oauth_dovecot: DovecotServer) -> OAuthSetup:
    oauth_server.reset()
    tag = uuid.uuid4().hex[:8]
    setup = OAuthSetup(
        oauth_server,
        oauth_dovecot.user,
        f"public-{tag}",
        f"app-{tag}",
        f"client-secret-{uuid.uuid4().hex}",
        f"reader-{tag}@inbox-poller-test.iam.example",
    )
    oauth_server.add_client(setup.public_client)
    oauth_server.add_client(setup.client, setup.secret, mailbox=oauth_dovecot.user)
    return setup


@pytest.fixture
def oauth_loop_env(
    tmp_path: Path,
    oauth_dovecot: DovecotServer,
    oauth: OAuthSetup,
    pinpointe_sim: PinpointeSimulator,
) -> Iterator[LoopEnv]:
    """``loop_env`` on the OAuth2-only Dovecot, in a fresh folder."""
    folder = f"t-{uuid.uuid4().hex}"
    oauth_dovecot.create_folder(folder)
    env = prepare_loop_env(tmp_path, oauth_dovecot, folder, pinpointe_sim)

    def deliver(raw: bytes) -> None:
        oauth_dovecot.append(folder, raw)

    pinpointe_sim.deliver = deliver
    try:
        yield env
    finally:
        env.close()
        if oauth_dovecot.running:
            oauth_dovecot.delete_folder(env.processed)
            oauth_dovecot.delete_folder(folder)


def tokens_in(text: str, server: OAuthServer, *secrets: str) -> list[str]:
    """The issued tokens (and *secrets*) that appear in *text*: the log canary."""
    found = [token for token in [*server.issued_tokens(), *secrets] if token in text]
    # and anything shaped like one of the server's tokens, issued to anyone
    found += re.findall(r"\b(?:at|rt)-[A-Za-z0-9_-]{32}\b", text)
    return found
