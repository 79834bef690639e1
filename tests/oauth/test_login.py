"""``inbox-poller auth login`` and ``auth status`` against the local OAuth2 server.

The person is played by the test: it reads what the command prints, approves the device
code or follows the authorization URL (the server consents at once and redirects to the
command's loopback listener), and the command writes the refresh token where the daemon
reads it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import requests

from inbox_poller.sandbox.demo import write_secret
from inbox_poller.sandbox.oauth.server import OAuthServer
from tests.plugins.loop import REPO_ROOT
from tests.plugins.oauth import TENANT, tokens_in

CONFIG = """\
[pinpointe]
username = "u"
usertoken_env = "UNUSED"
notify_email = "exports@inbox.example"

[imap]
host = "127.0.0.1"
username = "inbox-poller"
auth = "oauth2"

[imap.oauth2]
{oauth2}
ca_file = "{ca}"

[state]
path = "state/state.db"
"""


def _command(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_POLLER")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "inbox_poller", "-c", str(root / "config.toml"), *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _write(root: Path, server: OAuthServer, oauth2: str) -> None:
    (root / "config.toml").write_text(CONFIG.format(oauth2=oauth2, ca=server.ca_file))
    write_secret(root / "refresh-token", "an old refresh token, to be replaced")


def _read_until(process: subprocess.Popen[str], pattern: str) -> tuple[re.Match[str], str]:
    assert process.stdout is not None
    seen = ""
    for line in process.stdout:
        seen += line
        found = re.search(pattern, line)
        if found:
            return found, seen
    raise AssertionError(
        f"no {pattern!r} in {seen!r}; stderr: {process.stderr.read() if process.stderr else ''}"
    )


def test_microsoft_device_code_login_writes_the_refresh_token(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    oauth_server.reset()
    client = f"public-{uuid.uuid4().hex[:8]}"
    oauth_server.add_client(client)
    _write(
        tmp_path,
        oauth_server,
        f'provider = "microsoft"\nclient_id = "{client}"\nrefresh_token_file = "refresh-token"\n'
        f'token_url = "{oauth_server.microsoft_token_url(TENANT)}"',
    )
    process = _command(tmp_path, "auth", "login")
    found, shown = _read_until(process, r"enter the code (\w+)")
    oauth_server.approve_device(found.group(1))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out + err
    assert "refresh token written to" in out
    token = (tmp_path / "refresh-token").read_text().strip()
    assert token in oauth_server.live_refresh_tokens(oauth_server.consent_user)
    assert (tmp_path / "refresh-token").stat().st_mode & 0o777 == 0o600
    assert tokens_in(shown + out + err, oauth_server) == []


def test_pkce_login_through_the_loopback_redirect(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    oauth_server.reset()
    client = f"public-{uuid.uuid4().hex[:8]}"
    oauth_server.add_client(client)
    _write(
        tmp_path,
        oauth_server,
        f'provider = "generic"\nclient_id = "{client}"\nrefresh_token_file = "refresh-token"\n'
        f'token_url = "{oauth_server.token_url}"\n'
        f'authorization_url = "{oauth_server.authorization_url}"\nscope = "imap offline"',
    )
    process = _command(tmp_path, "auth", "login")
    found, shown = _read_until(process, r"^(https://\S+)$")
    url = found.group(1)
    assert "code_challenge_method=S256" in url and "redirect_uri=http%3A%2F%2F127.0.0.1" in url
    # the person's browser: the server consents and sends it to the loopback listener
    consent = requests.get(url, verify=str(oauth_server.ca_file), allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    landing = requests.get(consent.headers["Location"], timeout=10)
    assert landing.status_code == 200 and "Signed in" in landing.text
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out + err
    token = (tmp_path / "refresh-token").read_text().strip()
    assert token in oauth_server.live_refresh_tokens(oauth_server.consent_user)
    assert tokens_in(shown + out + err, oauth_server) == []

    status = _command(tmp_path, "auth", "status", "--json")
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    report = json.loads(out)
    assert report["grant"] == "refresh_token"
    assert report["refresh_token_rotated"] is False
    assert report["access_token_expires_at"] is None
    assert token not in out


def test_auth_login_refuses_a_credential_it_cannot_write(
    tmp_path: Path, oauth_server: OAuthServer
) -> None:
    _write(
        tmp_path,
        oauth_server,
        f'provider = "generic"\nclient_id = "x"\nrefresh_token_env = "REFRESH"\n'
        f'token_url = "{oauth_server.token_url}"',
    )
    _out, err = _command(tmp_path, "auth", "login").communicate(timeout=60)
    assert "give --output FILE" in err
    assert "Traceback" not in err
