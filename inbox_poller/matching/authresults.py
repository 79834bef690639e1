"""Parse one ``Authentication-Results`` field (RFC 8601), or Microsoft 365's variant (pure).

RFC 8601 §2.2: ``authserv-id [version] ; method=result [reason=...] [ptype.property=value]...``
with comments in parentheses anywhere whitespace may be. Microsoft 365 writes the
results with no authserv-id at all (``spf=pass (sender IP is ...) smtp.mailfrom=...;
dkim=pass ... header.d=...;dmarc=pass action=none header.from=...;compauth=pass reason=100``),
and bare ``keyword=value`` properties; both shapes are read here.

Nothing here decides trust: ``sender.py`` does. A field that cannot be read
exactly is reported as unreadable, never guessed at; in particular, a comment
such as ``(dmarc=pass)`` is never mistaken for a result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_FIELD_CHARS = 8192
"""Longer fields are not read (real ones are well under 2,000 characters)."""

_KEYWORD = r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?"
_METHOD_RE = re.compile(rf"\s*({_KEYWORD})\s*(?:/\s*[0-9]+\s*)?=\s*({_KEYWORD})")
_PROPERTY_RE = re.compile(
    rf"\s+({_KEYWORD}(?:\s*\.\s*{_KEYWORD})?)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^\s\"]+)"
)
_AUTHSERV_ID_RE = re.compile(r"^\s*(\"(?:[^\"\\]|\\.)*\"|[^\s\";()=]+)(?:\s+[0-9]+)?\s*$")
_LEADING_TOKEN_RE = re.compile(r"^\s*(?:\([^()]*\)\s*)*([^\s;()\"]+)")
_ESCAPE_RE = re.compile(r"\\(.)")


class UnreadableField(ValueError):
    """Raised when a field does not follow RFC 8601 (nor Microsoft's variant)."""


@dataclass(frozen=True)
class AuthResult:
    """One ``method=result`` with its properties (names and method lower-cased)."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...] = ()
    """(``ptype.property`` or a bare keyword, value without quotes), as written."""

    def prop(self, name: str) -> str | None:
        """Return the first value of property *name* (``header.from``), or None."""
        return next((value for key, value in self.properties if key == name), None)


@dataclass(frozen=True)
class AuthResultsField:
    """One parsed field."""

    authserv_id: str | None
    """Lower-cased; None for Microsoft 365's shape, which has none."""
    results: tuple[AuthResult, ...]


def leading_authserv_id(value: str) -> str | None:
    """Return the field's authserv-id, lower-cased, read leniently; None when it has none.

    Only the first token counts, so a field whose results are damaged still shows
    whose it is. A first token with ``=`` is a result (Microsoft's shape): None.
    """
    found = _LEADING_TOKEN_RE.match(value)
    if found is None or "=" in found.group(1):
        return None
    return found.group(1).lower()


def parse_field(value: str) -> AuthResultsField:
    """Parse one field's value (unfolded).

    :raises UnreadableField: not ASCII, too long, unbalanced quotes or comments, no
        authserv-id and no result, or any result or property that does not parse.
    """
    if len(value) > MAX_FIELD_CHARS:
        raise UnreadableField(f"longer than {MAX_FIELD_CHARS} characters")
    if not value.isascii():
        raise UnreadableField("not ASCII")
    first, *rest = split_segments(value)
    authserv = _AUTHSERV_ID_RE.match(first)
    if authserv is not None:
        authserv_id: str | None = _unquote(authserv.group(1)).lower()
    elif _METHOD_RE.match(first):
        authserv_id, rest = None, [first, *rest]  # Microsoft 365: results only
    else:
        raise UnreadableField("no authserv-id")
    results: list[AuthResult] = []
    for number, segment in enumerate(rest, start=1):
        if not segment.strip() or segment.strip().lower() == "none":
            continue  # "; none" means no results; an empty one is a stray ";"
        results.append(_parse_result(segment, number))
    return AuthResultsField(authserv_id, tuple(results))


def split_segments(value: str) -> list[str]:
    """Split at ``;`` outside quoted strings, with every comment replaced by a space.

    :raises UnreadableField: an unterminated quoted string or comment, or a stray ``)``.
    """
    segments: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    chars = iter(value)
    for char in chars:
        if char == "\\" and (quoted or depth):
            escaped = next(chars, "")
            if quoted:
                current += [char, escaped]
        elif quoted:
            current.append(char)
            quoted = char != '"'
        elif char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                raise UnreadableField("unbalanced parentheses")
            depth -= 1
            if depth == 0:
                current.append(" ")
        elif depth:
            continue
        elif char == '"':
            quoted = True
            current.append(char)
        elif char == ";":
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted or depth:
        raise UnreadableField("an unterminated quoted string or comment")
    segments.append("".join(current))
    return segments


def _parse_result(segment: str, number: int) -> AuthResult:
    method = _METHOD_RE.match(segment)
    if method is None:
        raise UnreadableField(f"result {number} is not method=result")
    properties: list[tuple[str, str]] = []
    pos = method.end()
    while segment[pos:].strip():
        prop = _PROPERTY_RE.match(segment, pos)
        if prop is None:
            raise UnreadableField(f"result {number} ({method.group(1).lower()}) has a bad property")
        name = re.sub(r"\s+", "", prop.group(1)).lower()
        properties.append((name, _unquote(prop.group(2))))
        pos = prop.end()
    return AuthResult(method.group(1).lower(), method.group(2).lower(), tuple(properties))


def _unquote(token: str) -> str:
    if len(token) >= 2 and token.startswith('"') and token.endswith('"'):
        return _ESCAPE_RE.sub(r"\1", token[1:-1])
    return token
