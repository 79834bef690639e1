"""Configuration loading: the documented example, and clear errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from inbox_poller.cli import main
from inbox_poller.config import load_config, resolve_config_path
from inbox_poller.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"

MINIMAL = """
[pinpointe]
username = "u@example.com"
usertoken_env = "TOKEN_VAR"
notify_email = "box@example.com"

[imap]
host = "imap.example.com"
username = "box@example.com"
password_env = "PASSWORD_VAR"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_documents_a_valid_configuration() -> None:
    config = load_config(EXAMPLE)
    assert config.imap.effective_port == 993
    assert config.download.max_bytes == 4294967296
    assert [str(r) for r in config.download.host_rules] == [".mypinpointe.com"]
    assert config.archive_dir == Path("/var/lib/inbox-poller/archive")


def test_every_key_of_the_models_appears_in_the_example() -> None:
    from inbox_poller.config import _ConfigModel

    text = EXAMPLE.read_text(encoding="utf-8")
    for section, field in _ConfigModel.model_fields.items():
        assert f"[{section}]" in text
        assert field.annotation is not None
        for key in field.annotation.model_fields:  # type: ignore[union-attr]
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{section}.{key}"


def test_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.imap.folder == "INBOX"
    assert config.imap.processed_folder is None
    assert config.download.allow_private_addresses is False
    assert config.pinpointe.api_url.startswith("https://")


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (("port", "port = 99999\nport_x"), "imap.port", "65535"),
        (("folder", "folder = 'INBOX'\nfolderx = 1\nfolder"), "imap.folderx", "unknown key"),
        (('password_env = "PASSWORD_VAR"', ""), "imap", "exactly one of password_file"),
        (
            ('password_env = "PASSWORD_VAR"', "password_env = 'X'\npassword_file = '/x'"),
            "imap",
            "exactly one",
        ),
        (
            ('host = "imap.example.com"', "host = 'imap.example.com'\nsecurity = 'plain'"),
            "imap",
            "loopback",
        ),
        (("security", "security = 'ssl'\nsecurityx"), "imap.security", "tls"),
        (
            ('notify_email = "box@example.com"', "notify_email = 'nobody'"),
            "pinpointe.notify_email",
            "pattern",
        ),
        (
            ("[imap]", "[download]\nallowed_hosts = ['https://x/']\n[imap]"),
            "download.allowed_hosts",
            "not a host",
        ),
        (
            ("[imap]", "[download]\nallowed_hosts = []\n[imap]"),
            "download.allowed_hosts",
            "at least one",
        ),
        (("[imap]", "[download]\nmax_bytes = 'big'\n[imap]"), "download.max_bytes", "integer"),
        (
            ("usertoken_env", "api_url = 'http://pinpointe.example.com/'\nusertoken_env"),
            "pinpointe.api_url",
            "https",
        ),
    ],
)
def test_errors_name_the_file_and_key(
    tmp_path: Path, change: tuple[str, str], key: str, message: str
) -> None:
    old, new = change
    text = MINIMAL.replace(old, new, 1) if old in MINIMAL else MINIMAL + new
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text_of_error = str(caught.value)
    assert str(path) in text_of_error
    assert key in text_of_error
    assert message in text_of_error


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(_write(tmp_path, "[imap\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("[imap]", "[imap]\nca_file = 'nope.pem'"))
    with pytest.raises(ConfigError, match=r"imap\.ca_file.*nope\.pem"):
        load_config(path)


def test_secrets_from_files_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("tok-123\n", encoding="utf-8")
    text = MINIMAL.replace('usertoken_env = "TOKEN_VAR"', 'usertoken_file = "token"')
    config = load_config(_write(tmp_path, text))
    assert config.usertoken.read() == "tok-123"
    monkeypatch.setenv("PASSWORD_VAR", "pw-456")
    assert config.imap_password.read() == "pw-456"
    assert "pw-456" not in repr(config.imap_password)
    monkeypatch.delenv("PASSWORD_VAR")
    with pytest.raises(ConfigError, match="PASSWORD_VAR"):
        config.imap_password.read()


def test_credentials_directory_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "usertoken").write_text("from-systemd", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    text = MINIMAL.replace('usertoken_env = "TOKEN_VAR"', 'usertoken_file = "usertoken"')
    assert load_config(_write(tmp_path, text)).usertoken.read() == "from-systemd"


def test_lookup_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INBOX_POLLER_CONFIG", raising=False)
    assert resolve_config_path(None) == Path("/etc/inbox-poller/config.toml")
    monkeypatch.setenv("INBOX_POLLER_CONFIG", "/x/env.toml")
    assert resolve_config_path(None) == Path("/x/env.toml")
    assert resolve_config_path("/x/cli.toml") == Path("/x/cli.toml")


def test_cli_exits_78_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, MINIMAL.replace('host = "imap.example.com"', "host = 5"))
    assert main(["-c", str(path), "exports"]) == 78
    err = capsys.readouterr().err
    assert "imap.host" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
