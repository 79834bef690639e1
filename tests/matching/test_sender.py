"""Sender authentication: the top-most trusted Authentication-Results decides, failing closed."""

from __future__ import annotations

import json

import pytest

from inbox_poller.matching.extract import extract
from inbox_poller.matching.sender import SenderPolicy, check_sender
from inbox_poller.models import Notification
from inbox_poller.sandbox.simulator.server import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    PinpointeSimulator,
)

D = "mypinpointe.example"
MX = "mx.inbox.example"
POLICY = SenderPolicy((MX,), (D,))
M365 = SenderPolicy(("microsoft365",), (D,))
BOTH = SenderPolicy((MX, "microsoft365"), (D,))
SIMULATOR = f"{MX}; dkim=pass header.d={D}; spf=pass smtp.mailfrom={D}; dmarc=pass header.from={D}"
"""Exactly what the simulator's ``mta.stamp`` adds."""
MS_PASS = (
    f"spf=pass (sender IP is 192.0.2.25) smtp.mailfrom={D}; dkim=pass (signature was "
    f"verified) header.d={D};dmarc=pass action=none header.from={D};compauth=pass reason=100"
)
MS_FAIL = (
    f"spf=fail (sender IP is 198.51.100.7) smtp.mailfrom={D}; dkim=none (message not "
    f"signed) header.d=none;dmarc=fail action=quarantine header.from={D};compauth=fail reason=000"
)
FORGED_PASS = f"{MX}; dmarc=pass header.from={D}"


def _note(*auth_results: str, from_domain: str | None = D) -> Notification:
    return Notification(
        message_id=None,
        sender=f"noreply@{from_domain}",
        subject="Export ready",
        texts=(),
        links=(),
        auth_results=auth_results,
        from_domain=from_domain,
    )


# (what the case shows, the policy, Authentication-Results top-most first, From domain,
#  None when trusted or a part of the reason)
CASES: list[tuple[str, SenderPolicy, tuple[str, ...], str | None, str | None]] = [
    ("the simulator's stamp", POLICY, (SIMULATOR,), D, None),
    ("dmarc=pass alone", POLICY, (f"{MX}; dmarc=pass header.from={D}",), D, None),
    (
        "dmarc=pass for a subdomain",
        POLICY,
        (f"{MX}; dmarc=pass header.from=mail.{D}",),
        f"mail.{D}",
        None,
    ),
    (
        "case and comments do not matter",
        POLICY,
        ("MX.Inbox.Example (ours); DMARC=Pass (p=REJECT) header.from=MyPinpointe.Example",),
        D,
        None,
    ),
    ("an authres-version", POLICY, (f"{MX} 1; dmarc=pass header.from={D}",), D, None),
    ("dmarc=fail", POLICY, (f"{MX}; dmarc=fail header.from={D}",), D, "dmarc=fail"),
    (
        "dmarc=fail is not rescued by an aligned DKIM pass",
        POLICY,
        (f"{MX}; dkim=pass header.d={D}; dmarc=fail header.from={D}",),
        D,
        "dmarc=fail",
    ),
    ("dmarc=temperror", POLICY, (f"{MX}; dmarc=temperror header.from={D}",), D, "dmarc=temperror"),
    (
        "dmarc=pass for another domain than From",
        POLICY,
        (f"{MX}; dmarc=pass header.from=evil.example",),
        D,
        "dmarc=pass is not for the From domain",
    ),
    (
        "dmarc=pass without header.from",
        POLICY,
        (f"{MX}; dmarc=pass",),
        D,
        "dmarc=pass is not for the From domain",
    ),
    (
        "aligned DKIM without a DMARC record",
        POLICY,
        (f"{MX}; dkim=pass header.d={D}; dmarc=none header.from={D}",),
        D,
        None,
    ),
    (
        "aligned DKIM by a subdomain, named by header.i",
        POLICY,
        (f'{MX}; dkim=pass header.i=@mail.{D} header.s=s1 header.b="ab;c="',),
        D,
        None,
    ),
    (
        "DKIM pass for another domain",
        POLICY,
        (f"{MX}; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom={D}",),
        D,
        "only SPF passed",
    ),
    (
        "DKIM pass for an allowed domain, From elsewhere",
        POLICY,
        (f"{MX}; dkim=pass header.d={D}",),
        "evil.example",
        "not an allowed sender domain",
    ),
    ("SPF alone", POLICY, (f"{MX}; spf=pass smtp.mailfrom={D}",), D, "only SPF passed"),
    (
        "a look-alike From domain",
        POLICY,
        (f"{MX}; dmarc=pass header.from=evil{D}",),
        f"evil{D}",
        "not an allowed sender domain",
    ),
    (
        "the allowed domain as a prefix",
        POLICY,
        (f"{MX}; dmarc=pass header.from={D}.evil.example",),
        f"{D}.evil.example",
        "not an allowed sender domain",
    ),
    (
        "a result hidden in a comment",
        POLICY,
        (f"{MX}; spf=pass (dmarc=pass header.from={D}) smtp.mailfrom={D}",),
        D,
        "only SPF passed",
    ),
    ("no Authentication-Results", POLICY, (), D, "no Authentication-Results from mx.inbox"),
    (
        "another authserv-id only",
        POLICY,
        (f"mx.evil.example; dmarc=pass header.from={D}",),
        D,
        "no Authentication-Results from mx.inbox",
    ),
    (
        "a forged pass below our fail",
        POLICY,
        (f"{MX}; dmarc=fail header.from={D}", FORGED_PASS),
        D,
        "dmarc=fail",
    ),
    (
        "a forged pass below our field without results",
        POLICY,
        (f"{MX}; none", FORGED_PASS),
        D,
        "no dmarc=pass and no aligned dkim=pass",
    ),
    (
        "a forged pass below our unreadable field",
        POLICY,
        (f"{MX}; dmarc=pass header.from=({D}", FORGED_PASS),
        D,
        "unreadable",
    ),
    (
        "another system's field above ours is skipped",
        POLICY,
        ("filter.inbox.example; x-spam=pass", "garbage (", SIMULATOR),
        D,
        None,
    ),
    ("an unreadable property", POLICY, (f"{MX}; dmarc=pass header.from",), D, "unreadable"),
    ("not ASCII", POLICY, (f"{MX}; dmarc=pass header.from=mypinpointé.example",), D, "unreadable"),
    ("no From domain", POLICY, (SIMULATOR,), None, "From header is missing"),
    ("Microsoft 365's shape", M365, (MS_PASS,), D, None),
    ("Microsoft 365's shape, not configured", POLICY, (MS_PASS,), D, "no Authentication-Results"),
    ("Microsoft 365's fail", M365, (MS_FAIL,), D, "dmarc=fail"),
    ("a forged Microsoft pass below the real fail", M365, (MS_FAIL, MS_PASS), D, "dmarc=fail"),
    ("an authserv-id is not Microsoft's shape", M365, (FORGED_PASS,), D, "no Authentication"),
    ("Microsoft above ours: the top-most counts", BOTH, (MS_FAIL, SIMULATOR), D, "dmarc=fail"),
]


@pytest.mark.parametrize(
    ("policy", "auth_results", "from_domain", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_check_sender(
    policy: SenderPolicy,
    auth_results: tuple[str, ...],
    from_domain: str | None,
    expected: str | None,
) -> None:
    reason = check_sender(_note(*auth_results, from_domain=from_domain), policy)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason


def test_a_reason_never_quotes_raw_header_text() -> None:
    hostile = f"{MX}; dmarc=pass header.from=\x1b[31m{D}"
    reason = check_sender(_note(hostile), POLICY)
    assert reason is not None and "\x1b" not in reason


@pytest.mark.parametrize(
    ("authserv_ids", "domains"),
    [((), (D,)), (("",), (D,)), (("mx example",), (D,)), ((MX,), ()), ((MX,), ("a b",))],
)
def test_a_policy_that_could_never_pass_is_refused_at_once(
    authserv_ids: tuple[str, ...], domains: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match=r"authserv|domain"):
        SenderPolicy(authserv_ids, domains)


# --- end to end: a real mail ----------------------------------------------------------


def _mail(*headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (head + "Subject: Export ready\r\n\r\nJob 482913075 is ready\r\n").encode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((f"Authentication-Results: {SIMULATOR}", f"From: Pinpointe <noreply@{D}>"), None),
        (
            (f"Authentication-Results: {MX};\r\n\tdmarc=pass\r\n header.from={D}", f"From: n@{D}"),
            None,
        ),
        ((f"Authentication-Results: {SIMULATOR}", f"From: a@{D}", "From: b@evil.example"), "From"),
        ((f"Authentication-Results: {SIMULATOR}", f"From: a@{D}, b@evil.example"), "From"),
        ((f"Authentication-Results: {SIMULATOR}", f"From: a@{D} <b@evil.example>"), "From"),
        ((f"Authentication-Results: {SIMULATOR}", f"From: <@route.example:a@{D}>"), "From"),
        ((f"Authentication-Results: {SIMULATOR}", f"From: list: a@{D};"), "From"),
        ((f"Authentication-Results: {SIMULATOR}",), "From"),
        (
            (f"Authentication-Results: {MX}; dmarc=pass header.from=\xe9.example", f"From: a@{D}"),
            "unreadable (not ASCII)",
        ),
    ],
)
def test_headers_of_a_real_mail(headers: tuple[str, ...], expected: str | None) -> None:
    notification = extract(_mail(*headers))
    reason = check_sender(notification, POLICY)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason


def test_only_the_top_level_headers_count() -> None:
    inner = f"Authentication-Results: {SIMULATOR}\r\nFrom: n@{D}\r\nSubject: x\r\n\r\nhi\r\n"
    raw = (
        f"From: n@{D}\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
        "Content-Type: message/rfc822\r\n\r\n" + inner
    ).encode()
    notification = extract(raw)
    assert notification.auth_results == ()
    assert check_sender(notification, POLICY) == "no Authentication-Results from mx.inbox.example"


def test_the_simulator_mail_passes_and_its_failure_does_not(
    pinpointe_sim: PinpointeSimulator,
) -> None:
    reasons: list[str | None] = []
    for dmarc in ("pass", "fail", None):
        pinpointe_sim.dmarc = dmarc
        envelope = {
            "username": DEFAULT_USERNAME,
            "usertoken": DEFAULT_TOKEN,
            "requesttype": "Newsletters",
            "requestmethod": "GetNewsletterContactDataSummaryAsync",
            "details": {"stat": "42", "notify": {"type": "email", "value": "x@inbox.example"}},
        }
        status, answer = pinpointe_sim.handle_api(json.dumps(envelope).encode())
        assert status == 200, answer
        mail = pinpointe_sim.job(answer["data"]["jobid"]).wait_ready().wait_delivered(10)
        reasons.append(check_sender(extract(mail), POLICY))
    assert reasons[0] is None
    assert reasons[1] is not None and "dmarc=fail" in reasons[1]
    assert reasons[2] == "no Authentication-Results from mx.inbox.example"
