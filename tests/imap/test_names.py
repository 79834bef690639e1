"""Folder names the server's way: the pure resolution rule, table-tested without a server."""

from __future__ import annotations

import pytest

from inbox_poller.imap.names import (
    FolderNameError,
    Namespace,
    Namespaces,
    canonical_special_use,
    choose_namespaces,
    server_name,
    special_use_folder,
    special_uses_offered,
    suggestion,
)

DOVECOT = Namespaces(Namespace("", "/"))
"""Dovecot's default (and Gmail's, Microsoft 365's): folders at the top level, "/"."""
COURIER = Namespaces(
    Namespace("INBOX.", "."), (Namespace("#shared.", "."), Namespace("shared.", "."))
)
"""Courier's and Cyrus's default: everything under "INBOX.", separator "."."""
INBOX_SLASH = Namespaces(Namespace("INBOX/", "/"))
"""A server with an INBOX/ personal namespace and "/" (Dovecot configured so)."""
FLAT = Namespaces(Namespace("", None))
"""A server without hierarchy."""
OTHER_USERS = Namespaces(Namespace("", "/"), (Namespace("Other Users/", "/"),))


@pytest.mark.parametrize(
    ("configured", "namespaces", "expected"),
    [
        ("Processed", DOVECOT, "Processed"),
        ("Processed", COURIER, "INBOX.Processed"),
        ("Processed", INBOX_SLASH, "INBOX/Processed"),
        ("Processed", FLAT, "Processed"),
        # "/" is the server's separator
        ("Exports/Done", DOVECOT, "Exports/Done"),
        ("Exports/Done", COURIER, "INBOX.Exports.Done"),
        # already under the personal namespace, in the server's or the config's spelling
        ("INBOX.Processed", COURIER, "INBOX.Processed"),
        ("INBOX/Processed", COURIER, "INBOX.Processed"),
        ("inbox.Processed", COURIER, "INBOX.Processed"),
        ("INBOX/Exports/Done", COURIER, "INBOX.Exports.Done"),
        ("INBOX/Processed", INBOX_SLASH, "INBOX/Processed"),
        # a name with a dot on a "/" server is one name, as before
        ("INBOX.Processed", DOVECOT, "INBOX.Processed"),
        # the inbox itself, on every server
        ("INBOX", COURIER, "INBOX"),
        ("inbox", DOVECOT, "INBOX"),
        ("INBOX", INBOX_SLASH, "INBOX"),
        # other namespaces are used as written
        ("#shared.Team", COURIER, "#shared.Team"),
        ("#shared/Team", COURIER, "#shared.Team"),
        ("Other Users/alice/x", OTHER_USERS, "Other Users/alice/x"),
    ],
)
def test_a_configured_name_is_spelled_the_servers_way(
    configured: str, namespaces: Namespaces, expected: str
) -> None:
    assert server_name(configured, namespaces) == expected


def test_a_slash_on_a_server_without_hierarchy_is_refused() -> None:
    with pytest.raises(FolderNameError, match="no hierarchy"):
        server_name("Exports/Done", FLAT)


def test_a_special_use_name_is_not_a_folder_name() -> None:
    with pytest.raises(FolderNameError, match="SPECIAL-USE"):
        server_name("\\Archive", COURIER)


@pytest.mark.parametrize(
    ("configured", "namespaces", "expected"),
    [
        ("Processed", COURIER, "INBOX.Processed"),
        ("#shared.Processed", COURIER, "INBOX.Processed"),
        ("#shared.Team.Done", COURIER, "INBOX.Team.Done"),
        ("Exports/Done", COURIER, "INBOX.Exports.Done"),
        ("Processed", DOVECOT, "Processed"),
    ],
)
def test_the_suggested_spelling_is_under_the_personal_namespace(
    configured: str, namespaces: Namespaces, expected: str
) -> None:
    assert suggestion(configured, namespaces) == expected


@pytest.mark.parametrize(
    ("personal", "others", "list_separator", "expected"),
    [
        ([("", "/")], [], "/", DOVECOT),
        ([("INBOX.", ".")], [("#shared.", "."), ("shared.", ".")], ".", COURIER),
        # no NAMESPACE capability: top level, with LIST's separator
        ([], [], ".", Namespaces(Namespace("", "."))),
        ([], [], None, FLAT),
        # NIL separator in NAMESPACE
        ([("", None)], [], "/", FLAT),
    ],
)
def test_namespaces_come_from_namespace_or_else_list(
    personal: list[tuple[str, str | None]],
    others: list[tuple[str, str | None]],
    list_separator: str | None,
    expected: Namespaces,
) -> None:
    assert choose_namespaces(personal, others, list_separator) == expected


def test_namespaces_describe_where_personal_folders_live() -> None:
    assert COURIER.describe() == 'the personal namespace is "INBOX." with separator "."'
    assert FLAT.describe() == 'the personal namespace is "" with separator none (flat)'


LISTING = [
    (("\\HasNoChildren",), "INBOX"),
    (("\\HasNoChildren", "\\Sent"), "Sent"),
    (("\\HasNoChildren", "\\archive"), "Old mail"),
    (("\\Archive",), "Second archive"),
]


def test_a_special_use_folder_is_found_by_its_attribute_in_any_case() -> None:
    assert special_use_folder("\\Archive", LISTING) == "Old mail"
    assert special_use_folder("\\Sent", LISTING) == "Sent"
    assert special_use_folder("\\Junk", LISTING) is None
    assert special_uses_offered(LISTING) == ["\\Archive", "\\Sent"]


@pytest.mark.parametrize(
    ("configured", "expected"),
    [("\\Archive", "\\Archive"), ("\\archive", "\\Archive"), ("\\All", "\\All"), ("\\Done", None)],
)
def test_special_use_names_are_the_rfc_6154_attributes(
    configured: str, expected: str | None
) -> None:
    assert canonical_special_use(configured) == expected
