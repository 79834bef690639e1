"""The format a payload is validated as: asked for, confirmed by what arrives."""

from __future__ import annotations

import io

import pytest

from inbox_poller.download.formats import FormatCheck, validate_stored
from inbox_poller.errors import PayloadInvalid


def _arrived(expected: str, body: bytes) -> str:
    check = FormatCheck(expected)
    for start in range(0, len(body), 3):  # the head survives being fed in pieces
        check.feed(memoryview(body)[start : start + 3])
    return check.arrived()


@pytest.mark.parametrize(
    ("expected", "body", "arrived"),
    [
        ("json", b'{"data": {"item": []}}', "json"),
        ("json", b"a,b\r\n1,2\r\n", "json"),  # left to the JSON validation, which refuses it
        ("csv", b"a,b\r\n1,2\r\n", "csv"),
        ("csv", b'  {"status": "FAILED"}', "json"),  # stored as what it is
        ("xml", b"<?xml version='1.0'?><r/>", "xml"),
        ("xml", b"[1, 2]", "json"),
    ],
)
def test_the_format_is_asked_for_and_confirmed_by_the_first_bytes(
    expected: str, body: bytes, arrived: str
) -> None:
    assert _arrived(expected, body) == arrived


@pytest.mark.parametrize(
    ("expected", "body", "reason"),
    [
        ("json", b"<!DOCTYPE html><html><body>Log in</body></html>", "an HTML page arrived"),
        ("csv", b"\n<html><body>502</body></html>", "an HTML page arrived, not a CSV"),
        ("xml", b"<html>", "an HTML page"),
        ("csv", b"<r><i/></r>", "XML arrived for a CSV request"),
        ("xml", b"a,b\r\n", "for an XML request"),
    ],
)
def test_html_or_the_wrong_format_is_refused(expected: str, body: bytes, reason: str) -> None:
    with pytest.raises(PayloadInvalid, match=reason):
        _arrived(expected, body)


def test_only_a_json_request_pays_for_the_fast_check() -> None:
    assert FormatCheck("json").json is not None
    assert FormatCheck("csv").json is None and FormatCheck("csv").fast_shape() is None


def test_stored_csv_and_xml_are_validated_and_counted() -> None:
    shape = validate_stored("csv", lambda: io.BytesIO(b"a,b\r\n1,2\r\n3,4\r\n"))
    assert (shape.top_level, shape.records, shape.format) == ("table", 2, "csv")
    xml = b"<r><i>1</i><i>2</i><i>3</i></r>"
    shape = validate_stored("xml", lambda: io.BytesIO(xml))
    assert (shape.top_level, shape.records, shape.format) == ("element", 3, "xml")
    with pytest.raises(PayloadInvalid, match="3 columns"):
        validate_stored("csv", lambda: io.BytesIO(b"a,b\r\n1,2,3\r\n"))
