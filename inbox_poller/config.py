"""The one TOML file, turned into frozen, validated settings.

Validation happens once, at load (``tomlschema``: frozen dataclasses, every problem
listed); every error names the file, the key and what was expected. Secrets are never
inline: a ``*_file`` key names a file (relative names are looked up in
``$CREDENTIALS_DIRECTORY`` when systemd provides one, else next to the config file) and a
``*_env`` key names an environment variable. They are read only when needed, and never printed.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from inbox_poller.errors import ConfigError
from inbox_poller.schedules.table import ExportSchedule, ExportSchedules
from inbox_poller.tomlschema import STRICT, After, Before, Limit, Problem, Table, TableError, dump
from inbox_poller.urlpolicy import HostRule, parse_host_rule

if typing.TYPE_CHECKING:
    from inbox_poller.matching.sender import SenderPolicy

DEFAULT_CONFIG_PATH = "/etc/inbox-poller/config.toml"
CONFIG_ENV = "INBOX_POLLER_CONFIG"
DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024**3
DEFAULT_MAX_MESSAGE_BYTES = 1024**2


def is_loopback_host(host: str) -> bool:
    """Return whether *host* names this machine (``localhost`` or a loopback address)."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Secret:
    """A secret read from a file or an environment variable; its value is never in a repr."""

    def __init__(
        self,
        key: str,
        *,
        file: str | None,
        env: str | None,
        base_dir: Path,
        config_path: Path | None = None,
    ) -> None:
        self.key = key
        self._file = file
        self._env = env
        self._base_dir = base_dir
        self._config_path = config_path
        """The file that names this secret, for error messages."""

    def source(self) -> str:
        """Describe where the secret comes from, safe to print."""
        if self._file is not None:
            return f"file {self.path()}"
        if self._env is None:
            return "nowhere (not configured)"
        return f"environment variable {self._env}"

    @property
    def configured(self) -> bool:
        """Whether a file or an environment variable is named for this secret."""
        return self._file is not None or self._env is not None

    def path(self) -> Path | None:
        if self._file is None:
            return None
        path = Path(self._file).expanduser()
        if path.is_absolute():
            return path
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds:
            candidate = Path(creds) / path
            try:
                if candidate.exists():
                    return candidate
            except OSError:
                return candidate  # unreadable: read() reports it as a configuration error
        return self._base_dir / path

    def _where(self, path: Path) -> str:
        """Name the file really tried: through a link, and after $CREDENTIALS_DIRECTORY."""
        shown = str(path)
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            real = path
        if real != path:
            shown += f" (a link to {real})"
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        relative = self._file is not None and not Path(self._file).is_absolute()
        if creds and relative and not path.is_relative_to(creds):
            shown += f" (not found in $CREDENTIALS_DIRECTORY {creds} either)"
        return shown

    def _error(self, message: str, key: str) -> ConfigError:
        config = str(self._config_path) if self._config_path is not None else None
        return ConfigError(message, path=config, key=key)

    def read(self) -> str:
        """Return the secret; raise ``ConfigError`` naming the config file, the key and
        the secret's own file if it cannot be read."""
        path = self.path()
        if path is not None:
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise self._error(
                    f"cannot read the secret file {self._where(path)}: {exc.strerror}",
                    f"{self.key}_file",
                ) from None
            if not value:
                raise self._error(
                    f"the secret file {self._where(path)} is empty", f"{self.key}_file"
                )
            return value
        if self._env is None:
            raise ConfigError("no file or environment variable is configured", key=self.key)
        env_value = os.environ.get(self._env, "").strip()
        if not env_value:
            raise self._error(
                f"the environment variable {self._env} is not set or empty", f"{self.key}_env"
            )
        return env_value

    def exposure(self) -> str | None:
        """Return a warning when the secret's file is readable by its group or others."""
        path = self.path()
        if path is None:
            return None
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            return None  # read() reports it
        if not mode & 0o044:
            return None
        who = " and ".join(w for bit, w in ((0o040, "its group"), (0o004, "others")) if mode & bit)
        return (
            f"{self.key}: the secret file {path} is readable by {who} (mode {mode:04o}): "
            f"chmod 600 {path}"
        )

    def __repr__(self) -> str:
        return f"Secret({self.key}: {self.source()})"


def _secret_problem(values: Mapping[str, object], name: str) -> str | None:
    """The rule of a section that names one secret by exactly one of ``*_file`` or ``*_env``."""
    has_file = values.get(f"{name}_file") is not None
    has_env = values.get(f"{name}_env") is not None
    if has_file == has_env:
        return f"give exactly one of {name}_file (a path) or {name}_env (a variable name)"
    return None


PositiveSeconds = Annotated[float, Limit(gt=0, le=86400)]

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_DURATION_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Return the seconds *text* means: a number of seconds, or ``"90s"``, ``"30m"``, ``"2h"``,
    ``"1d"``; raise ``ValueError`` saying what is expected."""
    found = _DURATION_RE.fullmatch(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration: use seconds or '30m', '2h', '1d'")
    return float(found.group(1)) * _DURATION_UNIT_S[found.group(2)]


def _duration(value: object) -> object:
    """Accept seconds as a number, or a string such as ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``."""
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[float, Before(_duration), Limit(gt=0, le=366 * 86400)]


def _https_api(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return value
    raise ValueError("expected an https:// URL (http only to a loopback host)")


@dataclass(frozen=True, kw_only=True)
class PinpointeConfig(Table):
    api_url: Annotated[str, After(_https_api)] = "https://na01.mypinpointe.com/apijson.php"
    username: Annotated[str, Limit(min_length=1)]
    usertoken_file: str | None = None
    usertoken_env: str | None = None
    notify_email: Annotated[str, Limit(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    ca_file: str | None = None
    timeout_s: PositiveSeconds = 60.0

    @classmethod
    def precheck(cls, raw: Mapping[str, object]) -> str | None:
        return _secret_problem(raw, "usertoken")


OAUTH2_DEFAULT_SCOPES = {
    (
        "microsoft",
        "refresh_token",
    ): "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    ("microsoft", "client_credentials"): "https://outlook.office365.com/.default",
    ("google", "refresh_token"): "https://mail.google.com/",
    ("google", "service_account"): "https://mail.google.com/",
}
"""The scope asked for when ``imap.oauth2.scope`` is not given (docs/providers.md)."""
OAUTH2_GRANTS = {
    "microsoft": ("refresh_token", "client_credentials"),
    "google": ("refresh_token", "service_account"),
    "generic": ("refresh_token", "client_credentials"),
}
MICROSOFT_LOGIN = "https://login.microsoftonline.com"
MICROSOFT_TOKEN_PATH = "/oauth2/v2.0/token"  # noqa: S105 (a URL path, not a secret)
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
GOOGLE_AUTHORIZATION_URL = "https://accounts.google.com/o/oauth2/v2/auth"


def _https_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("expected an https:// URL")
    return value


@dataclass(frozen=True, kw_only=True)
class OAuth2Config(Table):
    """``[imap.oauth2]``: how the IMAP login gets its access tokens (docs/providers.md)."""

    provider: Literal["microsoft", "google", "generic"]
    grant: Literal["refresh_token", "client_credentials", "service_account"] = "refresh_token"
    client_id: Annotated[str | None, Limit(min_length=1)] = None
    client_secret_file: str | None = None
    client_secret_env: str | None = None
    refresh_token_file: str | None = None
    refresh_token_env: str | None = None
    tenant: Annotated[str | None, Limit(pattern=r"^[A-Za-z0-9.-]{1,253}$")] = None
    service_account_file: str | None = None
    token_url: Annotated[str | None, After(_https_url)] = None
    authorization_url: Annotated[str | None, After(_https_url)] = None
    """Where ``inbox-poller auth login`` sends the person (google: derived; generic: required
    for ``auth login``)."""
    scope: str | None = None
    mechanism: Literal["auto", "xoauth2", "oauthbearer"] = "auto"
    ca_file: str | None = None
    timeout_s: PositiveSeconds = 30.0
    """The read timeout of each token request (the connect timeout is at most 10 s)."""

    def check(self) -> None:
        provider, grant = self.provider, self.grant
        if grant not in OAUTH2_GRANTS[provider]:
            allowed = " or ".join(f'"{g}"' for g in OAUTH2_GRANTS[provider])
            raise ValueError(f'provider "{provider}" takes grant = {allowed}, not "{grant}"')
        has_secret = [self.client_secret_file is not None, self.client_secret_env is not None]
        has_refresh = [self.refresh_token_file is not None, self.refresh_token_env is not None]
        if all(has_secret):
            raise ValueError("give one of client_secret_file or client_secret_env, not both")
        if grant == "refresh_token":
            if has_refresh.count(True) != 1:
                raise ValueError(
                    'grant = "refresh_token" needs exactly one of refresh_token_file or '
                    "refresh_token_env (run `inbox-poller auth login` to get the first one)"
                )
        elif any(has_refresh):
            raise ValueError(f'refresh_token_file/_env is not used with grant = "{grant}"')
        if grant == "client_credentials" and not any(has_secret):
            raise ValueError(
                'grant = "client_credentials" needs client_secret_file or client_secret_env'
            )
        if grant == "service_account":
            if self.service_account_file is None:
                raise ValueError('grant = "service_account" needs service_account_file')
        elif self.client_id is None:
            raise ValueError(f'grant = "{grant}" needs client_id')
        if self.service_account_file is not None and grant != "service_account":
            raise ValueError('service_account_file is only used with grant = "service_account"')
        if provider == "microsoft":
            if grant == "client_credentials" and self.tenant is None:
                raise ValueError(
                    'app-only access (grant = "client_credentials") needs tenant, '
                    'e.g. "contoso.onmicrosoft.com" or the tenant ID'
                )
            if self.token_url is not None and not urlsplit(self.token_url).path.endswith(
                MICROSOFT_TOKEN_PATH
            ):
                raise ValueError(f"a Microsoft token_url ends with {MICROSOFT_TOKEN_PATH}")
        elif self.tenant is not None:
            raise ValueError('tenant is only used with provider = "microsoft"')
        if provider == "generic" and self.token_url is None:
            raise ValueError('provider = "generic" needs token_url')

    @property
    def effective_scope(self) -> str:
        """The scope asked for: ``scope``, else the provider's default ("" for generic)."""
        if self.scope is not None:
            return self.scope
        return OAUTH2_DEFAULT_SCOPES.get((self.provider, self.grant), "")

    @property
    def effective_token_url(self) -> str | None:
        """The token endpoint; None for a Google service account without ``token_url`` (the
        key file's ``token_uri`` is used)."""
        if self.token_url is not None:
            return self.token_url
        if self.provider == "microsoft":
            return f"{MICROSOFT_LOGIN}/{self.tenant or 'organizations'}{MICROSOFT_TOKEN_PATH}"
        if self.provider == "google" and self.grant == "refresh_token":
            return GOOGLE_TOKEN_URL
        return None

    @property
    def effective_authorization_url(self) -> str | None:
        if self.authorization_url is not None:
            return self.authorization_url
        return GOOGLE_AUTHORIZATION_URL if self.provider == "google" else None


@dataclass(frozen=True, kw_only=True)
class ImapConfig(Table):
    host: Annotated[str, Limit(min_length=1)]
    port: Annotated[int | None, Limit(ge=1, le=65535)] = None
    security: Literal["tls", "starttls", "plain"] = "tls"
    username: Annotated[str, Limit(min_length=1)]
    auth: Literal["password", "oauth2"] = "password"
    password_file: str | None = None
    password_env: str | None = None
    oauth2: OAuth2Config | None = None
    folder: Annotated[str, Limit(min_length=1)] = "INBOX"
    processed_folder: str | None = None
    ca_file: str | None = None
    keyword: Annotated[str, Limit(pattern=r"^\$?[A-Za-z0-9_.-]{1,64}$")] = "$ExportArchived"
    max_message_bytes: Annotated[int, Limit(ge=1024)] = DEFAULT_MAX_MESSAGE_BYTES
    timeout_s: PositiveSeconds = 30.0
    poll_interval: Annotated[Duration, Limit(ge=5)] = 60.0
    """Seconds between scheduled polls, which run even when IDLE pushes new mail."""

    @classmethod
    def precheck(cls, raw: Mapping[str, object]) -> str | None:
        if raw.get("auth") == "oauth2":
            if raw.get("password_file") is not None or raw.get("password_env") is not None:
                return 'auth = "oauth2" takes no password_file or password_env'
            if not isinstance(raw.get("oauth2"), Mapping):
                return 'auth = "oauth2" needs an [imap.oauth2] table'
            return None
        if raw.get("oauth2") is not None:
            return '[imap.oauth2] is used only with auth = "oauth2"'
        return _secret_problem(raw, "password")

    def check(self) -> None:
        if self.security == "plain" and not is_loopback_host(self.host):
            raise ValueError(
                'security = "plain" is only allowed to a loopback host; use "tls" or "starttls"'
            )
        if self.processed_folder is not None and self.processed_folder == self.folder:
            raise ValueError("processed_folder must differ from folder")

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 993 if self.security == "tls" else 143


def _host_rules(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("expected at least one host")
    for entry in value:
        parse_host_rule(entry)
    return value


@dataclass(frozen=True, kw_only=True)
class DownloadConfig(Table):
    allowed_hosts: Annotated[tuple[str, ...], After(_host_rules)] = (".mypinpointe.com",)
    max_bytes: Annotated[int, Limit(ge=1)] = DEFAULT_MAX_PAYLOAD_BYTES
    allow_private_addresses: bool = False
    ca_file: str | None = None
    connect_timeout_s: PositiveSeconds = 10.0
    read_timeout_s: PositiveSeconds = 60.0
    deadline_s: PositiveSeconds = 3600.0
    retries: Annotated[int, Limit(ge=0, le=10)] = 3
    """Extra tries within one attempt on 5xx, 429, resets, timeouts and truncated bodies."""
    backoff_s: Annotated[float, Limit(ge=0, le=60)] = 1.0
    max_attempts: Annotated[int, Limit(ge=1, le=100)] = 5
    """Attempts (passes) before a transiently failing download is marked failed."""

    @property
    def host_rules(self) -> tuple[HostRule, ...]:
        return tuple(parse_host_rule(entry) for entry in self.allowed_hosts)


@dataclass(frozen=True, kw_only=True)
class SenderConfig(Table):
    authserv_ids: tuple[str, ...] = ()
    """authserv-ids of *your* receiving system's Authentication-Results headers (or
    "microsoft365"); empty turns sender authentication off."""
    domains: tuple[str, ...] = ()
    """Domains (and their subdomains) notifications may come from."""

    def check(self) -> None:
        if bool(self.authserv_ids) != bool(self.domains):
            raise ValueError("give both authserv_ids and domains, or neither (check off)")
        if self.authserv_ids:
            self._build_policy()

    @property
    def policy(self) -> SenderPolicy | None:
        return self._build_policy() if self.authserv_ids else None

    def _build_policy(self) -> SenderPolicy:
        # imported here: only reading mail needs it, and matching/ imports the email package
        from inbox_poller.matching.sender import SenderPolicy

        return SenderPolicy(self.authserv_ids, self.domains)


@dataclass(frozen=True, kw_only=True)
class MatchingConfig(Table):
    by_elimination: Annotated[bool, STRICT] = True
    """A mail with no job ID may be matched to the only export waiting for one (weaker:
    see docs/matching.md §6); false leaves such mail unmatched."""


@dataclass(frozen=True, kw_only=True)
class ExportsConfig(Table):
    notify_deadline: Duration = 7200.0
    """An export with no notification after this long is checked with AsyncJobStatus."""
    max_resubmits: Annotated[int, Limit(ge=0, le=10)] = 2
    """New requests made for one export whose job failed, vanished or whose link expired."""


@dataclass(frozen=True, kw_only=True)
class DaemonConfig(Table):
    download_workers: Annotated[int, Limit(ge=1, le=8)] = 2
    """Downloads at once: the daemon's pool, and ``run --once`` for a backlog."""


_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
_LISTEN_RE = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?(?P<port>[0-9]{1,5})\Z")


def _host_port(value: str) -> str:
    found = _LISTEN_RE.match(value)
    if not found or not 0 < int(found.group("port")) <= 65535:
        raise ValueError("expected host:port such as '127.0.0.1:9464', or a port")
    return value


def _prom_suffix(value: str) -> str:
    if not value.endswith(".prom"):
        raise ValueError("node_exporter reads only files ending in .prom")
    return value


def _label_names(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not _LABEL_NAME_RE.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a Prometheus label name")
    return value


@dataclass(frozen=True, kw_only=True)
class MetricsConfig(Table):
    listen: Annotated[str | None, After(_host_port)] = None
    """``host:port`` (or a bare port, on 127.0.0.1) to serve ``/metrics`` on; off when unset."""
    textfile: Annotated[str | None, After(_prom_suffix)] = None
    """A ``*.prom`` file for node_exporter's textfile collector, replaced atomically."""
    labels: Annotated[dict[str, str], After(_label_names)] = field(default_factory=dict)
    """Labels added to every sample (tell several instances apart in one textfile directory)."""

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) to listen on, host without brackets; None when off."""
        found = _LISTEN_RE.match(self.listen) if self.listen is not None else None
        if found is None:
            return None
        return (found.group("host") or "127.0.0.1").strip("[]"), int(found.group("port"))


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_PREFIX_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._=-]{1,200}\Z")
_REGION_RE = re.compile(r"^[a-z0-9-]{1,40}\Z")
_S3_ONLY_KEYS = (
    "endpoint_url",
    "region",
    "access_key_id_file",
    "access_key_id_env",
    "secret_access_key_file",
    "secret_access_key_env",
    "ca_file",
    "addressing_style",
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """Return (bucket, prefix) of ``s3://bucket/prefix``; the prefix has no slash at either
    end and may be empty. Raise ``ValueError`` saying what is expected."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"expected s3://bucket/prefix, got {url!r}")
    bucket = parts.netloc
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, dots "
            "and hyphens)"
        )
    prefix = parts.path.strip("/")
    segments = prefix.split("/") if prefix else []
    for segment in segments:
        if segment in (".", "..") or not _PREFIX_SEGMENT_RE.match(segment):
            raise ValueError(
                f"the prefix {prefix!r} has a bad segment {segment!r} (letters, digits and "
                "._=- only, no empty, '.' or '..' segment)"
            )
    return bucket, prefix


def _s3_url(value: str) -> str:
    parse_s3_url(value)
    return value


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise ValueError(
            f"expected an https:// URL, got {value!r} (credentials and payloads travel over it)"
        )
    if not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"expected https://host[:port] and nothing else, got {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("put no credentials in endpoint_url: use access_key_id_file/_env")
    try:
        parts.port  # noqa: B018 (parsing it raises on a bad port)
    except ValueError:
        raise ValueError(f"{value!r} has a bad port") from None
    return value


def _region(value: str) -> str:
    if not _REGION_RE.match(value):
        raise ValueError(f"{value!r} is not a region name such as 'eu-central-1'")
    return value


@dataclass(frozen=True, kw_only=True)
class ArchiveConfig(Table):
    dir: str = "/var/lib/inbox-poller/archive"
    group: Annotated[str | None, Limit(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")] = None
    """Readers' group: payloads 0640 and directories 0750 owned by it (default: private)."""
    url: Annotated[str | None, After(_s3_url)] = None
    """``s3://bucket/prefix``: archive to an S3 bucket instead of ``dir`` (issue 14)."""
    endpoint_url: Annotated[str | None, After(_endpoint)] = None
    """An S3-compatible endpoint (``https://host:port``); omitted for AWS."""
    region: Annotated[str | None, After(_region)] = None
    access_key_id_file: str | None = None
    access_key_id_env: str | None = None
    secret_access_key_file: str | None = None
    secret_access_key_env: str | None = None
    ca_file: str | None = None
    """An extra trust anchor for the endpoint, beside the system CAs."""
    addressing_style: Literal["path", "virtual"] | None = None
    """Default: ``path`` when ``endpoint_url`` names an IP address, else boto3's choice."""

    @classmethod
    def precheck(cls, raw: Mapping[str, object]) -> str | None:
        if "dir" in raw and raw.get("url") is not None:
            return 'give exactly one of dir (a directory) or url ("s3://bucket/prefix")'
        return None

    def check(self) -> None:
        if self.url is None:
            given = [key for key in _S3_ONLY_KEYS if getattr(self, key) is not None]
            if given:
                raise ValueError(f'{", ".join(given)}: only used with url = "s3://…"')
            return
        if self.group is not None:
            raise ValueError("group is for an archive directory; an S3 archive has no group")
        named = {
            name: (getattr(self, f"{name}_file"), getattr(self, f"{name}_env"))
            for name in ("access_key_id", "secret_access_key")
        }
        for name, (file, env) in named.items():
            if file is not None and env is not None:
                raise ValueError(f"give one of {name}_file or {name}_env, not both")
        given = [name for name, pair in named.items() if pair != (None, None)]
        if len(given) == 1:
            other = "secret_access_key" if given[0] == "access_key_id" else "access_key_id"
            raise ValueError(
                f"{given[0]} is named but not {other}: name both (each by _file or _env), "
                "or neither for the standard AWS credential chain"
            )

    @property
    def path_style(self) -> bool:
        """Whether requests name the bucket in the path (``addressing_style``, else an IP
        endpoint)."""
        if self.addressing_style is not None:
            return self.addressing_style == "path"
        host = urlsplit(self.endpoint_url).hostname if self.endpoint_url else None
        if host is None:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True


DEFAULT_STATE_PATH = "/var/lib/inbox-poller/state.db"

_PG_SCHEMES = ("postgresql", "postgres")


def _postgres_url_problem(url: str) -> str | None:
    """Say what is wrong with a ``[state] url`` (None when nothing is).

    The URL is logged and shown (``config show``, ``status``), so it must not carry the
    password: that is ``password_file``/``password_env`` or libpq's ``.pgpass``.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        return f"url is not a valid URL: {exc}"
    if parts.scheme not in _PG_SCHEMES:
        return f"url must start with postgresql:// (got {parts.scheme or 'no'} scheme)"
    if parts.password is not None or re.search(r"(^|&)(ssl)?password=", parts.query):
        return (
            "url must not contain the password (it would be logged): "
            "use password_file, password_env or a .pgpass file"
        )
    if not parts.path.strip("/"):
        return "url must name a database: postgresql://user@host/DATABASE"
    return _postgres_tls_problem(parts.hostname or "", parse_qs(parts.query))


_PG_VERIFYING = ("verify-full", "verify-ca")


def _postgres_tls_problem(netloc_host: str, query: dict[str, list[str]]) -> str | None:
    """Refuse a network ledger whose TLS does not verify the server (secure by default).

    libpq's default, ``sslmode=prefer``, falls back to plain text without a word, and
    ``require`` encrypts to anyone who answers. As ``[imap] security = "plain"``, an
    unverified connection is allowed only to this machine: a loopback host or a unix
    socket (a host that is a directory, ``/run/postgresql``, or none at all).
    """
    hosts = [h for value in query.get("host", []) for h in value.split(",")] or [netloc_host]
    hosts += [h for value in query.get("hostaddr", []) for h in value.split(",")]
    remote = [h for h in (unquote(h).strip() for h in hosts) if h and not h.startswith(("/", "@"))]
    remote = [h for h in remote if not is_loopback_host(h)]
    sslmode = (query.get("sslmode") or [""])[-1]
    if not remote or sslmode in _PG_VERIFYING:
        return None
    given = f"sslmode={sslmode}" if sslmode else "no sslmode (libpq's default, prefer)"
    return (
        f"url reaches {remote[0]} over the network with {given}: add "
        "sslmode=verify-full&sslrootcert=/path/to/ca.pem to its query, so the connection is "
        "encrypted and the server verified (without, only to a loopback host or a unix socket)"
    )


@dataclass(frozen=True, kw_only=True)
class StateConfig(Table):
    """The ledger: a SQLite file (``path``, the default) or PostgreSQL (``url``)."""

    path: str | None = None
    url: str | None = None
    """``postgresql://user@host[:port]/database[?sslmode=verify-full&sslrootcert=…]``."""
    password_file: str | None = None
    password_env: str | None = None

    def check(self) -> None:
        if self.path is not None and self.url is not None:
            raise ValueError("give exactly one of path (a SQLite file) or url (PostgreSQL)")
        if self.url is None:
            if self.password_file is not None or self.password_env is not None:
                raise ValueError("password_file and password_env are used only with url")
            return
        if self.password_file is not None and self.password_env is not None:
            raise ValueError(
                "give at most one of password_file or password_env "
                "(or neither, for a .pgpass file or a client certificate)"
            )
        problem = _postgres_url_problem(self.url)
        if problem is not None:
            raise ValueError(problem)


def _program(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        return value
    if any(not part or "\0" in part for part in value):
        raise ValueError("expected a program and its arguments, none of them empty")
    if not Path(value[0]).is_absolute():
        raise ValueError(
            f"expected the program as an absolute path, got {value[0]!r} "
            "(hooks run without a shell and without $PATH)"
        )
    return value


@dataclass(frozen=True, kw_only=True)
class HooksConfig(Table):
    on_archived: Annotated[tuple[str, ...], After(_program)] = ()
    """A program and its arguments (no shell), run after each export is archived with its
    manifest line on stdin (docs/hooks.md); empty for none."""
    timeout: Annotated[Duration, Limit(le=86400)] = 300.0
    """How long one run of a hook may take before it is killed (and retried)."""


@dataclass(frozen=True, kw_only=True)
class _ConfigModel(Table):
    pinpointe: PinpointeConfig
    imap: ImapConfig
    download: DownloadConfig = DownloadConfig()
    archive: ArchiveConfig = ArchiveConfig()
    state: StateConfig = StateConfig()
    exports: ExportsConfig = ExportsConfig()
    daemon: DaemonConfig = DaemonConfig()
    sender: SenderConfig = SenderConfig()
    matching: MatchingConfig = MatchingConfig()
    metrics: MetricsConfig = MetricsConfig()
    hooks: HooksConfig = HooksConfig()
    export: ExportSchedules = ()


class Config:
    """The validated configuration, sliced per component, with secrets resolvable."""

    def __init__(self, model: _ConfigModel, path: Path) -> None:
        self.path = path
        self.pinpointe = model.pinpointe
        self.imap = model.imap
        self.download = model.download
        self.exports = model.exports
        self.daemon = model.daemon
        self.schedules: tuple[ExportSchedule, ...] = model.export
        self.sender_policy = model.sender.policy
        self.matching = model.matching
        self.hooks = model.hooks
        self._model = model
        base = path.parent
        self.archive_dir = (base / Path(model.archive.dir).expanduser()).resolve()
        self.archive_group = model.archive.group
        self.archive_s3 = self._s3_archive(model.archive, base)
        self.state_path = (
            base / Path(model.state.path or DEFAULT_STATE_PATH).expanduser()
        ).resolve()
        """The SQLite ledger; with ``state_url``, only its directory is used (local state)."""
        self.state_url = model.state.url
        """The PostgreSQL ledger's URL (never with a password), or None for SQLite."""
        self.state_password: Secret | None = None
        """The PostgreSQL password, when ``[state]`` names one (else libpq's ``.pgpass``)."""
        if model.state.password_file is not None or model.state.password_env is not None:
            self.state_password = Secret(
                "state.password",
                file=model.state.password_file,
                env=model.state.password_env,
                base_dir=base,
                config_path=path,
            )
        self.metrics = model.metrics
        self.metrics_textfile = (
            (base / Path(model.metrics.textfile).expanduser()).resolve()
            if model.metrics.textfile
            else None
        )
        self.usertoken = Secret(
            "pinpointe.usertoken",
            file=model.pinpointe.usertoken_file,
            env=model.pinpointe.usertoken_env,
            base_dir=base,
            config_path=path,
        )
        self.imap_password = Secret(
            "imap.password",
            file=model.imap.password_file,
            env=model.imap.password_env,
            base_dir=base,
            config_path=path,
        )
        missing: list[tuple[str | None, str]] = []
        self.pinpointe_ca = self._ca(model.pinpointe.ca_file, "pinpointe.ca_file", missing)
        self.imap_ca = self._ca(model.imap.ca_file, "imap.ca_file", missing)
        self.oauth2 = self._oauth2(model.imap.oauth2, base, missing)
        self.download_ca = self._ca(model.download.ca_file, "download.ca_file", missing)
        if self.archive_s3 is not None:
            self.archive_s3 = replace(
                self.archive_s3,
                ca_file=self._ca(model.archive.ca_file, "archive.ca_file", missing),
            )
        if missing:
            raise ConfigError.listing(missing, path=str(self.path))

    def _oauth2(
        self, oauth2: OAuth2Config | None, base: Path, missing: list[tuple[str | None, str]]
    ) -> OAuth2Secrets | None:
        if oauth2 is None:
            return None
        return OAuth2Secrets(
            client_secret=Secret(
                "imap.oauth2.client_secret",
                file=oauth2.client_secret_file,
                env=oauth2.client_secret_env,
                base_dir=base,
                config_path=self.path,
            ),
            refresh_token=Secret(
                "imap.oauth2.refresh_token",
                file=oauth2.refresh_token_file,
                env=oauth2.refresh_token_env,
                base_dir=base,
                config_path=self.path,
            ),
            service_account=Secret(
                "imap.oauth2.service_account",
                file=oauth2.service_account_file,
                env=None,
                base_dir=base,
                config_path=self.path,
            ),
            ca_file=self._ca(oauth2.ca_file, "imap.oauth2.ca_file", missing),
        )

    def _s3_archive(self, archive: ArchiveConfig, base: Path) -> S3ArchiveSettings | None:
        if archive.url is None:
            return None
        bucket, prefix = parse_s3_url(archive.url)
        keys: list[Secret] = []
        for name in ("access_key_id", "secret_access_key"):
            file, env = getattr(archive, f"{name}_file"), getattr(archive, f"{name}_env")
            if file is not None or env is not None:
                keys.append(
                    Secret(
                        f"archive.{name}", file=file, env=env, base_dir=base, config_path=self.path
                    )
                )
        return S3ArchiveSettings(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=archive.endpoint_url,
            region=archive.region,
            access_key_id=keys[0] if keys else None,
            secret_access_key=keys[1] if keys else None,
            ca_file=None,
            path_style=archive.path_style,
        )

    def archive_location(self, relative: str) -> str:
        """Where the archive's *relative* path is: a file under ``archive.dir``, or
        ``s3://bucket/prefix/<relative>``."""
        if self.archive_s3 is not None:
            return f"{self.archive_s3.url}/{relative}"
        return str(self.archive_dir / relative)

    @property
    def imap_secrets(self) -> tuple[Secret, ...]:
        """The secrets the IMAP login reads: the password, or those OAuth2 needs."""
        if self.oauth2 is None:
            return (self.imap_password,)
        return self.oauth2.secrets()

    def _ca(
        self, value: str | None, key: str, missing: list[tuple[str | None, str]]
    ) -> Path | None:
        if value is None:
            return None
        ca = (self.path.parent / Path(value).expanduser()).resolve()
        if not ca.is_file():
            missing.append((key, f"no such CA file: {ca}"))
        return ca

    @property
    def secrets(self) -> tuple[Secret, ...]:
        """Every secret the configuration names."""
        state = () if self.state_password is None else (self.state_password,)
        s3 = self.archive_s3.secrets() if self.archive_s3 is not None else ()
        return (self.usertoken, self.imap_password, *state, *s3)

    def effective(self) -> dict[str, Any]:
        """Return the configuration as it is used: every key, defaults filled in, paths
        resolved; secrets are named by where they are read from, never by their value,
        and any value under a key that names a secret inline is redacted."""
        data = dump(self._model)
        if self.archive_s3 is None:
            data["archive"]["dir"] = str(self.archive_dir)
        else:
            del data["archive"]["dir"]  # exactly one of dir and url is used
            if self.archive_s3.ca_file is not None:
                data["archive"]["ca_file"] = str(self.archive_s3.ca_file)
        if self.state_url is None:
            data["state"]["path"] = str(self.state_path)
        for section, ca in (
            ("pinpointe", self.pinpointe_ca),
            ("imap", self.imap_ca),
            ("download", self.download_ca),
        ):
            if ca is not None:
                data[section]["ca_file"] = str(ca)
        redacted: dict[str, Any] = _redact(data)
        return redacted

    def summary(self) -> str:
        """One line describing the effective configuration, without secrets."""
        return (
            f"config {self.path}: api {self.pinpointe.api_url} as {self.pinpointe.username}; "
            f"imap {self.imap.security}://{self.imap.host}:{self.imap.effective_port}/"
            f"{self.imap.folder} as {self.imap.username}"
            f"{self._auth_summary()}; "
            f"downloads from {', '.join(self.download.allowed_hosts)}; "
            f"archive {self.archive_s3.url if self.archive_s3 else self.archive_dir}; "
            f"state {self.state_location}; "
            f"{len(self.schedules)} scheduled export(s)"
            + (f"; hook on_archived {self.hooks.on_archived[0]}" if self.hooks.on_archived else "")
        )

    def _auth_summary(self) -> str:
        oauth2 = self.imap.oauth2
        if oauth2 is None:
            return ""
        return f" (OAuth2: {oauth2.provider} {oauth2.grant}, {oauth2.mechanism})"

    @property
    def state_location(self) -> str:
        """Where the ledger is, safe to print: its file, or its URL (which has no password)."""
        return self.state_url if self.state_url is not None else str(self.state_path)

    @property
    def state_dir(self) -> Path:
        """The directory of the ledger, where the daemon keeps its other state too."""
        return self.state_path.parent


@dataclass(frozen=True)
class S3ArchiveSettings:
    """``[archive] url`` and what an S3 client needs; the keys are read only when used."""

    bucket: str
    prefix: str
    """No slash at either end; empty for the bucket's top."""
    endpoint_url: str | None
    region: str | None
    access_key_id: Secret | None
    """With :attr:`secret_access_key`, or both None: the standard AWS credential chain."""
    secret_access_key: Secret | None
    ca_file: Path | None
    """Trusted beside the system CAs."""
    path_style: bool

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(s for s in (self.access_key_id, self.secret_access_key) if s is not None)


@dataclass(frozen=True)
class OAuth2Secrets:
    """The secrets and the CA file of ``[imap.oauth2]``, resolved like every other secret."""

    client_secret: Secret
    refresh_token: Secret
    service_account: Secret
    ca_file: Path | None

    def secrets(self) -> tuple[Secret, ...]:
        """The configured ones, in a fixed order."""
        return tuple(
            s
            for s in (self.client_secret, self.refresh_token, self.service_account)
            if s.configured
        )


REDACTED = "<redacted>"
_SECRET_KEY_RE = re.compile(r"(password|token|secret|credential)", re.IGNORECASE)
"""Keys whose value would be a secret, unless they only name where it is (``*_file``,
``*_env``)."""


def _redact(value: Any, key: str = "") -> Any:
    """Return *value* with every secret-looking value replaced by :data:`REDACTED`.

    A value under a key such as ``password`` or ``client_secret`` is a secret; one under
    ``password_file`` or ``usertoken_env`` only says where the secret is. URLs lose
    their user information and query (which may carry a token).
    """
    if isinstance(value, dict):
        return {name: _redact(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_redact(item, key) for item in value]
    if key and _SECRET_KEY_RE.search(key) and not key.endswith(("_file", "_env")):
        return REDACTED if value is not None else None
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None or parts.query:
            host = parts.netloc.rpartition("@")[2]
            query = f"?{REDACTED}" if parts.query else ""
            return f"{parts.scheme}://{host}{parts.path}{query}"
    return value


def resolve_config_path(cli_path: str | None) -> Path:
    """Apply the lookup order: ``-c PATH``, then ``$INBOX_POLLER_CONFIG``, then /etc."""
    return Path(cli_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _suggestion(name: str, known: tuple[str, ...], *, section: bool) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean [{close[0]}]?" if section else f"; did you mean {close[0]}?"


def _describe(problem: Problem) -> tuple[str, str]:
    key = ".".join(str(part) for part in problem.loc)
    message = problem.message
    if problem.kind == "unknown":
        is_section = len(problem.loc) == 1 and isinstance(problem.value, Mapping)
        message = "unknown section" if is_section else "unknown key"
        if is_section:
            key = f"[{key}]"
        hint = _suggestion(str(problem.loc[-1]), problem.known, section=is_section)
        message += hint or " (check the spelling against config.example.toml)"
    elif problem.kind == "missing":
        message = "this section is required" if problem.table else "this key is required"
    elif not isinstance(problem.value, Mapping):
        message = f"{message}, got {problem.value!r}"
    return key, message


def load_config(path: Path) -> Config:
    """Read and validate *path*; raise ``ConfigError`` naming the file and key on any problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "no such file (use -c PATH or $INBOX_POLLER_CONFIG)", path=str(path)
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=str(path)) from None
    try:
        model = _ConfigModel.parse(data)
    except TableError as exc:
        problems = [_describe(problem) for problem in exc.problems]
        raise ConfigError.listing(
            [(key or None, message) for key, message in problems], path=str(path)
        ) from None
    return Config(model, path.resolve())
