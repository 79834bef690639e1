"""Which download URLs are acceptable, judged from the URL text alone (pure).

The address a host resolves to is checked separately, at connection time, by
``download.py``. Rules follow OWASP's SSRF guidance (docs/reliability.md §4.1):

* ``https`` only, no user info, no control characters or backslashes;
* the host must match an entry of ``download.allowed_hosts``:
  ``"host"`` is that exact host on port 443, ``"host:port"`` that host on that
  port, ``".domain"`` any subdomain of *domain* (not *domain* itself) on 443,
  ``".domain:port"`` the same on that port;
* an IP-literal URL is refused unless that exact address is an entry, so no
  suffix rule can ever admit an address;
* ``urllib.parse`` and a client must agree on the host (see below).

Two ways to split a URL
-----------------------
A client (browsers and urllib3, after the WHATWG URL Standard) ends the authority at
``/``, ``\\``, ``?`` or ``#`` and the user info at the last ``@`` before it;
``urllib.parse`` does not stop at ``\\``. So ``https://files.example\\@evil.example/``
is a request to ``files.example`` for a client, while ``urllib.parse`` sees the host
``evil.example`` behind the user info ``files.example\\``. :func:`view_url` splits a URL
the client's way and keeps what ``urllib.parse`` sees beside it; refusals and
:func:`redact_url` name the host a client would connect to, the other one when they
differ, and show user info as present (``https://<userinfo>@host/path``), never hide it
(docs/reliability.md §4.1, §4.5).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

DEFAULT_HTTPS_PORT = 443
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_EDGE_SPACE = "".join(map(chr, range(0x21)))  # C0 controls and space, stripped at both ends
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
_AUTHORITY_END = re.compile(r"[/\\?#]")
_PATH_END = re.compile(r"[?#]")
_SHOWN_HOST = re.compile(r"[a-z0-9._-]{1,253}|[0-9a-f:.]{2,45}")
"""A host worth naming as the one a client connects to (an ASCII name or an address)."""
_MAX_HOST_CHARS = 253


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


@dataclass(frozen=True)
class UrlView:
    """A URL split the way a client splits it (the WHATWG URL Standard; module docstring)."""

    scheme: str
    """Lower case."""
    userinfo: bool
    """The authority holds user info (before its last ``@``)."""
    host: str
    """The host a client would connect to: lower case, a Unicode name in its IDNA form,
    without brackets; as written when a client could not read it."""
    port: str
    """As written; empty when absent."""
    path: str
    """As written, up to the query or fragment."""
    query: bool
    fragment: bool
    lenient_host: str
    """The host ``urllib.parse`` sees, normalized the same way; empty when it sees none."""

    @property
    def differential(self) -> bool:
        """Whether ``urllib.parse`` sees another host than a client."""
        return self.lenient_host != self.host

    def where(self) -> str:
        """Name the host a client would connect to, and what ``urllib.parse`` sees if not that.

        Empty when a client could read no host at all.
        """
        if not _SHOWN_HOST.fullmatch(self.host):
            return ""
        seen = ""
        if self.differential:
            seen = f"; urllib.parse sees {self.lenient_host or 'no host'}"
        return f"a client would connect to {self.host}{seen}"


def _client_host(host: str) -> str:
    """Lower case, and a Unicode name in its IDNA (ASCII) form, as a client resolves it."""
    host = host.lower()
    if host.isascii() or len(host) > _MAX_HOST_CHARS:  # the length bounds the codec's work
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


@functools.lru_cache(maxsize=64)
def view_url(url: str) -> UrlView | None:
    """Split *url* as a client would (module docstring); None unless http(s), ws(s) or ftp.

    Cached: an export's link is checked and shown about nine times on its way (matching,
    the ledger, the download, the logs); the answer depends on the text alone and is
    frozen.
    """
    text = url.strip(_EDGE_SPACE).translate(_TAB_OR_NEWLINE)
    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        return None
    scheme = scheme_match.group()[:-1].lower()
    if scheme not in _SPECIAL_SCHEMES:
        return None
    rest = text[scheme_match.end() :].lstrip("/\\")
    end = _AUTHORITY_END.search(rest)
    authority, rest = (rest, "") if end is None else (rest[: end.start()], rest[end.start() :])
    _, at, host_port = authority.rpartition("@")
    if host_port.startswith("[") and "]" in host_port:
        host, _, after = host_port[1:].partition("]")
        port = after[1:] if after.startswith(":") else after
    else:
        host, _, port = host_port.partition(":")
    cut = _PATH_END.search(rest)
    path, after = (rest, "") if cut is None else (rest[: cut.start()], rest[cut.start() :])
    query, _, fragment = after.partition("#")
    try:
        lenient = urlsplit(url).hostname or ""
    except ValueError:
        lenient = ""
    return UrlView(
        scheme=scheme,
        userinfo=bool(at),
        host=_client_host(host),
        port=port,
        path=path,
        query=len(query) > 1,  # "?" and at least one byte
        fragment=bool(fragment),
        lenient_host=_client_host(lenient),
    )


def _with_where(reason: str, view: UrlView | None) -> str:
    where = view.where() if view is not None else ""
    return f"{reason} ({where})" if where else reason


def check_url(url: str, rules: tuple[HostRule, ...]) -> UrlTarget:
    """Return where *url* points if the policy allows it; raise :class:`UrlRefused` if not.

    A refusal names the host a client would have connected to, and the host
    ``urllib.parse`` sees when they differ (module docstring).
    """
    view = view_url(url)
    if _FORBIDDEN_URL_CHARS.search(url):
        reason = "the URL contains spaces, control characters or backslashes"
        raise UrlRefused(_with_where(reason, view))
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"the URL cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme != "https" or view is None:
        raise UrlRefused(f"not https (scheme {scheme or 'missing'!r})")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UrlRefused(_with_where("the URL carries user info", view))
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UrlRefused(_with_where("the URL has no host", view))
    if view.differential:
        raise UrlRefused(_with_where("the URL's host is ambiguous", view))
    effective_port = port if port is not None else DEFAULT_HTTPS_PORT
    literal = is_ip_literal(host)
    if literal:
        host = str(ipaddress.ip_address(host))
        if not any(not r.suffix and r.host == host and r.port == effective_port for r in rules):
            raise UrlRefused(f"the host is an IP address ({host}) that is not listed exactly")
    elif not _valid_host_name(host):
        raise UrlRefused(_host_name_refusal(host, view))
    if not any(rule.matches(host, effective_port) for rule in rules):
        where = host if effective_port == DEFAULT_HTTPS_PORT else f"{host}:{effective_port}"
        raise UrlRefused(f"host {where} is not in download.allowed_hosts")
    return UrlTarget(url=url, host=host, port=effective_port, ip_literal=literal)


def _host_name_refusal(host: str, view: UrlView) -> str:
    reason = "the host name is not a plain ASCII DNS name"
    if "%" in host and unquote(host) != host:
        return f"{reason} (it is percent-encoded: {host} reads {unquote(host)})"
    if not host.isascii() and view.host.isascii():
        return f"{reason} ({host}, which a client would look up as {view.host})"
    return reason


def redact_url(url: str) -> str:
    """Return ``scheme://[<userinfo>@]host[:port]/path[?…][#…]``: never the query,
    fragment or user info themselves, but always whether they are there.

    The host is the one a client would connect to (:func:`view_url`); the path is shown
    as written, so a URL that splits two ways shows its trick. Signed download links
    carry their credential in the query string, so this is the only form of a URL that
    may be logged or printed.
    """
    view = view_url(url)
    if view is None:
        return _redact_other(url)
    host = f"[{view.host}]" if ":" in view.host else view.host
    userinfo = "<userinfo>@" if view.userinfo else ""
    port = f":{view.port}" if view.port else ""
    query = "?…" if view.query else ""
    fragment = "#…" if view.fragment else ""
    return f"{view.scheme}://{userinfo}{host}{port}{view.path}{query}{fragment}"


def _redact_other(url: str) -> str:
    """:func:`redact_url` for a scheme a client does not split its way (``mailto:``...)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    userinfo = "<userinfo>@" if "@" in parts.netloc else ""
    suffix = ("?…" if parts.query else "") + ("#…" if parts.fragment else "")
    return f"{parts.scheme}://{userinfo}{netloc}{parts.path}{suffix}"
