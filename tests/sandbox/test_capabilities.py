"""The capability table of docs/providers.md, measured on each server the tests run."""

from __future__ import annotations

from inbox_poller.sandbox.capabilities import HEADER, measure
from inbox_poller.sandbox.courier.server import CourierServer
from inbox_poller.sandbox.imapaccount import TestAccount


def test_each_server_offers_what_docs_providers_md_says(imap_server: TestAccount) -> None:
    found = measure("server", imap_server, idle_samples=2)

    courier = isinstance(imap_server, CourierServer)
    assert found.move is not courier
    assert (found.uidplus, found.keywords, found.idle) == (True, True, True)
    assert found.idle_delay_s is not None and max(found.idle_delay_s) < 3
    assert (found.namespace, found.separator) == (("INBOX.", ".") if courier else ("", "/"))
    assert found.uidnext_in_select is not courier
    assert found.special_use is not courier
    quoted = '("MESSAGE-ID")' if courier else "(MESSAGE-ID)"
    assert found.header_fields_key == f"BODY[HEADER.FIELDS {quoted}]"
    assert found.row().count("|") == HEADER.splitlines()[0].count("|")
