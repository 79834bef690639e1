"""The URL policy's honest words: the host a client would connect to, user info shown.

A refused link is reported (log, ledger reason, ``inspect-email``) with the host a client
(browsers and urllib3, after the WHATWG URL Standard) would have connected to, and with
what ``urllib.parse`` sees when that differs (docs/reliability.md §4.1).
"""

from __future__ import annotations

import pytest

from inbox_poller.urlpolicy import (
    HostRule,
    UrlRefused,
    check_url,
    parse_host_rule,
    redact_url,
    view_url,
)

RULES: tuple[HostRule, ...] = (parse_host_rule("files.example"),)

# the exact tricky URLs: (url, what redact_url shows, what the refusal says)
TRICKS = [
    (
        "https://files.example\\@evil.example/x?sig=1",
        "https://files.example\\@evil.example/x?…",
        "backslashes (a client would connect to files.example; urllib.parse sees evil.example)",
    ),
    (
        "https://files.example@evil.example/a?sig=1",
        "https://<userinfo>@evil.example/a?…",
        "the URL carries user info (a client would connect to evil.example)",
    ),
    (
        "https://user:secret@files.example/a",
        "https://<userinfo>@files.example/a",
        "the URL carries user info (a client would connect to files.example)",
    ),
    (
        "https://files.example:443@evil.example/",
        "https://<userinfo>@evil.example/",
        "the URL carries user info (a client would connect to evil.example)",
    ),
    (
        "https://files.example%40evil.example/x",
        "https://files.example%40evil.example/x",
        "not a plain ASCII DNS name (it is percent-encoded: "
        "files.example%40evil.example reads files.example@evil.example)",
    ),
    (
        "https://bücher.example/x",
        "https://xn--bcher-kva.example/x",
        "not a plain ASCII DNS name (bücher.example, which a client would look up as "
        "xn--bcher-kva.example)",
    ),
    (  # a Cyrillic "і": looks like the allowed host, is not
        "https://f\u0456les.example/x",
        "https://xn--fles-l9d.example/x",
        "which a client would look up as xn--fles-l9d.example",
    ),
    (
        "https://evil.example\\files.example/x",
        "https://evil.example\\files.example/x",
        "(a client would connect to evil.example; urllib.parse sees evil.example\\files.example)",
    ),
    (
        "https://evil.example#@files.example/x",
        "https://evil.example#…",
        "host evil.example is not in download.allowed_hosts",
    ),
    (
        "https:///files.example/x",
        "https://files.example/x",
        "the URL has no host (a client would connect to files.example; urllib.parse sees no host)",
    ),
]


@pytest.mark.parametrize(("url", "shown", "reason"), TRICKS)
def test_a_tricky_url_is_shown_and_refused_with_the_host_a_client_would_reach(
    url: str, shown: str, reason: str
) -> None:
    assert redact_url(url) == shown
    with pytest.raises(UrlRefused) as refused:
        check_url(url, RULES)
    assert reason in str(refused.value)
    assert "sig=1" not in redact_url(url)
    assert "secret" not in redact_url(url) + str(refused.value)


def test_the_backslash_trick_splits_two_ways() -> None:
    view = view_url("https://files.example\\@evil.example/x")
    assert view is not None
    assert (view.host, view.lenient_host, view.userinfo) == ("files.example", "evil.example", False)
    assert view.differential
    assert view.path == "\\@evil.example/x"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://files.example/export.json?sig=abc", "https://files.example/export.json?…"),
        ("https://FILES.example:8443/a/b", "https://files.example:8443/a/b"),
        ("https://[2001:DB8::1]:8443/a?b=1", "https://[2001:db8::1]:8443/a?…"),
        ("https://files.example/a#token", "https://files.example/a#…"),
        ("https://files.example/a?#", "https://files.example/a"),
        ("  https://files.example/a\t", "https://files.example/a"),
    ],
)
def test_an_ordinary_url_is_shown_without_its_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_plain_allowed_url_passes() -> None:
    target = check_url("https://files.example/export.json?sig=abc", RULES)
    assert (target.host, target.port, target.ip_literal) == ("files.example", 443, False)


@pytest.mark.parametrize("entry", ["files\n.example.com", "files.example.com\n.evil"])
def test_a_host_label_ending_in_a_newline_is_not_a_host_name(entry: str) -> None:
    with pytest.raises(ValueError, match="not a valid host name"):
        parse_host_rule(entry)
