"""What the download tests share: payloads, a recording sink, a table resolver, a config.

The pytest fixtures built on them (``fetch``, ``connects``, ``sleeps``) are in
``tests/download/conftest.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
from collections.abc import Sequence
from typing import Any, BinaryIO

from inbox_poller.config import DownloadConfig
from tests.plugins.https_servers import HttpsServer

RECORDS = [
    {"contactid": 1000 + i, "emailaddress": f"user{i}@example.test", "opens": i % 7}
    for i in range(500)
]
PAYLOAD = json.dumps({"status": "SUCCESS", "data": {"item": RECORDS}}).encode()
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
BIG = json.dumps([{"id": i, "pad": "x" * 200} for i in range(15_000)]).encode()
"""About 3.3 MiB: several network chunks."""


class RecordingSink:
    """A PayloadSink that keeps everything in memory and logs what happened."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.events: list[str] = []

    def write(self, data: bytes | memoryview) -> None:
        self.data += data
        self.events.append("write")

    def restart(self) -> None:
        self.data.clear()
        self.events.append("restart")

    def read_back(self) -> BinaryIO:
        self.events.append("read_back")
        return io.BytesIO(bytes(self.data))

    @property
    def restarts(self) -> int:
        return self.events.count("restart")


class FakeResolver:
    """Answers from a table; a list of answers is used in order, the last one repeating."""

    def __init__(self, table: dict[str, list[Sequence[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown host")
        return answers.pop(0) if len(answers) > 1 else answers[0]


def make_config(server: HttpsServer | None = None, **overrides: Any) -> DownloadConfig:
    """A config allowing *server* and ``extra_hosts``, with short timeouts and no back-off."""
    hosts = [server.host_rule] if server is not None else []
    hosts += overrides.pop("extra_hosts", [])
    settings: dict[str, Any] = {
        "allowed_hosts": tuple(hosts),
        "allow_private_addresses": True,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "backoff_s": 0.0,
        "retries": 3,
    }
    settings.update(overrides)
    return DownloadConfig(**settings)


def localhost_resolver() -> FakeResolver:
    """A resolver that answers 127.0.0.1 for localhost, as the system would."""
    return FakeResolver({"localhost": [["127.0.0.1"]]})
