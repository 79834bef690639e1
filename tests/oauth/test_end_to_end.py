"""The whole loop over an OAuth2 login: an OAuth2-only Dovecot and a local token server.

``run --once`` and ``check`` for each grant, provider library and SASL mechanism
(issue 10's first "Done when"); the daemon across access-token lifetimes is in
``test_daemon.py``.
"""

from __future__ import annotations

import pytest

from inbox_poller.errors import MailboxLoginError
from inbox_poller.wiring import build_mailbox
from tests.plugins.loop import LoopEnv
from tests.plugins.oauth import OAuthSetup, tokens_in

CASES = [
    # (grant, provider, mechanism, the mechanism the login must use)
    ("refresh_token", "generic", "xoauth2", "XOAUTH2"),
    ("refresh_token", "generic", "auto", "OAUTHBEARER"),
    ("refresh_token", "microsoft", "oauthbearer", "OAUTHBEARER"),
    ("client_credentials", "microsoft", "xoauth2", "XOAUTH2"),
    ("client_credentials", "generic", "oauthbearer", "OAUTHBEARER"),
    ("service_account", "google", "auto", "OAUTHBEARER"),
    ("refresh_token", "google", "xoauth2", "XOAUTH2"),
]


@pytest.mark.dovecot
@pytest.mark.parametrize(("grant", "provider", "mechanism", "used"), CASES)
def test_run_once_and_check_log_in_with_oauth2(
    oauth_loop_env: LoopEnv,
    oauth: OAuthSetup,
    grant: str,
    provider: str,
    mechanism: str,
    used: str,
) -> None:
    env = oauth_loop_env
    oauth.configure(env, grant, provider=provider, extra=f'mechanism = "{mechanism}"\n')
    since = oauth.server.mark()

    check = env.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ok   oauth2: got an access token from https://127.0.0.1:" in check.stdout
    assert f"logged in with {used} (OAuth2)" in check.stdout

    job_id = env.submit()
    run = env.cli("run", "--once")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"archived job {job_id}" in run.stdout
    assert [entry["job_id"] for entry in env.manifest()] == [job_id]
    # one token per process: check, run --once (the password is gone from the config)
    assert len(oauth.server.token_requests(since)) == 2
    leaked = tokens_in(check.stdout + check.stderr + run.stdout + run.stderr, oauth.server)
    assert leaked == [], "a token reached the output"


@pytest.mark.dovecot
def test_a_password_login_is_refused_by_the_oauth2_only_server(
    oauth_loop_env: LoopEnv,
) -> None:
    # the server of these tests really is OAuth2-only: the old configuration fails
    check = oauth_loop_env.cli("check")
    assert check.returncode == 1
    assert "FAIL imap:" in check.stdout


@pytest.mark.dovecot
def test_a_token_the_imap_server_refuses_is_replaced_at_the_next_login(
    oauth_loop_env: LoopEnv, oauth: OAuthSetup
) -> None:
    env = oauth_loop_env
    oauth.configure(env, "client_credentials", provider="generic")
    mailbox = build_mailbox(env.config())
    since = oauth.server.mark()
    mailbox.open()
    mailbox.close()
    oauth.server.revoke_access_tokens(oauth.user)  # the cached token dies early
    with pytest.raises(MailboxLoginError) as refused:
        mailbox.open()
    message = str(refused.value)
    assert "XOAUTH2 login as 'inbox-poller' refused" in message or "OAUTHBEARER" in message
    assert "server status" in message
    assert tokens_in(message, oauth.server) == []
    mailbox.open()  # a new token, not the refused one
    mailbox.close()
    assert len(oauth.server.token_requests(since)) == 2
