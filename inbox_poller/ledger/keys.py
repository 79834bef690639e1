"""The names of the ledger's daemon values (``Store.set_daemon_value``) that ``status`` reads.

They live here, beside the ledger, so that ``service.health`` (and with it ``status``)
can name them without importing the loop and the mailbox that write them.
"""

from __future__ import annotations

ACK_PROBLEM_KEY = "acknowledge_problem"
"""Why archived mail cannot be acknowledged ("" when it can): the processed folder is
missing. Written by ``loop.poller``; ``service.health`` reports it."""

LAST_RUN_KEY = "last_run_once"
"""The last ``run --once``: JSON with ``at`` (ISO time), ``ok`` and ``failed`` (the first
few failures). Written by ``loop.poller``; ``service.health`` judges cron users by it."""

LAST_POLL_KEY = "last_poll_at"
"""The last successful mailbox pass (``status`` and ``STATUS=`` read it). Written by
``loop.reader``."""

LOGIN_PROBLEM_KEY = "login_problem"
"""Why the mailbox cannot be logged in to ("" when it can): a refused login or OAuth2
grant, which a person must fix. Written by ``service.watcher``."""
