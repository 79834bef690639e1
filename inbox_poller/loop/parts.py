"""What one configuration builds for the loop, held together so that it closes together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.loop.hooks import HookDispatcher
from inbox_poller.loop.poller import Poller
from inbox_poller.ports import Mailbox

if TYPE_CHECKING:
    from inbox_poller.ledger.store import Store


@dataclass(frozen=True)
class LoopParts:
    """The ledger, the mailbox, and the loop objects built over them (``wiring.build_loop``)."""

    store: Store
    mailbox: Mailbox
    archiver: ExportArchiver
    poller: Poller
    hooks: HookDispatcher
    """Runs the hooks of archived exports: the daemon on its own thread, ``run --once``
    after its pass."""
    close_downloads: Callable[[], None] = lambda: None
    """Closes the downloaders' idle keep-alive connections (``wiring.DownloaderPool``)."""

    def close(self) -> None:
        """Log out of the mailbox, stop the mail reader's worker, close the downloaders'
        idle connections and the ledger."""
        self.mailbox.close()
        self.poller.close()
        self.close_downloads()
        self.store.close()
