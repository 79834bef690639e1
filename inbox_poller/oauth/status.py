"""``inbox-poller auth status``: which grant, the access token's expiry, the chain's
rotations and the last failure, from the state directory; never a token."""

from __future__ import annotations

from typing import Any

from inbox_poller.config import Config
from inbox_poller.oauth.chain import CHAIN_FILE, STATUS_FILE, RefreshChain, read_json


def auth_status(config: Config) -> dict[str, Any]:
    """What the daemon (or the last command) recorded about OAuth2, without a request."""
    oauth2, secrets = config.imap.oauth2, config.oauth2
    assert oauth2 is not None and secrets is not None
    recorded = read_json(config.state_dir / STATUS_FILE) or {}
    report: dict[str, Any] = {
        "provider": oauth2.provider,
        "grant": oauth2.grant,
        "client_id": oauth2.client_id,
        "token_url": oauth2.effective_token_url or recorded.get("token_url"),
        "scope": oauth2.effective_scope,
        "mechanism": oauth2.mechanism,
        "access_token_obtained_at": recorded.get("access_token_obtained_at"),
        "access_token_expires_at": recorded.get("access_token_expires_at"),
        "last_failure": recorded.get("failure"),
        "last_failure_permanent": recorded.get("failure_permanent"),
    }
    if oauth2.grant == "refresh_token":
        state = RefreshChain(secrets.refresh_token.read, config.state_dir).state()
        report.update(
            refresh_token_source=secrets.refresh_token.source(),
            refresh_token_rotated=state.rotated,
            rotations=state.rotations,
            rotated_at=state.rotated_at,
            chain_file=str(config.state_dir / CHAIN_FILE) if state.rotated else None,
        )
    return report


def format_auth_status(report: dict[str, Any]) -> str:
    lines = [
        f"grant: {report['provider']} {report['grant']}"
        + (f" (client {report['client_id']})" if report.get("client_id") else ""),
        f"token endpoint: {report['token_url']}",
        f"scope: {report['scope'] or '(none)'}; mechanism: {report['mechanism']}",
    ]
    if report["access_token_expires_at"]:
        lines.append(
            f"access token: obtained {report['access_token_obtained_at']}, expires "
            f"{report['access_token_expires_at']} (held in memory only)"
        )
    else:
        lines.append("access token: none obtained yet")
    if report["grant"] == "refresh_token":
        if report["refresh_token_rotated"]:
            lines.append(
                f"refresh token: rotated {report['rotations']} time(s), last at "
                f"{report['rotated_at']}; the newest is kept in {report['chain_file']}"
            )
        else:
            lines.append(f"refresh token: as configured ({report['refresh_token_source']})")
    if report["last_failure"]:
        kind = "needs a person" if report["last_failure_permanent"] else "passing"
        lines.append(f"last failure ({kind}): {report['last_failure']}")
    return "\n".join(lines)
