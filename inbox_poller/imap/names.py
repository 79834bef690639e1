"""Folder names the server's way: the configured name, spelled as this server spells it.

Pure logic, no I/O; ``folder.py`` asks the server (NAMESPACE, LIST) and calls these at
every session open. The rule, for ``imap.folder`` and ``imap.processed_folder`` alike
(README "Configure", docs/providers.md):

* ``INBOX`` (any case) is the inbox, on every server.
* A name starting with ``\\`` names a SPECIAL-USE attribute (RFC 6154): ``"\\Archive"``
  is the folder the server marks ``\\Archive``. Such a folder is never created.
* ``/`` in a name means "the server's hierarchy separator": ``Exports/Done`` is
  ``INBOX.Exports.Done`` where the separator is ``.``.
* A name that already starts with one of the server's namespace prefixes (``INBOX.``,
  ``Other Users/``, ``#shared.``) is used as written, after the separator rule.
* Any other name is put under the personal namespace: ``Processed`` becomes
  ``INBOX.Processed`` where the personal namespace is ``INBOX.`` with ``.``, and stays
  ``Processed`` where it is ``""`` (Dovecot's default, Gmail, Microsoft 365).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
"""The SPECIAL-USE attributes of RFC 6154 a configured name may ask for."""

CONFIG_SEPARATOR = "/"
"""The separator configured names are written with, whatever the server's."""


@dataclass(frozen=True)
class Namespace:
    """One namespace the server offers: its prefix and hierarchy separator.

    *separator* is ``None`` for a flat namespace (NAMESPACE or LIST said NIL).
    """

    prefix: str
    separator: str | None


@dataclass(frozen=True)
class Namespaces:
    """What NAMESPACE (RFC 2342) says, or what LIST suggests on a server without it."""

    personal: Namespace
    others: tuple[Namespace, ...] = ()
    """The other users' and shared namespaces: names under them are kept as written."""

    def describe(self) -> str:
        """Say where personal folders live, for an error message."""
        separator = self.personal.separator
        shown = "none (flat)" if separator is None else f'"{separator}"'
        return f'the personal namespace is "{self.personal.prefix}" with separator {shown}'


class FolderNameError(ValueError):
    """A configured name cannot be turned into a folder on this server (the reason says why)."""


def is_special_use(configured: str) -> bool:
    """Return whether *configured* asks for a SPECIAL-USE folder (``"\\Archive"``)."""
    return configured.startswith("\\")


def canonical_special_use(configured: str) -> str | None:
    """Return the RFC 6154 spelling of the attribute *configured* names, or None if unknown."""
    for attribute in SPECIAL_USES:
        if attribute.lower() == configured.lower():
            return attribute
    return None


def choose_namespaces(
    personal: Sequence[tuple[str, str | None]],
    others: Iterable[tuple[str, str | None]],
    list_separator: str | None,
) -> Namespaces:
    """Build ``Namespaces`` from NAMESPACE's answer (empty lists without NAMESPACE).

    Without a personal namespace the prefix is ``""`` and the separator is the one
    ``LIST "" ""`` reported (*list_separator*).
    """
    first = (
        Namespace(personal[0][0], personal[0][1] or None)
        if personal
        else Namespace("", list_separator or None)
    )
    return Namespaces(first, tuple(Namespace(p, s or None) for p, s in others))


def server_name(configured: str, namespaces: Namespaces) -> str:
    """Return the server's spelling of the plain folder name *configured* (see module doc).

    :raises FolderNameError: a ``/`` on a server without hierarchy, or a SPECIAL-USE
        name (use ``special_use_folder``).
    """
    if is_special_use(configured):
        raise FolderNameError(f"{configured!r} names a SPECIAL-USE attribute, not a folder")
    if configured.upper() == "INBOX":
        return "INBOX"
    # the namespace a name is written under decides its separator
    for namespace in (namespaces.personal, *namespaces.others):
        if namespace.prefix and _starts_with_prefix(configured, namespace):
            return _with_separator(configured, namespace)
    personal = namespaces.personal
    return personal.prefix + _with_separator(configured, personal)


def suggestion(configured: str, namespaces: Namespaces) -> str:
    """Return the spelling of *configured* under the personal namespace.

    What an error message proposes when the server refused the name as resolved: a
    name written under another namespace (``#shared.x``) is moved to the personal one.
    """
    rest = configured
    for namespace in namespaces.others:
        if namespace.prefix and _starts_with_prefix(configured, namespace):
            rest = configured[len(namespace.prefix) :]
            if namespace.separator is not None:
                rest = rest.replace(namespace.separator, CONFIG_SEPARATOR)
    return server_name(rest, Namespaces(namespaces.personal))


def special_use_folder(attribute: str, listing: Iterable[tuple[Sequence[str], str]]) -> str | None:
    """Return the folder *listing* marks with *attribute*, or None.

    *listing* is LIST's answer as (attributes, name) pairs; attributes compare without
    regard to case (RFC 3501 §5.1). The first folder wins when several carry it.
    """
    wanted = attribute.lower()
    for attributes, name in listing:
        if any(flag.lower() == wanted for flag in attributes):
            return name
    return None


def special_uses_offered(listing: Iterable[tuple[Sequence[str], str]]) -> list[str]:
    """Return the SPECIAL-USE attributes present in *listing*, in RFC 6154's order."""
    present = {flag.lower() for attributes, _name in listing for flag in attributes}
    return [attribute for attribute in SPECIAL_USES if attribute.lower() in present]


def _starts_with_prefix(name: str, namespace: Namespace) -> bool:
    prefix = namespace.prefix
    # the configured "/" stands for the separator in the prefix too ("INBOX/Processed")
    spelled = (
        prefix
        if namespace.separator is None
        else prefix.replace(namespace.separator, CONFIG_SEPARATOR)
    )
    for candidate in {prefix, spelled}:
        head = name[: len(candidate)]
        # INBOX is case-insensitive (RFC 3501 §5.1): "inbox.Processed" is under "INBOX."
        if head == candidate or (
            candidate.upper().startswith("INBOX") and head.upper() == candidate.upper()
        ):
            return len(name) > len(candidate)
    return False


def _with_separator(name: str, namespace: Namespace) -> str:
    """Replace the configured ``/`` with the namespace's separator."""
    separator = namespace.separator
    if separator is None:
        if CONFIG_SEPARATOR in name:
            raise FolderNameError(
                f"{name!r} has a {CONFIG_SEPARATOR!r}, but the server's folders have no hierarchy"
            )
        return name
    prefix_match = _prefix_as_written(name, namespace)
    if prefix_match:
        # keep the server's own spelling of the prefix ("INBOX."), then map the rest
        return namespace.prefix + name[len(prefix_match) :].replace(CONFIG_SEPARATOR, separator)
    return name.replace(CONFIG_SEPARATOR, separator)


def _prefix_as_written(name: str, namespace: Namespace) -> str:
    """Return how *name* spells *namespace*'s prefix, or "" when it does not start with it."""
    if not namespace.prefix or not _starts_with_prefix(name, namespace):
        return ""
    return name[: len(namespace.prefix)]
