"""Untrusted text made safe to print: every character escaped or left, on both paths."""

from __future__ import annotations

from inbox_poller.safetext import _ESCAPES, _JSON_ESCAPES, escape_controls, escape_json_controls

ORDINARY = "Ihr Export für Kampagne 4711 ist bereit – 完成 ✓ https://x.example/a?b=c"


def test_every_character_to_escape_is_escaped_alone_and_inside_ordinary_text() -> None:
    for code, escaped in _ESCAPES.items():
        assert escape_controls(chr(code)) == escaped
        assert escape_controls(f"a{chr(code)}b") == f"a{escaped}b"
    for code, escaped in _JSON_ESCAPES.items():
        assert escape_json_controls(f'"a{chr(code)}b"') == f'"a{escaped}b"'


def test_the_quick_check_agrees_with_the_table_for_every_character_of_the_bmp() -> None:
    for code in range(0x10000):
        text = f"{ORDINARY}{chr(code)}"
        assert escape_controls(text) == text.translate(_ESCAPES), hex(code)
        assert escape_json_controls(text) == text.translate(_JSON_ESCAPES), hex(code)


def test_text_with_nothing_to_escape_is_returned_as_it_is() -> None:
    assert escape_controls(ORDINARY) is ORDINARY
    assert escape_json_controls(ORDINARY) is ORDINARY
