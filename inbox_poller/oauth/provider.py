"""Which grant and library the configuration names, built into one ``TokenSource``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from inbox_poller.config import Config, OAuth2Config, Secret
from inbox_poller.oauth.chain import RefreshChain, digest
from inbox_poller.oauth.failures import Remedies
from inbox_poller.oauth.grants import GenericGrant, GoogleGrant, Grant, MicrosoftGrant
from inbox_poller.oauth.http import Exchange, prepare_session
from inbox_poller.oauth.tokens import TokenSource
from inbox_poller.ports import Metrics


def _reader(secret: Secret) -> Callable[[], str] | None:
    return secret.read if secret.configured else None


def build_token_source(
    config: Config, *, clock: Callable[[], float] | None = None, metrics: Metrics | None = None
) -> TokenSource:
    """The token source for ``[imap.oauth2]`` (which must be configured).

    Nothing is read or requested here: secrets are read at each token request, so a
    secret replaced on disk is used without a restart.
    """
    oauth2 = config.imap.oauth2
    secrets = config.oauth2
    assert oauth2 is not None and secrets is not None, 'imap.auth is not "oauth2"'
    exchange = Exchange()

    def make_session(cls: Any = requests.Session, **kwargs: Any) -> requests.Session:
        session: requests.Session = cls(**kwargs)
        return prepare_session(
            session, ca_file=secrets.ca_file, timeout_s=oauth2.timeout_s, exchange=exchange
        )

    client_secret = _reader(secrets.client_secret)
    grant = _grant(
        oauth2, config.imap.username, secrets.service_account, client_secret, make_session, exchange
    )
    chain = None
    if oauth2.grant == "refresh_token":
        chain = RefreshChain(secrets.refresh_token.read, config.state_dir)

    def inputs() -> str:
        parts = []
        for secret in secrets.secrets():
            if secret is secrets.refresh_token:
                continue  # the chain's fingerprint covers it
            try:
                parts.append(digest(secret.read()))
            except Exception:  # unreadable is a state too; the request will say why
                parts.append("unreadable")
        return "|".join(parts)

    remedies = Remedies(
        grant=oauth2.grant,
        refresh_token_source=secrets.refresh_token.source(),
        client_secret_source=secrets.client_secret.source() if client_secret else "",
        username=config.imap.username,
        scope=oauth2.effective_scope,
    )
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    return TokenSource(
        grant,
        remedies=remedies,
        exchange=exchange,
        chain=chain,
        inputs=inputs,
        state_dir=config.state_dir,
        describe=f"{oauth2.provider} {oauth2.grant}",
        metrics=metrics,
        **kwargs,
    )


def _grant(
    oauth2: OAuth2Config,
    username: str,
    service_account: Secret,
    client_secret: Callable[[], str] | None,
    make_session: Callable[..., requests.Session],
    exchange: Exchange,
) -> Grant:
    if oauth2.provider == "microsoft":
        return MicrosoftGrant(oauth2, client_secret, make_session(), exchange)
    if oauth2.provider == "google":
        return GoogleGrant(
            oauth2,
            username,
            client_secret=client_secret,
            service_account=_reader(service_account),
            session=make_session(),
            exchange=exchange,
        )
    return GenericGrant(oauth2, client_secret, make_session, exchange)
