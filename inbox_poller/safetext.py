"""Untrusted text made safe to print: control and direction characters escaped.

Mail subjects, senders, links and server answers reach logs, the ledger's reasons and
``inspect-email``. Printed raw, an ESC or a C1 ``CSI`` (U+009B) drives the operator's
terminal, a newline forges a second log line, and a right-to-left override (U+202E)
makes ``evil.example/gpj.exe`` read as something else. Every such character is shown as
its escape instead (``\\x1b``, ``\\u202e``); everything else, non-ASCII letters
included, is left as it is.
"""

from __future__ import annotations

import re

_BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_LINE_SEPARATORS = (0x2028, 0x2029)

_ESCAPES: dict[int, str] = {
    code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
} | {code: f"\\u{code:04x}" for code in (*_BIDI_CONTROLS, *_LINE_SEPARATORS)}


_JSON_ESCAPES: dict[int, str] = {
    code: f"\\u{code:04x}"
    for code in (0x7F, *range(0x80, 0xA0), *_BIDI_CONTROLS, *_LINE_SEPARATORS)
}
"""What ``json.dumps(..., ensure_ascii=False)`` leaves raw (it escapes only C0)."""


def _any_of(table: dict[int, str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(chr(code)) for code in table) + "]")


# ``str.translate`` with a dict looks up each distinct character of the text (a miss costs
# a KeyError): 8 us for a log line with nothing to escape. One search in C finds out first.
_NEEDS_ESCAPE = _any_of(_ESCAPES)
_NEEDS_JSON_ESCAPE = _any_of(_JSON_ESCAPES)


def escape_controls(text: str) -> str:
    """Return *text* with every control, bidi and line-separator character escaped."""
    return text.translate(_ESCAPES) if _NEEDS_ESCAPE.search(text) else text


def escape_json_controls(document: str) -> str:
    """Return a JSON *document* with the characters ``escape_controls`` covers as ``\\uXXXX``.

    The escapes are JSON's own, so a reader decodes the original text; only the line
    printed is safe. They can only occur inside strings, where the escape is valid.
    """
    return document.translate(_JSON_ESCAPES) if _NEEDS_JSON_ESCAPE.search(document) else document
