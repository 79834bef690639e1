"""Which download URLs are acceptable, judged from the URL text alone (pure).

The address a host resolves to is checked separately, at connection time, by
``download.py``. Rules follow OWASP's SSRF guidance (docs/reliability.md §4.1):

* ``https`` only, no user info, no control characters or backslashes;
* the host must match an entry of ``download.allowed_hosts``:
  ``"host"`` is that exact host on port 443, ``"host:port"`` that host on that
  port, ``".domain"`` any subdomain of *domain* (not *domain* itself) on 443,
  ``".domain:port"`` the same on that port;
* an IP-literal URL is refused unless that exact address is an entry, so no
  suffix rule can ever admit an address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

DEFAULT_HTTPS_PORT = 443
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class HostRule:
    """One parsed ``allowed_hosts`` entry."""

    host: str
    """Lower-case host name or IP literal, without brackets or leading dot."""
    port: int
    suffix: bool
    """True for ``.domain`` entries: any subdomain matches."""

    def matches(self, host: str, port: int) -> bool:
        if port != self.port:
            return False
        if self.suffix:
            return host.endswith("." + self.host)
        return host == self.host

    def __str__(self) -> str:
        name = ("." if self.suffix else "") + (f"[{self.host}]" if ":" in self.host else self.host)
        return name if self.port == DEFAULT_HTTPS_PORT else f"{name}:{self.port}"


def is_ip_literal(host: str) -> bool:
    """Return whether *host* is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _valid_host_name(host: str) -> bool:
    if len(host) > 253 or not host:
        return False
    return all(_HOST_LABEL.match(label) for label in host.split("."))


def parse_host_rule(entry: str) -> HostRule:
    """Parse one ``allowed_hosts`` entry; raise ``ValueError`` with a sentence if invalid."""
    text = entry.strip().lower()
    if not text:
        raise ValueError("an empty host entry")
    if "/" in text or "@" in text or "://" in text:
        raise ValueError(f"{entry!r} is not a host: give a name such as 'files.example.com'")
    suffix = text.startswith(".")
    if suffix:
        text = text[1:]
    port = DEFAULT_HTTPS_PORT
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{entry!r}: unclosed '['")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r}: expected ':port' after ']'")
            port = _parse_port(rest[1:], entry)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _parse_port(port_text, entry)
    else:
        host = text
    if is_ip_literal(host):
        if suffix:
            raise ValueError(f"{entry!r}: a leading dot needs a domain name, not an address")
        return HostRule(str(ipaddress.ip_address(host)), port, suffix=False)
    if not _valid_host_name(host):
        raise ValueError(f"{entry!r} is not a valid host name")
    return HostRule(host, port, suffix)


def _parse_port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True)
class UrlTarget:
    """A URL that passed the policy: where to connect."""

    url: str
    host: str
    port: int
    ip_literal: bool


class UrlRefused(ValueError):
    """Raised by :func:`check_url` with the reason a URL is not acceptable."""


def check_url(url: str, rules: tuple[HostRule, ...]) -> UrlTarget:
    """Return where *url* points if the policy allows it; raise :class:`UrlRefused` if not."""
    if _FORBIDDEN_URL_CHARS.search(url):
        raise UrlRefused("the URL contains spaces, control characters or backslashes")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"the URL cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme != "https":
        raise UrlRefused(f"not https (scheme {scheme or 'missing'!r})")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UrlRefused("the URL carries user info")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UrlRefused("the URL has no host")
    effective_port = port if port is not None else DEFAULT_HTTPS_PORT
    literal = is_ip_literal(host)
    if literal:
        host = str(ipaddress.ip_address(host))
        if not any(not r.suffix and r.host == host and r.port == effective_port for r in rules):
            raise UrlRefused(f"the host is an IP address ({host}) that is not listed exactly")
    elif not _valid_host_name(host):
        raise UrlRefused("the host name is not a plain ASCII DNS name")
    if not any(rule.matches(host, effective_port) for rule in rules):
        where = host if effective_port == DEFAULT_HTTPS_PORT else f"{host}:{effective_port}"
        raise UrlRefused(f"host {where} is not in download.allowed_hosts")
    return UrlTarget(url=url, host=host, port=effective_port, ip_literal=literal)


def redact_url(url: str) -> str:
    """Return ``scheme://host[:port]/path``: never the query, fragment or user info.

    Signed download links carry their credential in the query string, so this is
    the only form of a URL that may be logged or printed.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    suffix = "?…" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{suffix}"
