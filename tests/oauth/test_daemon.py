"""The daemon on an OAuth2 login, as a real process, across many access-token lifetimes.

Access tokens live 20 s here, refresh tokens rotate (the old one is refused from then
on), and the OAuth2-only Dovecot is restarted now and then, dropping the session as a
provider does when a token expires. The daemon must keep working, ask the token
endpoint only when a login needs a token (never per poll), survive its own restart on
the rotated token, turn a revoked grant into one clear line and an unhealthy status
without hammering the endpoint, and recover by itself once a new refresh token is put
in place. No token may ever reach its log (issue 10's "Done when").
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest

from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportState
from inbox_poller.sandbox.demo import write_secret
from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.plugins.daemon import DaemonProcess, NotifySocket
from tests.plugins.loop import LoopEnv
from tests.plugins.oauth import OAuthSetup, tokens_in

pytestmark = pytest.mark.dovecot

LIFETIME_S = 20.0
POLL_S = 5.0


def _state(env: LoopEnv, job_id: str) -> ExportState | None:
    with Store(env.root / "state" / "state.db") as store:
        export = store.export_by_job_id(job_id)
    return export.state if export else None


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> float:
    """Wait for *condition*; return how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _more_logins(oauth: OAuthSetup, seen: int) -> Callable[[], bool]:
    return lambda: oauth.server.introspections > seen


def _configure(
    env: LoopEnv,
    oauth: OAuthSetup,
    grant: str = "refresh_token",
    provider: str = "generic",
    mechanism: str = "auto",
) -> None:
    oauth.server.access_lifetime_s = LIFETIME_S
    oauth.server.rotate_refresh_tokens = True
    text = env.config_path.read_text(encoding="utf-8")
    env.config_path.write_text(
        text.replace(
            "timeout_s = 10\n\n[download]", "timeout_s = 5\npoll_interval = 5\n\n[download]"
        ),
        encoding="utf-8",
    )
    oauth.configure(env, grant, provider=provider, extra=f'mechanism = "{mechanism}"\n')


def _start(
    env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess], *args: str
) -> DaemonProcess:
    daemon = DaemonProcess(env, notify, *args)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m, timeout_s=30)
    return daemon


def _archive_one(env: LoopEnv, stat: str) -> str:
    job_id = env.submit(stat)
    _wait(lambda: _state(env, job_id) is ExportState.ACKNOWLEDGED, f"job {job_id} acknowledged")
    return job_id


@pytest.mark.parametrize(
    ("grant", "provider", "mechanism"),
    [
        # refresh_token over OAUTHBEARER ("auto") is the many-lifetimes test below
        ("refresh_token", "generic", "xoauth2"),
        ("client_credentials", "microsoft", "xoauth2"),
        ("client_credentials", "generic", "oauthbearer"),
    ],
)
def test_the_daemon_archives_with_each_grant_and_mechanism(
    oauth_loop_env: LoopEnv,
    oauth: OAuthSetup,
    oauth_dovecot: DovecotServer,
    notify: NotifySocket,
    daemons: list[DaemonProcess],
    grant: str,
    provider: str,
    mechanism: str,
) -> None:
    env = oauth_loop_env
    _configure(env, oauth, grant, provider, mechanism)
    since = oauth.server.mark()
    daemon = _start(env, notify, daemons)
    first = _archive_one(env, "600")
    oauth_dovecot.restart()  # the session drops; the daemon logs in again
    second = _archive_one(env, "601")
    assert [entry["job_id"] for entry in env.manifest()] == [first, second]
    # the reconnect reused the token it had (20 s lifetime), or at most got one more
    assert 1 <= len(oauth.server.token_requests(since)) <= 2
    logs = daemon.log()
    assert "Traceback" not in logs
    assert tokens_in(logs, oauth.server, oauth.secret) == []


@pytest.mark.timeout(300)  # five 20 s token lifetimes (about 100 s alone): a hang guard
def test_many_token_lifetimes_with_rotation_and_a_restart(
    oauth_loop_env: LoopEnv,
    oauth: OAuthSetup,
    oauth_dovecot: DovecotServer,
    notify: NotifySocket,
    daemons: list[DaemonProcess],
) -> None:
    env = oauth_loop_env
    _configure(env, oauth)
    configured = (env.root / "secrets" / "refresh-token").read_text().strip()
    since = oauth.server.mark()
    introspected = len(oauth.server.introspected_left_s)
    started = time.monotonic()
    daemon = _start(env, notify, daemons, "-v", "--log-format", "json")
    jobs, sessions = [], 1
    for round_number in range(5):
        jobs.append(_archive_one(env, f"70{round_number}"))
        time.sleep(LIFETIME_S * 0.5)
        # the provider drops the session (a token expired); the daemon logs in again,
        # with a new token: the old one has less than a third of its life left
        oauth_dovecot.restart()
        sessions += 1
        # dropped again at once: the token just got is reused, not replaced
        # (a loaded machine may take a few back-off rounds: the wait is generous, not a bound)
        _wait(_more_logins(oauth, oauth.server.introspections), "a new login", 90)
        # the watcher starts its back-off afresh once a session survives one wait (at most
        # a poll interval); dropping it sooner would let the back-off climb round by round
        time.sleep(POLL_S + 1.0)
        oauth_dovecot.restart()
        sessions += 1
        if round_number == 2:
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(20) == 0
            # the configured token was rotated away at the first refresh: the server
            # refuses it now, so the restarted daemon can only work from the kept chain
            assert configured not in oauth.server.live_refresh_tokens(oauth.user)
            daemon = _start(env, notify, daemons, "-v", "--log-format", "json")
            sessions += 1
    jobs.append(_archive_one(env, "799"))
    elapsed = time.monotonic() - started
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(20) == 0

    # nothing lost, nothing twice
    assert sorted(entry["job_id"] for entry in env.manifest()) == sorted(jobs)
    assert all(_state(env, job) is ExportState.ACKNOWLEDGED for job in jobs)
    # tokens: only when a login needs one, never per poll; each login had time left
    requests = oauth.server.token_requests(since)
    assert all(r.status == 200 for r in requests)
    lifetimes = elapsed / LIFETIME_S
    assert lifetimes > 4
    # about one per lifetime that saw a login: fewer than the sessions (a token with time
    # left is reused), never one per poll
    assert 3 <= len(requests) < sessions, (len(requests), sessions)
    left = oauth.server.introspected_left_s[introspected:]
    assert min(left) > LIFETIME_S / 3 - 0.5, left
    chain = json.loads((env.root / "state" / "oauth2-refresh-token.json").read_text())
    assert chain["rotations"] == len(requests)
    assert (env.root / "state" / "oauth2-refresh-token.json").stat().st_mode & 0o777 == 0o600
    print(
        f"\n{elapsed:.0f}s, {lifetimes:.1f} access-token lifetimes, {sessions} sessions, "
        f"{len(requests)} token requests, {len(jobs)} exports"
    )
    logs = "".join(d.log() for d in daemons)
    assert tokens_in(logs, oauth.server, oauth.secret) == []
    assert "Traceback" not in logs


def test_a_revoked_grant_is_one_clear_line_an_unhealthy_status_and_heals_itself(
    oauth_loop_env: LoopEnv,
    oauth: OAuthSetup,
    oauth_dovecot: DovecotServer,
    notify: NotifySocket,
    daemons: list[DaemonProcess],
) -> None:
    env = oauth_loop_env
    _configure(env, oauth)
    daemon = _start(env, notify, daemons, "-v")
    _archive_one(env, "800")

    since = oauth.server.mark()
    oauth.server.revoke_all(oauth.user)  # consent withdrawn: every token of the user dies
    revoked_at = time.monotonic()
    oauth_dovecot.restart()

    def unhealthy() -> bool:
        status = env.cli("status")
        return status.returncode == 1 and "inbox-poller auth login" in status.stdout

    took = _wait(unhealthy, "an unhealthy status")
    print(f"\nstatus unhealthy {took:.1f}s after the session dropped")
    assert took < POLL_S + 5, took  # within one poll interval (plus a status round trip)
    notify.wait_for(lambda m: "UNHEALTHY" in m and "auth login" in m)
    status = env.cli("status")
    problems = [line for line in status.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, status.stdout
    assert "refresh token refused (expired, revoked or replaced)" in problems[0]
    assert "secrets/refresh-token" in problems[0]

    # it keeps running and does not hammer the token endpoint
    time.sleep(20)
    assert daemon.process.poll() is None
    held = time.monotonic() - revoked_at
    refused = oauth.server.token_requests(since)
    assert len(refused) <= 2, refused
    assert sum(r.error == "invalid_grant" for r in refused) == 1
    print(f"\n{len(refused)} token request(s) in {held:.0f}s after the revocation")

    # a person runs `auth login` and puts the new refresh token in place
    write_secret(
        env.root / "secrets" / "refresh-token",
        oauth.server.issue_refresh_token(oauth.user, oauth.public_client),
    )
    healed = _wait(lambda: env.cli("status").returncode == 0, "a healthy status")
    print(f"healthy again {healed:.1f}s after the new refresh token")
    assert healed < POLL_S * 3, healed
    _archive_one(env, "801")

    logs = daemon.log()
    said = [
        line
        for line in logs.splitlines()
        # text lines are "<time> <LEVEL> <logger>: …"
        if "inbox-poller auth login" in line and " DEBUG " not in line
    ]
    assert len(said) == 1, "the refusal is said once (above DEBUG):\n" + "\n".join(said)
    assert "Traceback" not in logs
    assert tokens_in(logs, oauth.server, oauth.secret) == []
