"""Reading one Authentication-Results field: properties, quoted strings, versions, and
what is unreadable (RFC 8601)."""

from __future__ import annotations

import pytest

from inbox_poller.matching.authresults import (
    MAX_FIELD_CHARS,
    UnreadableField,
    parse_field,
    split_segments,
)

D = "mypinpointe.example"
MX = "mx.inbox.example"


def test_properties_quoted_strings_and_versions_are_read() -> None:
    field = parse_field(f'{MX}; dkim/1=pass header.d="{D}" header.b="a;b\\"c"; dmarc=none')
    assert field.authserv_id == MX
    dkim, dmarc = field.results
    assert (dkim.method, dkim.result, dkim.prop("header.d"), dkim.prop("header.b")) == (
        "dkim",
        "pass",
        D,
        'a;b"c',
    )
    assert (dmarc.method, dmarc.result, dmarc.properties) == ("dmarc", "none", ())


@pytest.mark.parametrize(
    "value", [f"{MX}; dmarc=pass (unclosed", f'{MX}; dkim=pass header.b="x', f"{MX}; a) b=c"]
)
def test_unbalanced_comments_and_quotes_are_unreadable(value: str) -> None:
    with pytest.raises(UnreadableField):
        split_segments(value)


def test_an_overlong_field_is_unreadable() -> None:
    with pytest.raises(UnreadableField, match="longer"):
        parse_field(f"{MX}; dmarc=pass header.from={D}" + " " * MAX_FIELD_CHARS)
