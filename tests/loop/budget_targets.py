"""What the read budget's worker runs in the fault-injection tests (its ``target``).

:func:`read` is ``extract``, except for a mail whose first line is ``X-Budget-Test: WHAT``:
then the worker misbehaves as told, the way a costly mail nobody has found yet would make
it. The other functions run one pattern of the extractor over a mail's text, so that the
budget bounds the red team's regex inputs exactly as it bounds a mail.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time

from inbox_poller.matching.extract import extract
from inbox_poller.matching.headers import bare_address
from inbox_poller.matching.jobids import find_candidate_job_ids, strip_file_extensions
from inbox_poller.matching.links import join_angle_urls
from inbox_poller.models import Notification

MARKER = b"X-Budget-Test: "


def costly(what: str) -> bytes:
    """A mail that makes :func:`read` misbehave: ``sleep``, ``hog``, ``crash``, ``limits``."""
    return MARKER + what.encode() + b"\r\nSubject: costly\r\n\r\nbody\r\n"


def read(raw: bytes) -> Notification:
    if not raw.startswith(MARKER):
        return extract(raw)
    what = raw[len(MARKER) :].split(b"\r\n", 1)[0].decode()
    if what == "sleep":
        time.sleep(3600)
    elif what == "spin":
        while True:
            pass
    elif what == "hog":
        hoard = [bytearray(64 << 20) for _ in range(64)]  # 4 GiB, a page at a time
        raise AssertionError(f"{len(hoard)} blocks allocated past RLIMIT_AS")
    elif what == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif what == "limits":
        limits = {
            name: resource.getrlimit(getattr(resource, name))
            for name in ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_CPU")
        }
        seen = {"limits": limits, "environ": sorted(os.environ)}
        return Notification(None, None, json.dumps(seen), (), ())
    elif what == "garbage":
        os.write(1, b"not the protocol")  # fd 1 is /dev/null in the worker: nothing happens
    return extract(raw)


def _text(raw: bytes) -> str:
    return raw.decode("ascii")


def from_address(raw: bytes) -> Notification:
    """The bare-address pattern (``headers.py``) over the whole text."""
    return Notification(None, bare_address(_text(raw)), "", (), ())


def angle_urls(raw: bytes) -> Notification:
    """The ``<https://...>`` joining pattern (``links.py``) over the whole text."""
    return Notification(None, None, "", (join_angle_urls(_text(raw))[:100],), ())


def job_ids(raw: bytes) -> Notification:
    """The job-ID label pattern and de-duplication (``jobids.py``) over the whole text."""
    return Notification(None, None, "", (), (), find_candidate_job_ids("", [_text(raw)], []))


def file_extensions(raw: bytes) -> Notification:
    """The file-extension cut (``jobids.py``) over the whole text as one token."""
    return Notification(None, None, strip_file_extensions(_text(raw))[:100], (), ())
