"""A TCP relay on loopback that delays every byte by a fixed time in each direction.

It stands in for the distance to a mailbox across the internet (Microsoft 365, Gmail:
tens of milliseconds per round trip) on a machine whose only network is loopback: what
the client sends reaches the server *delay* later, and the answer comes back *delay*
after it left, so each request and its answer cost one round trip of ``2 * delay``. Bytes
are relayed in order and pipelined (a chunk waiting out its delay does not hold up the
reading of the next), TLS passes through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

_READ_BYTES = 1 << 16


class DelayedLink:
    """``with DelayedLink(target_port, delay_s) as link:`` connect to ``link.port`` instead."""

    def __init__(self, target_port: int, delay_s: float, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.delay_s = delay_s
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> DelayedLink:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, self.host, 0), self._loop
        ).result()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pump(client_in, server_out), self._pump(server_in, client_out))

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy *source* to *sink*, each chunk *delay_s* after it was read; close at EOF."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    break
                sink.write(data)
                await sink.drain()
            sink.close()

        delivering = asyncio.ensure_future(deliver())
        with contextlib.suppress(ConnectionError):  # a reset ends the stream as EOF does
            while data := await source.read(_READ_BYTES):
                queue.put_nowait((loop.time() + self.delay_s, data))
        queue.put_nowait((loop.time() + self.delay_s, b""))
        with contextlib.suppress(ConnectionError):
            await delivering
