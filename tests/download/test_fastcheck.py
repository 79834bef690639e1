"""The simdjson fast path against ijson, the authority, on the same documents.

The fast path may answer "undecided" whenever it likes; what it may never do is accept
a document ijson refuses, or report other records than ijson counts.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from collections.abc import Callable

import pytest

from inbox_poller import mainarray
from inbox_poller.download import fastcheck, validation
from inbox_poller.download.fastcheck import FastCheck
from inbox_poller.download.shape import Shape
from inbox_poller.errors import PayloadInvalid

Verdict = Shape | str
"""A Shape, or ``"invalid"``."""


def authority(doc: bytes) -> Verdict:
    """What ijson decides, exactly as the downloader asks it."""
    try:
        try:
            return validation.validate(io.BytesIO(doc).read)
        except validation.CountingAbandoned:
            return validation.validate(io.BytesIO(doc).read, count=False)
    except PayloadInvalid:
        return "invalid"


def fast(doc: bytes, *, piece: int = 1 << 20, chunk: int | None = None) -> Shape | None:
    """What the fast path decides when fed *doc* in pieces of *piece* bytes."""
    check = FastCheck(chunk_bytes=chunk)
    for start in range(0, len(doc), piece):
        check.feed(doc[start : start + piece])
    return check.finish()


def assert_agrees(doc: bytes, *, piece: int = 1 << 20, chunk: int | None = None) -> Shape | None:
    """Assert the fast path is undecided or agrees with ijson; return its verdict."""
    quick = fast(doc, piece=piece, chunk=chunk)
    if quick is not None:
        assert authority(doc) == quick, doc[:200]
    return quick


RECORDS = [{"id": i, "name": f"n{i}", "tags": ["a", "b"]} for i in range(40)]

# (document, what ijson says, whether the fast path must decide it)
TABLE: list[tuple[bytes, Verdict, bool]] = [
    (json.dumps(RECORDS).encode(), Shape("array", 40), True),
    (json.dumps([[i, i] for i in range(30)]).encode(), Shape("array", 30), True),
    (b"[1, 2, 3]", Shape("array", 3), True),
    (b'["a", true, null, -1.5e3]', Shape("array", 4), True),
    (b"[]", Shape("array", 0), True),
    (b" \n[ \t ]\r\n", Shape("array", 0), True),
    (b'{"status": "SUCCESS", "data": {"item": [{"a": 1}, {"a": 2}]}}', Shape("object", 2), True),
    (b'{"errors": [], "data": {"item": [1, 2]}}', Shape("object", 2), True),
    (b'{"errors": [], "warnings": []}', Shape("object", 0), True),
    (b'{"meta": {"fields": ["a", "b"]}, "data": {"item": [{"a": 1}]}}', Shape("object", 1), True),
    (b'{"a": [[1, 2], [3]], "b": [{"x": 1}]}', Shape("object", 2), True),
    (b'{"tags": ["x", "y", "z"], "n": 1}', Shape("object", 3), True),
    (b'{"data": {"item": []}, "after": [1, [2], {"c": [3]}]}', Shape("object", 3), True),
    (b'{"a": {"b": {"c": [1, 2]}}}', Shape("object", None), False),
    (b'{"status": "SUCCESS"}', Shape("object", None), False),
    (b'"just a string"', Shape("string", None), False),
    (b"42", Shape("number", None), False),
    (b"null", Shape("null", None), False),
    # strings that look like structure
    (b'[{"s": "},{"}, {"s": "]"}, {"s": "\\"],["}]', Shape("array", 3), True),
    (b'{"k[": "[", "rows": [{"q": "\\\\"}, {"q": "\\u005d"}]}', Shape("object", 2), True),
    (
        b'[{"\xc3\xa9t\xc3\xa9": "\xe2\x82\xac \xf0\x9f\x98\x80"}, {"\\u00e9": 1}]',
        Shape("array", 2),
        True,
    ),
    (b"[ 1 ,\n 2 ,\t3 ]", Shape("array", 3), True),
    # duplicate keys and dotted keys: one ijson prefix, two arrays
    (b'{"a": [1, 2], "a": [3]}', Shape("object", 3), False),
    (b'{"data.item": [1], "data": {"item": [2, 3]}}', Shape("object", 3), False),
    # numbers simdjson refuses but ijson reads
    (b"[18446744073709551616, 1]", Shape("array", 2), False),
    (b"[1e400]", Shape("array", 1), False),
    # numbers ijson's conversions cannot hold (see "ijson's number limits")
    (b"[1e-9999999999999999999, 0e99999999999999999999]", Shape("array", 2), True),
    (b"[" + b"7" * 5000 + b"]", Shape("array", 1), False),
    (b'{"n": -' + b"7" * 5000 + b', "rows": [[1]]}', Shape("object", 1), False),
    # invalid
    (b"[1, 2,]", "invalid", False),
    (b"[1,,2]", "invalid", False),
    (b"[,1]", "invalid", False),
    (b'{"a": [1]} x', "invalid", False),
    (b'{"a": [1]}{"b": 2}', "invalid", False),
    (b"[1, 2", "invalid", False),
    (b"", "invalid", False),
    (b"[NaN]", "invalid", False),
    (b"[01]", "invalid", False),
    (b'["caf\xe9"]', "invalid", False),
    # surrogate escapes: pairs only (docs/reliability.md §3.5)
    (b'["\\ud83d\\ude00", {"\\uD83D\\uDE00": 1}]', Shape("array", 2), True),
    (b'["\\\\ud800"]', Shape("array", 1), True),  # an escaped backslash, then "ud800"
    (b'["\\ud800"]', "invalid", False),
    (b'["\\udc00"]', "invalid", False),
    (b'["\\ud800x"]', "invalid", False),
    (b'["\\udc00\\ud800"]', "invalid", False),
    (b'{"\\ud800": [1]}', "invalid", False),
    (b'{"rows": [1], "tail": "\\ud800"}', "invalid", False),
    # the end of the document, and the nesting limit
    (b'[{"a": 1}]"ERROR: export incomplete', "invalid", False),
    (b'{"data": {"item": [1, 2]}} "', "invalid", False),
    (b"[1]\x00", "invalid", False),
    (b"[" * 512 + b"]" * 512, Shape("array", 1), True),
    (b'{"data": {"item": [' + b"[" * 509 + b"]" * 509 + b"]}}", Shape("object", 1), True),
    (b"[" * 513 + b"]" * 513, "invalid", False),
    (b"[1, " + b"[" * 511 + b"]" * 511 + b", 2]", Shape("array", 3), True),
    (b"[1, " + b"[" * 512 + b"]" * 512 + b", 2]", "invalid", False),
    (b'[1, {"a": ' + b"[" * 510 + b"]" * 510 + b"}, 2]", Shape("array", 3), True),
    (b'[1, {"a": ' + b"[" * 511 + b"]" * 511 + b"}, 2]", "invalid", False),
    (b'{"data": {"item": [' + b"[" * 510 + b"]" * 510 + b"]}}", "invalid", False),
    (b'{"meta": ' + b"[" * 512 + b"]" * 512 + b', "rows": [1]}', "invalid", False),
    (b'["a\x01"]', "invalid", False),
    (b"\xef\xbb\xbf[1]", "invalid", False),
    (b"<html><body>503</body></html>", "invalid", False),
]


@pytest.mark.parametrize(("doc", "expected", "decides"), TABLE)
@pytest.mark.parametrize(("piece", "chunk"), [(1 << 20, None), (3, 8)], ids=["whole", "tiny"])
def test_the_fast_path_agrees_with_ijson(
    doc: bytes, expected: Verdict, decides: bool, piece: int, chunk: int | None
) -> None:
    assert authority(doc) == expected
    quick = assert_agrees(doc, piece=piece, chunk=chunk)
    if decides:
        assert quick == expected
    if expected == "invalid":
        assert quick is None


def test_big_documents_are_cut_into_many_chunks_and_counted() -> None:
    rows = [{"id": i, "text": "},{" * (i % 5), "n": [i, -i, 1.5e-3]} for i in range(20_000)]
    for wrapper, top in ((lambda r: r, "array"), (lambda r: {"data": {"item": r}}, "object")):
        doc = json.dumps(wrapper(rows), indent=1).encode()
        check = FastCheck(chunk_bytes=64 * 1024)
        for start in range(0, len(doc), 10_000):
            check.feed(doc[start : start + 10_000])
        assert check.finish() == Shape(top, 20_000), check.reason
        assert check._chunks > 10  # really cut, not validated in one piece


def test_a_body_in_one_piece_is_checked_as_the_same_body_in_pieces() -> None:
    rows = [{"id": i, "email": f"user{i}@example.com"} for i in range(5_000)]
    late = {"meta": "x" * (mainarray.HEAD_BYTES + 10), "rows": rows}  # no array in the head
    for doc, expected in (
        (json.dumps({"data": {"item": rows}}).encode(), Shape("object", 5_000)),
        (json.dumps(rows).encode(), Shape("array", 5_000)),
        (json.dumps(late).encode(), None),
    ):
        assert len(doc) > mainarray.HEAD_BYTES  # the head is in the first piece
        whole, pieces = FastCheck(), FastCheck()
        whole.feed(memoryview(doc))  # as the spool feeds it: a view valid for the call
        for start in range(0, len(doc), 4096):
            pieces.feed(doc[start : start + 4096])
        assert whole.finish() == pieces.finish() == expected
        assert whole.reason == pieces.reason


def test_an_item_longer_than_max_item_bytes_is_left_to_ijson(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(validation, "MAX_ITEM_BYTES", 256 * 1024)
    small = json.dumps([{"pad": "x" * 100_000}, 1, 2]).encode()
    big = json.dumps([1, {"blob": "x" * 600_000}, 2]).encode()
    assert assert_agrees(small, piece=4096, chunk=16 * 1024) == Shape("array", 3)
    assert authority(big) == Shape("array", None)
    assert fast(big, piece=4096, chunk=16 * 1024) is None
    assert fast(big, chunk=16 * 1024) is None  # a cut found beyond the limit
    assert fast(big) is None


@pytest.mark.parametrize("size", [200_000, 260_000, 320_000])
def test_counting_agrees_with_ijson_around_max_item_bytes(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(validation, "MAX_ITEM_BYTES", 256 * 1024)
    for doc in (
        json.dumps({"head": "h" * size, "rows": [1, 2]}).encode(),
        json.dumps({"rows": [1, 2], "tail": "t" * size}).encode(),
        json.dumps({"rows": [], "tail": "t" * size}).encode(),
        json.dumps([1, "x" * size, 2]).encode(),
    ):
        assert_agrees(doc, piece=8192, chunk=32 * 1024)
        assert_agrees(doc)


def test_the_fast_path_never_raises() -> None:
    rng = random.Random(7)
    for _ in range(300):
        doc = bytes(rng.choice(b'[]{},:"\\ 0123456789eE.-+truefalsn\x00\xff') for _ in range(60))
        check = FastCheck(chunk_bytes=4)
        for start in range(0, len(doc), 5):
            check.feed(doc[start : start + 5])
        check.finish()


@pytest.mark.parametrize(
    ("doc", "wrong"),
    [
        (b'{"s": "[1, 2, 3]", "rows": [{"a": 1}]}', 7),  # a "[" inside a string
        (b'{"a": [1, 2], "rows": [{"a": 1}]}', 6),  # an array with another prefix
        (b'{"rows": [1, 2], "rows": [{"a": 1}]}', 9),  # the same prefix, twice
    ],
)
def test_a_wrong_offset_is_caught_by_the_probe(
    monkeypatch: pytest.MonkeyPatch, doc: bytes, wrong: int
) -> None:
    assert doc[wrong : wrong + 1] == b"["
    assert assert_agrees(doc) is not None or b'"rows": [1' in doc
    monkeypatch.setattr(fastcheck, "main_array_offset", lambda head: wrong)
    assert fast(doc) is None


@pytest.mark.parametrize(
    "doc",
    [b"[1,,2,3,4]", b"[1,2,,3,4]", b"[1,2,3,,4]", b"[,1,2,3]", b"[1,2,3,]", b"[1,2,3,4,]"],
)
@pytest.mark.parametrize("piece", [1, 2, 3])
def test_an_empty_element_is_never_hidden_by_a_cut(
    monkeypatch: pytest.MonkeyPatch, doc: bytes, piece: int
) -> None:
    monkeypatch.setattr(mainarray, "HEAD_BYTES", 1)
    assert authority(doc) == "invalid"
    for chunk in (1, 2, 3):
        assert fast(doc, piece=piece, chunk=chunk) is None
    assert fast(b"[1,2,3,4]", piece=piece, chunk=1) == Shape("array", 4)


@pytest.mark.parametrize(
    "doc",
    [
        b"[0,1],[2,3]",
        b"[0,1]],[[2,3]",
        b'{"rows": [0, 1], "x": [2, 3]}',
        b'{"data": {"item": [0, 1]}, "z": {"item": [2, 3]}}',
    ],
)
@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_a_chunk_that_closes_its_own_bracket_is_never_accepted(
    monkeypatch: pytest.MonkeyPatch, doc: bytes, chunk: int
) -> None:
    # padded, "1],[2" and its kind parse as valid JSON: the padding must hold one element
    monkeypatch.setattr(mainarray, "HEAD_BYTES", 1)
    quick = fast(doc, piece=1, chunk=chunk)
    assert quick is None or quick == authority(doc)
    if authority(doc) == "invalid":
        assert quick is None


# --- property-style: random documents and random mutations --------------------------------

_STRINGS = ["", "plain", "},{", "]", "[", '"', "\\", "a,b", "é€😀", "\u0000", "\n\t", "}]"]


def _value(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(10 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(_STRINGS) + rng.choice(_STRINGS)
    if kind == 1:
        return rng.choice([0, -1, 7, 2**53, 2**64, -(2**63), 10**30])
    if kind == 2:
        return rng.choice([0.5, -1e-7, 1.5e300, 3.0])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.choice(["x", 1])
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_STRINGS) + str(i): _value(rng, depth + 1) for i in range(rng.randrange(4))}


def _document(rng: random.Random) -> bytes:
    rows = [_value(rng, 1) for _ in range(rng.randrange(12))]
    shape = rng.randrange(4)
    doc: object = rows
    if shape == 1:
        doc = {"status": "SUCCESS", "data": {"item": rows}}
    elif shape == 2:
        doc = {"errors": [], "rows": rows, "after": _value(rng, 1)}
    elif shape == 3:
        doc = _value(rng, 0)
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1, "\t"]))
    return text.encode()


_INSERTS = [b",", b"]", b"}", b"[", b"{", b'"', b"\\", b" ", b"0", b"e", b"-", b"\x00", b"\xff"]


def _mutate(rng: random.Random, doc: bytes) -> bytes:
    if not doc:
        return rng.choice(_INSERTS)
    at = rng.randrange(len(doc))
    kind = rng.randrange(5)
    if kind == 0:
        return doc[:at] + doc[at + 1 :]
    if kind == 1:
        return doc[:at] + rng.choice(_INSERTS) + doc[at:]
    if kind == 2:
        end = min(len(doc), at + rng.randrange(1, 12))
        return doc[:end] + doc[at:end] + doc[end:]
    if kind == 3:
        return doc[:at]
    other = rng.randrange(len(doc))
    swapped = bytearray(doc)
    swapped[at], swapped[other] = swapped[other], swapped[at]
    return bytes(swapped)


def _run_property(check: Callable[[bytes, random.Random], None], seed: int, count: int) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        check(_document(rng), rng)


@pytest.fixture
def small_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sniff only 64 bytes, so the fast path cuts small documents as they arrive."""
    monkeypatch.setattr(mainarray, "HEAD_BYTES", 64)


@pytest.mark.usefixtures("small_head")
def test_random_documents_agree_and_are_mostly_decided() -> None:
    decided = total = 0

    def check(doc: bytes, rng: random.Random) -> None:
        nonlocal decided, total
        quick = assert_agrees(doc, piece=rng.choice([1, 7, 64, 4096]), chunk=rng.choice([8, 64]))
        total += 1
        decided += quick is not None

    _run_property(check, seed=11, count=400)
    assert decided > total // 2  # the property above must not hold vacuously


@pytest.mark.usefixtures("small_head")
def test_random_mutations_are_never_accepted_when_ijson_refuses() -> None:
    accepted_invalid = 0

    def check(doc: bytes, rng: random.Random) -> None:
        nonlocal accepted_invalid
        for _ in range(4):
            doc = _mutate(rng, doc)
            quick = fast(doc, piece=rng.choice([1, 5, 100]), chunk=rng.choice([4, 32]))
            truth = authority(doc)
            if quick is not None:
                assert truth == quick, doc[:200]
            accepted_invalid += truth == "invalid" and quick is not None

    _run_property(check, seed=23, count=400)
    assert accepted_invalid == 0


def test_the_fast_path_runs_where_memory_cannot_become_executable() -> None:
    # systemd's MemoryDenyWriteExecute= is prctl(PR_SET_MDWE) on Linux >= 6.3: a JIT
    # would fail there, simdjson's precompiled kernels must not
    code = (
        "import ctypes, mmap\n"
        "if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:\n"
        "    raise SystemExit(77)\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('W+X memory is still allowed')\n"
        "from inbox_poller.download.fastcheck import FastCheck\n"
        "c = FastCheck(chunk_bytes=8)\n"
        'c.feed(b\'{"data": {"item": [{"a": 1}, {"a": 2}, [3]]}}\')\n'
        "print(c.finish())\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    if child.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "Shape(top_level='object', records=3)"
