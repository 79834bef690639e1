"""The one TOML file, turned into frozen, validated settings.

Validation happens once, at load, with pydantic; every error names the file,
the key and what was expected. Secrets are never inline: a ``*_file`` key names
a file (relative names are looked up in ``$CREDENTIALS_DIRECTORY`` when systemd
provides one, else next to the config file) and a ``*_env`` key names an
environment variable. They are read only when needed, and never printed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from inbox_poller.errors import ConfigError
from inbox_poller.matching.sender import SenderPolicy
from inbox_poller.schedules.table import ExportSchedule, ExportSchedules
from inbox_poller.urlpolicy import HostRule, parse_host_rule

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

    def __init__(self, key: str, *, file: str | None, env: str | None, base_dir: Path) -> None:
        self.key = key
        self._file = file
        self._env = env
        self._base_dir = base_dir

    def source(self) -> str:
        """Describe where the secret comes from, safe to print."""
        if self._file is not None:
            return f"file {self.path()}"
        return f"environment variable {self._env}"

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

    def read(self) -> str:
        """Return the secret; raise ``ConfigError`` naming the key if it cannot be read."""
        path = self.path()
        if path is not None:
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the secret file {path}: {exc.strerror}", key=f"{self.key}_file"
                ) from None
            if not value:
                raise ConfigError(f"the secret file {path} is empty", key=f"{self.key}_file")
            return value
        assert self._env is not None
        env_value = os.environ.get(self._env, "").strip()
        if not env_value:
            raise ConfigError(
                f"the environment variable {self._env} is not set or empty", key=f"{self.key}_env"
            )
        return env_value

    def __repr__(self) -> str:
        return f"Secret({self.key}: {self.source()})"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _one_secret(values: dict[str, Any], name: str) -> dict[str, Any]:
    has_file = values.get(f"{name}_file") is not None
    has_env = values.get(f"{name}_env") is not None
    if has_file == has_env:
        raise ValueError(
            f"give exactly one of {name}_file (a path) or {name}_env (a variable name)"
        )
    return values


PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")
_DURATION_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object) -> object:
    """Accept seconds as a number, or a string such as ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, str):
        found = _DURATION_RE.match(value)
        if not found:
            raise ValueError(f"{value!r} is not a duration: use seconds or '30m', '2h', '1d'")
        return float(found.group(1)) * _DURATION_UNIT_S[found.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0, le=366 * 86400)]


class PinpointeConfig(_Section):
    api_url: str = "https://na01.mypinpointe.com/apijson.php"
    username: str = Field(min_length=1)
    usertoken_file: str | None = None
    usertoken_env: str | None = None
    notify_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    ca_file: str | None = None
    timeout_s: PositiveSeconds = 60.0

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_token(cls, values: dict[str, Any]) -> dict[str, Any]:
        return _one_secret(values, "usertoken")

    @field_validator("api_url")
    @classmethod
    def _https_api(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
            return value
        raise ValueError("expected an https:// URL (http only to a loopback host)")


class ImapConfig(_Section):
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["tls", "starttls", "plain"] = "tls"
    username: str = Field(min_length=1)
    password_file: str | None = None
    password_env: str | None = None
    folder: str = Field(default="INBOX", min_length=1)
    processed_folder: str | None = None
    ca_file: str | None = None
    keyword: str = Field(default="$ExportArchived", pattern=r"^\$?[A-Za-z0-9_.-]{1,64}$")
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    timeout_s: PositiveSeconds = 30.0
    poll_interval: Duration = Field(default=60.0, ge=5)
    """Seconds between scheduled polls, which run even when IDLE pushes new mail."""

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_password(cls, values: dict[str, Any]) -> dict[str, Any]:
        return _one_secret(values, "password")

    @model_validator(mode="after")
    def _plain_only_on_loopback(self) -> ImapConfig:
        if self.security == "plain" and not is_loopback_host(self.host):
            raise ValueError(
                'security = "plain" is only allowed to a loopback host; use "tls" or "starttls"'
            )
        if self.processed_folder is not None and self.processed_folder == self.folder:
            raise ValueError("processed_folder must differ from folder")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 993 if self.security == "tls" else 143


class DownloadConfig(_Section):
    allowed_hosts: tuple[str, ...] = (".mypinpointe.com",)
    max_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1)
    allow_private_addresses: bool = False
    ca_file: str | None = None
    connect_timeout_s: PositiveSeconds = 10.0
    read_timeout_s: PositiveSeconds = 60.0
    deadline_s: PositiveSeconds = 3600.0
    retries: int = Field(default=3, ge=0, le=10)
    """Extra tries within one attempt on 5xx, 429, resets, timeouts and truncated bodies."""
    backoff_s: float = Field(default=1.0, ge=0, le=60)
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Attempts (passes) before a transiently failing download is marked failed."""

    @field_validator("allowed_hosts")
    @classmethod
    def _parse_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("expected at least one host")
        for entry in value:
            parse_host_rule(entry)
        return value

    @property
    def host_rules(self) -> tuple[HostRule, ...]:
        return tuple(parse_host_rule(entry) for entry in self.allowed_hosts)


class SenderConfig(_Section):
    authserv_ids: tuple[str, ...] = ()
    """authserv-ids of *your* receiving system's Authentication-Results headers (or
    "microsoft365"); empty turns sender authentication off."""
    domains: tuple[str, ...] = ()
    """Domains (and their subdomains) notifications may come from."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> SenderConfig:
        if bool(self.authserv_ids) != bool(self.domains):
            raise ValueError("give both authserv_ids and domains, or neither (check off)")
        if self.authserv_ids:
            SenderPolicy(self.authserv_ids, self.domains)
        return self

    @property
    def policy(self) -> SenderPolicy | None:
        return SenderPolicy(self.authserv_ids, self.domains) if self.authserv_ids else None


class MatchingConfig(_Section):
    by_elimination: StrictBool = True
    """A mail with no job ID may be matched to the only export waiting for one (weaker:
    see docs/matching.md §6); false leaves such mail unmatched."""


class ExportsConfig(_Section):
    notify_deadline: Duration = 7200.0
    """An export with no notification after this long is checked with AsyncJobStatus."""
    max_resubmits: int = Field(default=2, ge=0, le=10)
    """New requests made for one export whose job failed, vanished or whose link expired."""


class DaemonConfig(_Section):
    download_workers: int = Field(default=2, ge=1, le=8)


_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
_LISTEN_RE = re.compile(r"^(?:(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?(?P<port>[0-9]{1,5})\Z")


class MetricsConfig(_Section):
    listen: str | None = None
    """``host:port`` (or a bare port, on 127.0.0.1) to serve ``/metrics`` on; off when unset."""
    textfile: str | None = None
    """A ``*.prom`` file for node_exporter's textfile collector, replaced atomically."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every sample (tell several instances apart in one textfile directory)."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        found = _LISTEN_RE.match(value) if value is not None else None
        if value is not None and (not found or not 0 < int(found.group("port")) <= 65535):
            raise ValueError("expected host:port such as '127.0.0.1:9464', or a port")
        return value

    @field_validator("textfile")
    @classmethod
    def _prom_suffix(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".prom"):
            raise ValueError("node_exporter reads only files ending in .prom")
        return value

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _LABEL_NAME_RE.match(name) or name.startswith("__"):
                raise ValueError(f"{name!r} is not a Prometheus label name")
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) to listen on, host without brackets; None when off."""
        found = _LISTEN_RE.match(self.listen) if self.listen is not None else None
        if found is None:
            return None
        return (found.group("host") or "127.0.0.1").strip("[]"), int(found.group("port"))


class ArchiveConfig(_Section):
    dir: str = "/var/lib/inbox-poller/archive"
    group: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
    """Readers' group: payloads 0640 and directories 0750 owned by it (default: private)."""


class StateConfig(_Section):
    path: str = "/var/lib/inbox-poller/state.db"


class _ConfigModel(_Section):
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
        base = path.parent
        self.archive_dir = (base / Path(model.archive.dir).expanduser()).resolve()
        self.archive_group = model.archive.group
        self.state_path = (base / Path(model.state.path).expanduser()).resolve()
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
        )
        self.imap_password = Secret(
            "imap.password",
            file=model.imap.password_file,
            env=model.imap.password_env,
            base_dir=base,
        )
        self.pinpointe_ca = self._ca(model.pinpointe.ca_file, "pinpointe.ca_file")
        self.imap_ca = self._ca(model.imap.ca_file, "imap.ca_file")
        self.download_ca = self._ca(model.download.ca_file, "download.ca_file")

    def _ca(self, value: str | None, key: str) -> Path | None:
        if value is None:
            return None
        ca = (self.path.parent / Path(value).expanduser()).resolve()
        if not ca.is_file():
            raise ConfigError(f"no such CA file: {ca}", path=str(self.path), key=key)
        return ca

    def summary(self) -> str:
        """One line describing the effective configuration, without secrets."""
        return (
            f"config {self.path}: api {self.pinpointe.api_url} as {self.pinpointe.username}; "
            f"imap {self.imap.security}://{self.imap.host}:{self.imap.effective_port}/"
            f"{self.imap.folder} as {self.imap.username}; "
            f"downloads from {', '.join(self.download.allowed_hosts)}; "
            f"archive {self.archive_dir}; state {self.state_path}; "
            f"{len(self.schedules)} scheduled export(s)"
        )


def resolve_config_path(cli_path: str | None) -> Path:
    """Apply the lookup order: ``-c PATH``, then ``$INBOX_POLLER_CONFIG``, then /etc."""
    return Path(cli_path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _describe(error: ErrorDetails) -> tuple[str, str]:
    key = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling against config.example.toml)"
    elif error["type"] == "missing":
        message = "this key is required"
    elif "input" in error and not isinstance(error["input"], dict):
        message = f"{message}, got {error['input']!r}"
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
        model = _ConfigModel.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]
        key, message = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConfigError(message + more, path=str(path), key=key or None) from None
    return Config(model, path.resolve())
