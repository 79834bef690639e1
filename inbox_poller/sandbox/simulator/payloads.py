"""The simulator's export payloads: the JSON file on disk and the bodies served from it.

:func:`write_payload` writes a deterministic export while hashing it, so a 512 MiB
payload never sits in memory. A served body is a list of :class:`Segment`\\ s (the file,
its gzip copy, trailing garbage, whitespace padding) read back in chunks, so even a
decompression bomb costs a few blocks of memory. Nothing here is used in production.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

CHUNK_BYTES = 256 * 1024
PADDING_BLOCK_BYTES = 1024**2
GARBAGE = b'\n"trailing garbage"\n'
"""What an ``invalid_json`` fault appends after the JSON document."""
_RECORD_BATCH = 10_000
_MAX_RECORD_BYTES = 256
"""More than one record of ``_RECORD`` takes, with its separator."""
_EPOCH_2025 = 1_735_689_600
_RECORD = (
    '{"subscriberid":"%d","emailaddress":"contact%07d@example.com","event":"%s",'
    '"eventtime":"%d","ipaddress":"192.0.2.%d","url":"%s","statid":"%s"}'
)

PayloadShape = Literal["object", "array"]


@dataclass(frozen=True)
class PayloadInfo:
    """What :func:`write_payload` wrote."""

    bytes: int
    sha256: str
    records: int


def _records_text(start: int, end: int, stat: str) -> str:
    return ",\n".join(
        _RECORD
        % (
            1_000_000 + k,
            k,
            "click" if k % 3 == 0 else "open",
            _EPOCH_2025 + k * 37,
            k % 254 + 1,
            f"https://www.example.com/offer/{k % 50}" if k % 3 == 0 else "",
            stat,
        )
        for k in range(start, end)
    )


def write_payload(
    path: Path,
    *,
    stat: str,
    records: int,
    min_bytes: int | None = None,
    shape: PayloadShape = "object",
) -> PayloadInfo:
    """Write a deterministic export of per-contact open/click records to *path*.

    ``shape`` ``object`` is ``{"status":"SUCCESS","data":{"item":[…]}}`` and ``array`` a
    bare list. With *min_bytes*, records are added until the file is at least that large.
    """
    head, tail = (b"[\n", b"\n]\n")
    if shape == "object":
        head, tail = (b'{"status":"SUCCESS","data":{"item":[\n', b"\n]}}\n")
    digest = hashlib.sha256()
    size = count = 0
    with path.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal size
            out.write(data)
            digest.update(data)
            size += len(data)

        emit(head)
        while count < records or (min_bytes is not None and size + len(tail) < min_bytes):
            # honour *records* exactly first; beyond it, only as many records as the bytes
            # still missing need (each is under _MAX_RECORD_BYTES), so a payload ends
            # within one record of min_bytes
            if count < records:
                end = min(count + _RECORD_BATCH, records)
            else:
                missing = (min_bytes or 0) - size - len(tail)
                end = count + min(max(missing // _MAX_RECORD_BYTES, 1), _RECORD_BATCH)
            emit((",\n" if count else "").encode() + _records_text(count, end, stat).encode())
            count = end
        emit(tail)
    return PayloadInfo(bytes=size, sha256=digest.hexdigest(), records=count)


def gzip_copy(path: Path, lock: threading.Lock) -> Path:
    """Return ``<path>.gz`` beside *path*, compressing it first if it is not there yet.

    *lock* makes concurrent first requests write the copy once; the copy appears
    atomically, so a reader never sees half of it.
    """
    target = path.with_suffix(".json.gz")
    with lock:
        if not target.exists():
            partial = target.with_suffix(".part")
            with (
                path.open("rb") as source,
                partial.open("wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as out,
            ):
                shutil.copyfileobj(source, out, CHUNK_BYTES)
            partial.replace(target)
    return target


# ---- served bodies ------------------------------------------------------------------------


class Segment(NamedTuple):
    """Part of a served body: a file, or a block of bytes repeated ``repeat`` times."""

    path: Path | None
    block: bytes
    repeat: int
    length: int


def file_segment(path: Path) -> Segment:
    return Segment(path, b"", 1, path.stat().st_size)


def bytes_segment(block: bytes, count: int = 1, *, compress: bool = False) -> Segment:
    """A block repeated *count* times; with *compress*, each repeat is one gzip member."""
    if compress:
        block = gzip.compress(block, 9, mtime=0)
    return Segment(None, block, count, len(block) * count)


def padding(pad: int, compress: bool) -> list[Segment]:
    """Whitespace padding; gzip'd as repeated members, so a bomb stays tiny on the wire."""
    full, rest = divmod(pad, PADDING_BLOCK_BYTES)
    segments: list[Segment] = []
    if full:
        segments.append(bytes_segment(b" " * PADDING_BLOCK_BYTES, full, compress=compress))
    if rest:
        segments.append(bytes_segment(b" " * rest, compress=compress))
    return segments


def read_segments(segments: list[Segment], start: int, end: int) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of the concatenated segments in chunks."""
    offset = 0
    for segment in segments:
        seg_start, seg_end = max(start, offset), min(end, offset + segment.length)
        if seg_start < seg_end:
            yield from _read_segment(segment, seg_start - offset, seg_end - offset)
        offset += segment.length


def _read_segment(segment: Segment, start: int, end: int) -> Iterator[bytes]:
    if segment.path is not None:
        with segment.path.open("rb") as source:
            source.seek(start)
            while start < end:
                chunk = source.read(min(CHUNK_BYTES, end - start))
                if not chunk:
                    return
                start += len(chunk)
                yield chunk
        return
    size = len(segment.block)
    while start < end:
        inner = start % size
        chunk = segment.block[inner : min(size, inner + end - start)]
        start += len(chunk)
        yield chunk


# ---- every method, every format ---------------------------------------------------------


def _columns(method: str, target: str) -> tuple[str, ...]:
    if method == "GetNewsletterStatsAsync":
        return (
            "statid", "starttime", "finishtime", "sendsize", "emailopens", "linkclicks",
            "unsubscribecount", "subject", "newslettername", "listname",
        )  # fmt: skip
    if method == "GetNewsletterContactDataSummaryAsync":
        return ("subscriberid", "emailaddress", "event", "eventtime", "ipaddress", "url", "statid")
    owner = {"GetListSubscribersAsync": "listid", "GetTagSubscribersAsync": "tagid"}
    return (
        "subscriberid",
        "emailaddress",
        "status",
        "subscribedate",
        owner.get(method, "segmentid"),
        "firstname",
    )


def _values(method: str, target: str, k: int) -> tuple[str, ...]:
    if method == "GetNewsletterStatsAsync":
        start = _EPOCH_2025 + k * 86400
        return (
            str(90_000 + k), str(start), str(start + 900), str(1000 + k), str(400 + k % 97),
            str(80 + k % 31), str(k % 7), f"Offer, week {k}", f"news-{k}", f"list {target}",
        )  # fmt: skip
    if method == "GetNewsletterContactDataSummaryAsync":
        return (
            str(1_000_000 + k), f"contact{k:07d}@example.com", "click" if k % 3 == 0 else "open",
            str(_EPOCH_2025 + k * 37), f"192.0.2.{k % 254 + 1}",
            f"https://www.example.com/offer/{k % 50}" if k % 3 == 0 else "", target,
        )  # fmt: skip
    status = ("active", "inactive", "bounced", "unsubscribed")[k % 4]
    return (
        str(2_000_000 + k), f"subscriber{k:07d}@example.com", status,
        str(_EPOCH_2025 + k * 61), target, "Ann" if k % 2 else 'O"Brien, Jo',
    )  # fmt: skip


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _csv_field(value: str) -> str:
    if any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def write_table_payload(
    path: Path, *, method: str, target: str, fmt: str, records: int
) -> PayloadInfo:
    """Write an export of *method* as *fmt* (``json``, ``csv`` or ``xml``) to *path*.

    JSON is ``{"status":"SUCCESS","data":{"item":[…]}}``; CSV a header and one row per
    record (CRLF, quoted where needed); XML ``<response><status>SUCCESS</status><data>``
    with one ``<item>`` per record. *target* is the ID the records name.
    """
    columns = _columns(method, target)
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:

        def emit(text: str) -> None:
            nonlocal size
            data = text.encode()
            out.write(data)
            digest.update(data)
            size += len(data)

        if fmt == "csv":
            emit(",".join(columns) + "\r\n")
        elif fmt == "xml":
            emit('<?xml version="1.0" encoding="UTF-8"?>\n<response><status>SUCCESS</status>')
            emit("<data>\n")
        else:
            emit('{"status":"SUCCESS","data":{"item":[\n')
        for start in range(0, records, _RECORD_BATCH):
            lines = []
            for k in range(start, min(records, start + _RECORD_BATCH)):
                values = _values(method, target, k)
                pairs = list(zip(columns, values, strict=True))
                if fmt == "csv":
                    lines.append(",".join(_csv_field(v) for v in values) + "\r\n")
                elif fmt == "xml":
                    cells = "".join(f"<{c}>{_xml_text(v)}</{c}>" for c, v in pairs)
                    lines.append(f"<item>{cells}</item>\n")
                else:
                    cells = ",".join(f"{json.dumps(c)}:{json.dumps(v)}" for c, v in pairs)
                    lines.append(("," if k else "") + "{" + cells + "}\n")
            emit("".join(lines))
        emit("</data></response>\n" if fmt == "xml" else "" if fmt == "csv" else "]}}\n")
    return PayloadInfo(bytes=size, sha256=digest.hexdigest(), records=records)
