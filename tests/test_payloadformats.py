"""CSV and XML payloads: sniffing, validation and records (inbox_poller.payloadformats)."""

from __future__ import annotations

import io

import pytest

from inbox_poller.payloadformats import (
    FormatError,
    count_csv,
    csv_records,
    sniff,
    xml_records,
    xml_shape,
)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b'  {"a": 1}', "json"),
        (b"\xef\xbb\xbf[1]", "json"),
        (b"<?xml version='1.0'?><r/>", "xml"),
        (b"<response><item/></response>", "xml"),
        (b"<!DOCTYPE html><html>", "html"),
        (b"<HTML><body>", "html"),
        (b"\n<!-- x --><html>", "html"),
        (b'"email","name"\r\n', "text"),
        (b"", "empty"),
    ],
)
def test_sniff_names_what_arrived(head: bytes, kind: str) -> None:
    assert sniff(head) == kind


def test_a_csv_is_counted_and_read_by_its_header() -> None:
    data = b'\xef\xbb\xbfid,name\r\n1,"O""Brien, Jo"\r\n\r\n2,"multi\nline"\r\n'
    assert count_csv(io.BytesIO(data)) == 2
    assert list(csv_records(io.BytesIO(data))) == [
        {"id": "1", "name": 'O"Brien, Jo'},
        {"id": "2", "name": "multi\nline"},
    ]
    assert count_csv(io.BytesIO(b"id,name\n")) == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"a,b\r\n1,2\r\n3,", "no final line break"),
        (b'a,b\r\n"1,2\r\n', "unexpected end of data"),
        (b"a,b\r\n1,2\r\n3,4,5\r\n", "row 3 has 3 columns, the header 2"),
        (b"a,b\r\n1\r\n", "1 columns"),
        (b"", "no header"),
        (b"a,b\r\n\xff,1\r\n", "not UTF-8"),
        (b"a,b\r\n1,\x002\r\n", "NUL"),
        (b'a,b\r\n1,"x"y\r\n', "CSV line 2"),
    ],
)
def test_a_bad_csv_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        count_csv(io.BytesIO(data))


def test_a_huge_csv_line_is_refused_without_reading_it_whole() -> None:
    with pytest.raises(FormatError, match="longer than"):
        count_csv(io.BytesIO(b"a\n" + b"x" * (2 << 20) + b"\n"))


XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<response><status>SUCCESS</status><data>
<item id="1"><email>a@example.com</email><name>A &amp; B</name></item>
<item id="2"><email>b@example.com</email><name><![CDATA[<x>]]></name></item>
<item id="3"><email>c@example.com</email><name/></item>
</data></response>
"""


def test_xml_records_are_the_repeated_element() -> None:
    shape = xml_shape(io.BytesIO(XML))
    assert (shape.root, shape.record_path, shape.records) == ("response", "response/data/item", 3)
    records = list(xml_records(io.BytesIO(XML), "response/data/item"))
    assert records[0] == {"id": "1", "email": "a@example.com", "name": "A & B"}
    assert records[1]["name"] == "<x>" and records[2]["name"] == ""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<l><i>&b;</i></l>",
            "DTDForbidden",
        ),
        (b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>', "DTDForbidden"),
        (b'<!DOCTYPE r SYSTEM "http://example.com/r.dtd"><r/>', "DTDForbidden"),
        (b"<r><i></r>", "not well-formed"),
        (b"<r><i/>", "not well-formed"),
        (b"<r/><r/>", "not well-formed"),
        (b"<a>" * 100 + b"</a>" * 100, "deeper than 64"),
    ],
    ids=["bomb", "external", "dtd-fetch", "mismatch", "truncated", "two-roots", "deep"],
)
def test_unsafe_or_broken_xml_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        xml_shape(io.BytesIO(data))
