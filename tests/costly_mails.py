"""The red team's costly mails (issue 9, finding 1), generated exactly as reported.

Each is far below ``imap.max_message_bytes`` and once cost minutes or gigabytes to read,
which stopped the mailbox for good: the watermark only advances past a recorded mail.
The tests in tests/matching/, tests/loop/ and tests/service/ and bench/bench_read_budget.py
share them; :data:`COSTLY_MAILS` names them all.
"""

from __future__ import annotations

import base64
import bz2
from collections.abc import Callable

JOB = "482913075"
FROM = "Pinpointe <notifications@na01.mypinpointe.com>"
BZ2_BOMB_BYTES = 1 << 30
"""What the bz2 "charset" part expands to, at least: 1 GiB of zeros."""


def mail(
    body: bytes | str, content_type: str = "text/plain; charset=utf-8", **headers: str
) -> bytes:
    """Build a one-part mail; *body* is used as is (already transfer-encoded)."""
    fields = {
        "From": FROM,
        "To": "exports@example.org",
        "Subject": "Export ready",
        "Message-ID": "<costly@na01.mypinpointe.com>",
        "MIME-Version": "1.0",
        "Content-Type": content_type,
        **{name.replace("_", "-"): value for name, value in headers.items()},
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode("ascii")
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head + b"\r\n" + data


def html_anchors() -> bytes:
    """``"<a " * 40_000`` (120 KB) in an HTML part: html.parser rescans every unclosed tag."""
    return mail("<a " * 40_000, "text/html; charset=utf-8")


def folded_from() -> bytes:
    """A From field folded over 75,000 lines (300 KB): ``email.policy.default`` is
    superlinear in it."""
    value = "\r\n ".join(["a"] * 75_000)
    return mail("Job ID: 482913075", From=value)


def encoded_subject() -> bytes:
    """A Subject of 280 KB of RFC 2047 encoded words: decoding is quadratic in memory."""
    value = " ".join(["=?utf-8?q?a?="] * 20_000)
    return mail("Job ID: 482913075", Subject=value)


def bz2_bomb() -> bytes:
    """One bz2 stream of :data:`BZ2_BOMB_BYTES` zeros, in about 1 KB (built, not compressed:
    compressing a gigabyte takes 15 s; repeating one block takes milliseconds)."""
    return _repeat_bz2_block(_one_zero_block(), -(-BZ2_BOMB_BYTES // _ZERO_BLOCK_BYTES))


def bz2_charset() -> bytes:
    """A part that declares ``charset=bz2`` over a bz2 bomb: the codec would decompress it."""
    body = base64.encodebytes(bz2_bomb())
    return mail(body, 'text/plain; charset="bz2"', Content_Transfer_Encoding="base64")


def punycode_charset() -> bytes:
    """A 600 KB part that declares ``charset=punycode``: decoding it is quadratic."""
    letters = bytes(ord("a") + (i * 7919) % 26 for i in range(600_000))
    return mail(letters, 'text/plain; charset="punycode"')


def job_id_regex() -> bytes:
    """245 KB of distinct labelled job IDs: each new one was compared with all before it."""
    body = "".join(f"Job {100_000 + i} " for i in range(22_000))
    return mail(body)


def file_extension_regex() -> bytes:
    """30 links of 8 KB whose job ID ends in 1,600 ``.json`` (245 KB): the extension pattern
    was quadratic in each."""
    lines = [
        f"https://exports.mypinpointe.com/{i}?jobid=1{'.json' * 1_600}x\r\n" for i in range(30)
    ]
    return mail("".join(lines))


def from_address_regex_text() -> str:
    """245 KB that the bare-address pattern once scanned from every position."""
    return "a" * 245_000


def many_parts() -> bytes:
    """24,000 tiny MIME parts: all were parsed before the 200-part cap was applied."""
    parts = "".join("--b\r\n\r\nx\r\n" for _ in range(24_000))
    return mail(parts + "--b--\r\n", 'multipart/mixed; boundary="b"')


def angle_spaces() -> bytes:
    """``<`` and 200,000 spaces: the pattern that joins ``<https://...>`` split over lines
    tried every split of the spaces between two optional runs."""
    return mail("<" + " " * 200_000 + "x")


def html_comments() -> bytes:
    """``"<!--" * 60_000``: html.parser searched the rest of the part for each ``-->``."""
    return mail("<!--" * 60_000, "text/html; charset=utf-8")


def nested_anchors() -> bytes:
    """8,000 unclosed anchors: each one's words were the text of all the others."""
    return mail("<a href='https://a.example/x'>x" * 8_000, "text/html; charset=utf-8")


COSTLY_MAILS: dict[str, Callable[[], bytes]] = {
    "html-anchors": html_anchors,
    "folded-from": folded_from,
    "encoded-subject": encoded_subject,
    "bz2-charset": bz2_charset,
    "punycode-charset": punycode_charset,
    "job-id-regex": job_id_regex,
    "file-extension-regex": file_extension_regex,
    "many-parts": many_parts,
    "angle-spaces": angle_spaces,
    "html-comments": html_comments,
    "nested-anchors": nested_anchors,
}
"""Every costly mail by name: the red team's first, then the ones found while fixing them."""


def notification(uid_hint: str = "1") -> bytes:
    """A real notification for export :data:`JOB`, to be read after a costly mail."""
    link = f"https://exports.mypinpointe.com/files/{JOB}/contact-data.json"
    return mail(
        f"Your export is ready.\r\nJob ID: {JOB}\r\nDownload: {link}\r\n",
        Message_ID=f"<ready-{uid_hint}@na01.mypinpointe.com>",
    )


# --- a bz2 bomb without compressing a gigabyte ----------------------------------------

_ZERO_BLOCK_BYTES = 40 << 20
"""Zeros held by one bz2 block at level 9 (a block takes up to about 45 MiB of zeros)."""
_BLOCK_MAGIC = 0x314159265359
_END_MAGIC = 0x177245385090


def _one_zero_block() -> tuple[str, int]:
    """Return the bits of the one block of a bz2 stream of zeros, and its CRC."""
    stream = bz2.compress(b"\0" * _ZERO_BLOCK_BYTES, 9)
    bits = "".join(f"{byte:08b}" for byte in stream)
    assert int(bits[32:80], 2) == _BLOCK_MAGIC
    end = bits.rfind(f"{_END_MAGIC:048b}")
    return bits[32:end], int(bits[80:112], 2)


def _repeat_bz2_block(block: tuple[str, int], count: int) -> bytes:
    bits, crc = block
    combined = 0
    for _ in range(count):
        combined = (((combined << 1) | (combined >> 31)) & 0xFFFFFFFF) ^ crc
    stream = "".join([bits * count, f"{_END_MAGIC:048b}", f"{combined:032b}"])
    stream += "0" * (-len(stream) % 8)
    body = int(stream, 2).to_bytes(len(stream) // 8, "big")
    return b"BZh9" + body


def _check_bomb_prefix(bomb: bytes) -> bytes:
    """Return the first MiB the bomb expands to (a cheap check that it is a valid stream)."""
    return bz2.BZ2Decompressor().decompress(bomb, max_length=1 << 20)
