"""Turn a text part's bytes into the text it means, whatever its label claims (pure, no I/O).

Declared charsets are often wrong: mislabelled UTF-8, windows-1252 sent as
ISO-8859-1, UTF-16 without a label. The order of guesses is stated in
docs/matching.md §1; the last resort, Latin-1, cannot fail. RFC 3676
``format=flowed`` is undone here too, because its soft breaks split long URLs.

A declared charset is a name the sender chose, and Python's codec registry holds more than
charsets: ``bz2`` and ``zlib`` decompress (an 824-byte mail once cost a gigabyte),
``punycode`` decodes in quadratic time, ``base64``, ``hex``, ``uu``, ``quopri`` and
``rot13`` transform. Only text encodings are used (:func:`text_codec`); any other name
counts as unknown.
"""

from __future__ import annotations

import codecs
import re

_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac-roman",
    "unicode-1-1-utf-7": "utf-7",
}
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SINGLE_BYTE_RE = re.compile(r"^(?:ascii|latin-1|iso8859-\d+|cp125\d|mac-\w+|koi8-\w+)$")
NOT_CHARSETS = frozenset(
    {"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined", "charmap"}
)
"""Text codecs that are no charset of mail (``codecs.lookup(...).name``): ``punycode`` and
``idna`` (quadratic, and for host names), the escape codecs (they read backslashes),
``undefined`` and ``charmap`` (no table). Bytes-to-bytes and str-to-str codecs (``bz2``,
``zlib``, ``base64``, ``hex``, ``uu``, ``quopri``, ``rot13``) are refused by the registry's
own mark (:func:`text_codec`)."""


def decode_bytes(data: bytes, declared: str | None, *, truncated: bool) -> str:
    """Decode with the best guess: BOM, then the declared charset, then fallbacks.

    A declared single-byte charset is tried after UTF-8: valid multi-byte UTF-8 is
    almost never Latin-1 text, and mislabelled UTF-8 is common. *truncated* says
    the data was cut at a size cap, so an incomplete last character is no error.
    NUL characters are removed.
    """
    for order in _decode_order(data, text_codec(declared)):
        text = _try_decode(data, order, final=not truncated)
        if text is not None:
            return text.replace("\x00", "")
    return data.decode("latin-1").replace("\x00", "")


def clean_surrogates(text: str) -> str:
    """Turn the email parser's surrogate escapes (raw 8-bit header bytes) back into text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogateescape")
        return decode_bytes(data, None, truncated=False)
    return text


def unflow(text: str, *, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed: join soft-broken lines (dropping the space with *delsp*)."""
    out: list[str] = []
    pending = ""
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r")
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and line != "-- ":
            pending += line[:-1] if delsp else line
        else:
            out.append(pending + line)
            pending = ""
    if pending:
        out.append(pending)
    return "\n".join(out)


def text_codec(charset: str | None) -> str | None:
    """Return the codec name for a declared *charset*, or None when it is unknown or not one.

    Only text encodings count: the registry marks bytes-to-bytes and str-to-str codecs
    (``_is_text_encoding``, the mark ``bytes.decode`` itself checks), and
    :data:`NOT_CHARSETS` lists the text codecs that are no charset.
    """
    if not charset:
        return None
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_CHARSETS:
        return None
    return info.name


def _decode_order(data: bytes, codec: str | None) -> list[str]:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return [name]
    order: list[str] = []
    if codec is None or not codec.startswith(("utf-16", "utf-32")):
        # UTF-16 without a BOM (or with a wrong label): many NUL bytes
        sample = data[:4096]
        if sample and sample.count(0) > len(sample) // 4:
            odd_nuls = sample[1::2].count(0)
            if odd_nuls >= sample[::2].count(0):
                order += ["utf-16-le", "utf-16-be"]
            else:
                order += ["utf-16-be", "utf-16-le"]
    if codec is not None and not _SINGLE_BYTE_RE.match(codec):
        order.append(codec)
    order.append("utf-8")
    if codec is not None and _SINGLE_BYTE_RE.match(codec):
        order.append(codec)
    order += ["cp1252", "latin-1"]
    return order


def _try_decode(data: bytes, codec: str, *, final: bool) -> str | None:
    try:
        decoder = codecs.getincrementaldecoder(codec)("strict")
        text = decoder.decode(data, final=final)
    except Exception:  # UnicodeDecodeError, or a decoder that refuses its input
        return None
    return text if isinstance(text, str) else None
