"""Header fields: the strict From domain and the raw Authentication-Results, top-most first."""

from __future__ import annotations

import email
import email.policy

import pytest

from inbox_poller.matching.headers import (
    MAX_AUTH_RESULTS,
    authentication_results,
    from_domain,
    normal_domain,
)


def _msg(*headers: str) -> email.message.Message:
    raw = "".join(f"{h}\r\n" for h in headers) + "\r\nbody\r\n"
    return email.message_from_bytes(raw.encode(), policy=email.policy.default)


@pytest.mark.parametrize(
    ("headers", "domain"),
    [
        (("From: Pinpointe <noreply@Mail.MyPinpointe.Example>",), "mail.mypinpointe.example"),
        (('From: "a@evil.example" <n@mypinpointe.example>',), "mypinpointe.example"),
        (("From: n@mypinpointe.example (n@evil.example)",), "mypinpointe.example"),
        (("From: =?utf-8?q?n=40evil=2Eexample?= <n@mypinpointe.example>",), "mypinpointe.example"),
        ((), None),
        (("From: a@mypinpointe.example", "From: b@mypinpointe.example"), None),
        (("From: a@mypinpointe.example, b@mypinpointe.example",), None),
        (("From: list: a@mypinpointe.example;",), None),
        (("From: <@evil.example:a@mypinpointe.example>",), None),
        (("From: a@mypinpointe.example <b@evil.example>",), None),
        (("From: a@[192.0.2.1]",), None),
        (("From: a@mypinpointe..example",), None),
        (("From: undisclosed",), None),
    ],
)
def test_from_domain(headers: tuple[str, ...], domain: str | None) -> None:
    assert from_domain(_msg(*headers)) == domain


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("MyPinpointe.Example.", "mypinpointe.example"),
        ("localhost", "localhost"),
        ("mypinpointé.example", None),
        ("-bad.example", None),
        ("a..example", None),
        ("[192.0.2.1]", None),
        ("", None),
    ],
)
def test_normal_domain(text: str, domain: str | None) -> None:
    assert normal_domain(text) == domain


def test_authentication_results_are_raw_unfolded_and_top_most_first() -> None:
    defects: list[str] = []
    msg = _msg(
        "Authentication-Results: mx.inbox.example;\r\n\tdmarc=pass\r\n header.from=a.example",
        "Subject: x",
        "Authentication-Results: =?utf-8?q?mx.inbox.example?=; dmarc=pass",
    )
    assert authentication_results(msg, defects.append) == (
        "mx.inbox.example;\tdmarc=pass header.from=a.example",
        "=?utf-8?q?mx.inbox.example?=; dmarc=pass",
    )
    assert defects == []


def test_only_the_top_most_authentication_results_are_kept() -> None:
    defects: list[str] = []
    headers = [f"Authentication-Results: mx{n}.example; none" for n in range(MAX_AUTH_RESULTS + 5)]
    values = authentication_results(_msg(*headers), defects.append)
    assert values == tuple(f"mx{n}.example; none" for n in range(MAX_AUTH_RESULTS))
    assert len(defects) == 1 and "lower ones ignored" in defects[0]
