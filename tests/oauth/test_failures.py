"""Which token-endpoint failures need a person (table-driven; pure)."""

from __future__ import annotations

import pytest

from inbox_poller.oauth.failures import GrantFailed, Remedies, classify

REFRESH = Remedies("refresh_token", refresh_token_source="file /etc/ip/refresh-token")
APP = Remedies("client_credentials", client_secret_source="file /etc/ip/client-secret")
SA = Remedies("service_account", username="box@example.com")

CASES = [
    # (failure, remedies, permanent, text the verdict must contain)
    (
        GrantFailed(status=400, error="invalid_grant"),
        REFRESH,
        True,
        "run `inbox-poller auth login`",
    ),
    (GrantFailed(status=400, error="invalid_grant"), REFRESH, True, "file /etc/ip/refresh-token"),
    (GrantFailed(status=401, error="invalid_client"), APP, True, "file /etc/ip/client-secret"),
    (GrantFailed(status=401), APP, True, "client secret refused"),
    (GrantFailed(status=400, error="unauthorized_client"), SA, True, "key refused"),
    (GrantFailed(status=400, error="invalid_grant"), SA, True, "domain-wide delegation"),
    (GrantFailed(status=400, error="consent_required"), APP, True, "an administrator"),
    (GrantFailed(status=400, error="interaction_required"), REFRESH, True, "auth login"),
    (GrantFailed(status=400, error="invalid_scope"), REFRESH, True, "imap.oauth2.scope"),
    (GrantFailed(status=400, error="invalid_request"), REFRESH, True, "check [imap.oauth2]"),
    (
        GrantFailed(transport="TLS certificate verification failed", untrusted=True),
        APP,
        True,
        "imap.oauth2.ca_file",
    ),
    (GrantFailed(status=503), REFRESH, False, "HTTP 503"),
    (GrantFailed(status=429, retry_after="30"), REFRESH, False, "HTTP 429"),
    (GrantFailed(status=400, error="temporarily_unavailable"), APP, False, "for now"),
    (GrantFailed(status=500, error="server_error"), APP, False, "server_error"),
    (GrantFailed(transport="no answer within 30.0s"), REFRESH, False, "no answer"),
    (GrantFailed(transport="connection failed"), REFRESH, False, "connection failed"),
    (GrantFailed(status=200, error="invalid_response"), REFRESH, False, "invalid_response"),
]


@pytest.mark.parametrize(("failure", "remedies", "permanent", "text"), CASES)
def test_classify(failure: GrantFailed, remedies: Remedies, permanent: bool, text: str) -> None:
    verdict = classify(failure, remedies, "https://login.example/token")
    assert verdict.permanent is permanent
    assert text in verdict.message
    assert "\n" not in verdict.message


def test_a_permanent_verdict_says_what_to_do_first() -> None:
    # systemd's STATUS= keeps 200 characters: the action must come before the details
    failure = GrantFailed(status=400, error="invalid_grant", description="x" * 300)
    message = classify(failure, REFRESH, "https://login.example/token").message
    assert message.index("auth login") < message.index("HTTP 400")
    assert message.index("auth login") < 100
