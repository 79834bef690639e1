"""ijson, the authority: an invalid payload is refused with a short reason, no excerpt."""

from __future__ import annotations

import io

import pytest

from inbox_poller.download import validation
from inbox_poller.errors import PayloadInvalid


def test_invalid_documents_are_refused_with_a_short_reason() -> None:
    for doc, reason in (
        (b'["\\udc00"]', "not valid UTF-8 or Unicode"),
        (b'{"a": 1} {"b": 2}', "trailing garbage"),
        (b'[1, "contact@example.test" x]', "invalid char"),
    ):
        with pytest.raises(PayloadInvalid, match="at or before byte") as caught:
            validation.validate(io.BytesIO(doc).read)
        assert reason in str(caught.value)
        assert "example.test" not in str(caught.value)
