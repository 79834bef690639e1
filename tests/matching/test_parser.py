"""The email parser under caps: a header, part count or nesting over them is refused before
it is parsed; fields too long to parse are read as written."""

from __future__ import annotations

import base64
from email.headerregistry import AddressHeader, UniqueUnstructuredHeader

import pytest

from inbox_poller.errors import MailTooCostly
from inbox_poller.matching.extract import MAX_DEPTH, extract
from inbox_poller.matching.parser import (
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_PARSE_DEPTH,
    MAX_PARSE_PARTS,
    MAX_PARSED_ADDRESS_BYTES,
    CappedMessage,
    ParseBudget,
    parse_mail,
)
from tests import costly_mails
from tests.costly_mails import mail


def test_a_field_over_the_cap_is_refused_before_parsing() -> None:
    with pytest.raises(MailTooCostly, match=r"header field 'From' is 300,005 bytes"):
        parse_mail(costly_mails.folded_from(), ParseBudget())
    exact = mail("x", X_Big="a" * (MAX_HEADER_FIELD_BYTES - len("X-Big: \r\n")))
    parse_mail(exact, ParseBudget())  # the cap itself is allowed


def test_a_header_block_over_the_cap_is_refused() -> None:
    fields = {f"X_{i}": "a" * 1000 for i in range(MAX_HEADER_BLOCK_BYTES // 1000)}
    with pytest.raises(MailTooCostly, match="a header block over 131,072 bytes"):
        parse_mail(mail("x", **fields), ParseBudget())


def test_too_many_fields_are_refused_in_any_part() -> None:
    fields = "".join(f"X-{i}: y\r\n" for i in range(MAX_HEADER_FIELDS + 1))
    inner = f"--b\r\n{fields}\r\nbody\r\n--b--\r\n"
    with pytest.raises(MailTooCostly, match="more than 500 header fields in one block"):
        parse_mail(mail(inner, 'multipart/mixed; boundary="b"'), ParseBudget())


def test_parts_are_counted_while_parsing_not_after() -> None:
    with pytest.raises(MailTooCostly, match="more than 1,000 MIME parts"):
        parse_mail(costly_mails.many_parts(), ParseBudget())
    budget = ParseBudget()
    parts = "".join("--b\r\n\r\nx\r\n" for _ in range(MAX_PARSE_PARTS - 1))
    parse_mail(mail(parts + "--b--\r\n", 'multipart/mixed; boundary="b"'), budget)
    assert budget.parts == MAX_PARSE_PARTS


def test_nesting_below_the_cap_is_one_leaf_never_split_again() -> None:
    head = "Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    nested = "".join(
        f"--b{i}\r\nContent-Type: multipart/mixed; boundary=b{i + 1}\r\n\r\n" for i in range(300)
    )
    msg = parse_mail((head + nested + "x\r\n" * 1000).encode(), ParseBudget())
    depth, part = 0, msg
    while part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list) and len(children) == 1
        assert isinstance(children[0], CappedMessage)
        part = children[0]
        depth += 1
    assert depth == MAX_PARSE_DEPTH
    assert part.get_content_type() == "text/plain"
    assert MAX_PARSE_DEPTH == MAX_DEPTH + 1  # the walk still notes what it ignores
    assert any("nesting deeper" in d for d in extract((head + nested).encode()).defects)


def test_a_long_from_is_read_as_written_and_gives_no_domain() -> None:
    sender = "x" * MAX_PARSED_ADDRESS_BYTES + " <n@na01.mypinpointe.com>"
    notification = extract(mail("Job ID: 482913075", From=sender))
    assert notification.sender == "n@na01.mypinpointe.com"  # found as written
    assert notification.from_domain is None  # never trusted unparsed
    assert "header From too long to parse: read as written" in notification.defects


def test_a_field_read_twice_is_parsed_and_counted_once() -> None:
    budget = ParseBudget()
    msg = parse_mail(mail("x"), budget)
    first = msg.get("From")  # the sender, then its domain: extract reads From twice
    counted = budget.parsed_bytes
    assert msg.get("From") is first
    assert budget.parsed_bytes == counted > 0
    assert str(msg.get("Subject")) == "Export ready"  # another field: parsed, counted
    assert budget.parsed_bytes > counted


def test_each_fields_class_is_made_once_and_is_the_standard_one() -> None:
    first = parse_mail(mail("x"), ParseBudget())
    second = parse_mail(mail("y"), ParseBudget())
    for name, kind in (("From", AddressHeader), ("Subject", UniqueUnstructuredHeader)):
        assert type(first.get(name)) is type(second.get(name))
        assert isinstance(first.get(name), kind)
    sender = second["From"]
    assert [a.addr_spec for a in sender.addresses] == ["notifications@na01.mypinpointe.com"]


def test_two_from_fields_are_counted_before_either_is_parsed() -> None:
    raw = b"From: a@one.example\r\n" + mail("x")
    assert extract(raw).from_domain is None


def test_content_type_parameters_are_read_as_written() -> None:
    params = "; ".join(f"p{i}=v" for i in range(600))  # the structured parser was quadratic
    notification = extract(mail("Job ID: 482913075", f"text/plain; {params}; charset=utf-8"))
    assert notification.candidate_job_ids == ("482913075",)


def test_an_attached_mail_shares_the_budget_and_sits_below_its_part() -> None:
    inner = mail("Job ID: 482913075", Subject="Inner")
    outer = mail(
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="ready.eml"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(inner) + b"\r\n--b--\r\n",
        'multipart/mixed; boundary="b"',
    )
    notification = extract(outer)
    assert "482913075" in notification.candidate_job_ids
    assert any("Subject: Inner" in text for text in notification.texts)
