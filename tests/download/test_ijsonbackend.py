"""The ijson backend is the C one, and it never sees a digit run it cannot hold."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

from inbox_poller.download import ijsonbackend


def test_the_json_backend_is_the_c_extension() -> None:
    assert ijsonbackend.JSON_BACKEND == "yajl2_c"
    assert ijsonbackend.BACKEND.backend_name == "yajl2_c"


def test_digit_runs_are_shortened_across_pieces() -> None:
    rng = random.Random(3)
    limit = ijsonbackend.MAX_DIGIT_RUN
    for _ in range(500):
        data = bytes(rng.choice(b"0123456789" * 6 + b'x",.e-') for _ in range(rng.randrange(80)))
        cuts = sorted(rng.sample(range(len(data) + 1), rng.randrange(min(5, len(data) + 1))))
        runs = ijsonbackend.DigitRuns()
        bounds = [0, *cuts, len(data)]
        out = b"".join(runs.shorten(data[a:b]) for a, b in itertools.pairwise(bounds))
        expected = b"".join(
            token[:limit] if token.isdigit() else token for token in _split_digit_runs(data)
        )
        assert out == expected


def _split_digit_runs(data: bytes) -> list[bytes]:
    tokens: list[bytes] = []
    for byte in data:
        char = bytes([byte])
        if tokens and tokens[-1].isdigit() == char.isdigit():
            tokens[-1] += char
        else:
            tokens.append(char)
    return tokens


def test_ijson_never_sees_an_integer_it_would_crash_on() -> None:
    # yajl2_c (ijson 3.6) dies with SIGSEGV on an integer over 4300 digits; run it
    # in a child so that a regression fails this test instead of killing the suite
    code = (
        "import io\n"
        "from inbox_poller.download.fastcheck import FastCheck\n"
        "from inbox_poller.download.shape import sniff_shape\n"
        "from inbox_poller.download.validation import validate\n"
        "doc = b'{\"n\": -' + b'9' * 6000 + b', \"rows\": [' + b'1' * 5000 + b']}'\n"
        "print(validate(io.BytesIO(doc).read))\n"
        "c = FastCheck(); c.feed(doc); print(c.finish())\n"
        "print(sniff_shape(doc))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == [
        "Shape(top_level='object', records=1)",
        "None",
        "('object', 'rows.item')",
    ]
