"""Decide whether a notification really comes from an allowed sender domain (pure, no I/O).

Optional, off unless configured (docs/matching.md §7; docs/reliability.md §4.2,
checklist item 30). Our own receiving system authenticates the mail and records
the outcome in an ``Authentication-Results`` field at the top of the header. Only
the **top-most** field whose authserv-id is one we configured is read: anything
below it came from the outside and may be forged (RFC 8601 §5). The mail is trusted
when that field shows

* ``dmarc=pass`` with ``header.from`` equal to the mail's From domain, or
* ``dkim=pass`` with ``header.d`` in the same allowed domain as the From domain,

and the From domain is an allowed domain or a subdomain of one. SPF alone is never
enough. Anything unreadable, missing or contradictory is a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from inbox_poller.matching.authresults import (
    AuthResult,
    AuthResultsField,
    UnreadableField,
    leading_authserv_id,
    parse_field,
)
from inbox_poller.matching.headers import normal_domain
from inbox_poller.models import Notification

MICROSOFT_365 = "microsoft365"
"""The ``authserv_ids`` entry that accepts Microsoft 365's field, which has no authserv-id."""
_NO_DMARC_POLICY = frozenset({"none", "bestguesspass"})
"""DMARC results that say nothing either way (no DMARC record); DKIM may then decide."""


@dataclass(frozen=True)
class SenderPolicy:
    """Whose ``Authentication-Results`` to read, and which sender domains to accept."""

    authserv_ids: tuple[str, ...]
    """The authserv-ids our receiving system writes (``mx.google.com``), compared ignoring
    case; ``"microsoft365"`` accepts Microsoft 365's field shape."""
    domains: tuple[str, ...]
    """Allowed From domains; each also allows its subdomains (``mypinpointe.com``)."""

    def __post_init__(self) -> None:
        if not self.authserv_ids or any(not a.strip() or " " in a for a in self.authserv_ids):
            raise ValueError("authserv_ids must name at least one authserv-id, without spaces")
        for domain in self.domains:
            if normal_domain(domain.lstrip(".")) is None:
                raise ValueError(f"{domain!r} is not a domain name such as 'mypinpointe.com'")
        if not self.domains:
            raise ValueError("domains must name at least one allowed sender domain")


def check_sender(notification: Notification, policy: SenderPolicy) -> str | None:
    """Return None when the mail is authenticated for an allowed domain, else why not.

    The reason is one short sentence, safe to log: it quotes only validated domain
    names and authserv-ids, never raw header text.
    """
    field = _trusted_field(notification.auth_results, policy)
    if isinstance(field, str):
        return field
    domain = notification.from_domain
    if domain is None:
        return "the From header is missing, repeated or malformed"
    allowed = [a for a in _allowed(policy) if _within(domain, a)]
    if not allowed:
        return f"the From domain {domain} is not an allowed sender domain"
    return _dmarc_or_dkim(field, domain, allowed)


def _trusted_field(values: tuple[str, ...], policy: SenderPolicy) -> AuthResultsField | str:
    """Return the top-most field written by our receiving system, or why there is none."""
    ids = {a.strip().lower() for a in policy.authserv_ids}
    microsoft = MICROSOFT_365 in ids
    for value in values:
        try:
            field = parse_field(value)
        except UnreadableField as exc:
            claimed = leading_authserv_id(value)
            if claimed in ids or (claimed is None and microsoft):
                # ours, but damaged: never fall through to a lower (possibly forged) one
                whose = claimed or "Microsoft 365"
                return f"the Authentication-Results from {whose} is unreadable ({exc})"
            continue
        if field.authserv_id in ids or (field.authserv_id is None and microsoft):
            return field
    return f"no Authentication-Results from {', '.join(sorted(ids))}"


def _dmarc_or_dkim(field: AuthResultsField, domain: str, allowed: list[str]) -> str | None:
    dmarc = [r for r in field.results if r.method == "dmarc"]
    failed = sorted({r.result for r in dmarc} - _NO_DMARC_POLICY - {"pass"})
    if failed:
        return f"dmarc={failed[0]} for the From domain {domain}"
    passed = [r for r in dmarc if r.result == "pass"]
    if passed:
        header_from = {_property_domain(r, "header.from") for r in passed}
        if header_from == {domain}:
            return None
        return f"dmarc=pass is not for the From domain {domain}"
    if any(_aligned_dkim(r, allowed) for r in field.results):
        return None
    if any(r.method == "spf" and r.result == "pass" for r in field.results):
        return f"only SPF passed for {domain}, which is not enough"
    return f"no dmarc=pass and no aligned dkim=pass for {domain}"


def _aligned_dkim(result: AuthResult, allowed: list[str]) -> bool:
    """A DKIM signature that passed for a domain within the From domain's allowed domain."""
    if result.method != "dkim" or result.result != "pass":
        return False
    signer = _property_domain(result, "header.d") or _property_domain(result, "header.i")
    return signer is not None and any(_within(signer, a) for a in allowed)


def _property_domain(result: AuthResult, name: str) -> str | None:
    """Return the domain a property names (``example.com``, ``@example.com``, ``a@example.com``)."""
    value = result.prop(name)
    return None if value is None else normal_domain(value.rpartition("@")[2])


def _allowed(policy: SenderPolicy) -> list[str]:
    return [d for d in (normal_domain(a.lstrip(".")) for a in policy.domains) if d]


def _within(domain: str, allowed: str) -> bool:
    """*domain* is *allowed* or a subdomain of it (dot-bounded: never ``evil``+allowed)."""
    return domain == allowed or domain.endswith("." + allowed)
