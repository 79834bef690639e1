"""Configuration loading: the documented example, and clear errors naming file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inbox_poller.cli.program import main
from inbox_poller.config import OAuth2Config, load_config, resolve_config_path
from inbox_poller.errors import ConfigError
from tests.samples import MINIMAL

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


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
    assert config.exports.notify_deadline == 7200
    assert [schedule.name for schedule in config.schedules] == [
        "daily-contacts",
        "weekly-campaigns",
        "full-snapshot",
        "recent-sends-daily",  # issue 12: sends, another method, another format
        "segment-subscribers",
        "list-12-stats",
        "q1-2026",
    ]


def test_every_key_of_the_models_appears_in_the_example() -> None:
    from inbox_poller.config import _ConfigModel

    text = EXAMPLE.read_text(encoding="utf-8")
    assert "\n[[export]]\n" in text
    for section in _ConfigModel.key_names():
        if section == "export":
            continue
        assert f"[{section}]" in text
        table = _ConfigModel.table_at(section)
        assert table is not None
        for key in table.key_names():
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{section}.{key}"


def test_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.imap.folder == "INBOX"
    assert config.imap.processed_folder is None
    assert config.download.allow_private_addresses is False
    assert config.pinpointe.api_url.startswith("https://")


@pytest.mark.parametrize(
    ("section", "lines", "key", "message"),
    [
        ("imap", "port = 99999", "imap.port", "65535"),
        ("imap", "folderx = 'x'", "imap.folderx", "unknown key"),
        ("imap", "password_env = None", "imap", "exactly one of password_file"),
        ("imap", "password_file = '/x'", "imap", "exactly one"),
        ("imap", "host = '10.0.0.5'\nsecurity = 'plain'", "imap", "loopback"),
        ("imap", "security = 'ssl'", "imap.security", "tls"),
        ("imap", "processed_folder = 'INBOX'", "imap", "must differ"),
        ("pinpointe", "notify_email = 'nobody'", "pinpointe.notify_email", "pattern"),
        ("pinpointe", "api_url = 'http://pinpointe.example.com/'", "pinpointe.api_url", "https"),
        ("download", "allowed_hosts = ['https://x/']", "download.allowed_hosts", "not a host"),
        ("download", "allowed_hosts = []", "download.allowed_hosts", "at least one"),
        ("download", "max_bytes = 'big'", "download.max_bytes", "integer"),
        ("download", "retries = -1", "download.retries", "greater than or equal"),
        ("nonsense", "x = 1", "nonsense", "unknown section"),
        ("exports", "notify_deadline = 'soon'", "exports.notify_deadline", "not a duration"),
        ("imap", "poll_interval = 1", "imap.poll_interval", "greater than or equal to 5"),
        ("matching", "by_elimination = 'no'", "matching.by_elimination", "valid boolean"),
        ("matching", "by_elimination = 0", "matching.by_elimination", "valid boolean"),
        ("matching", "by_eliminaton = false", "matching.by_eliminaton", "unknown key"),
        ("metrics", "listen = '127.0.0.1:99999'", "metrics.listen", "host:port"),
        ("metrics", "listen = 'http://127.0.0.1:9464/'", "metrics.listen", "host:port"),
        ("metrics", "textfile = '/var/lib/node/inbox.txt'", "metrics.textfile", ".prom"),
        ("metrics", "labels = { '1st' = 'x' }", "metrics.labels", "not a Prometheus label"),
        ("metrics", "labels = { __name__ = 'x' }", "metrics.labels", "not a Prometheus label"),
    ],
)
def test_errors_name_the_file_and_key(
    tmp_path: Path, section: str, lines: str, key: str, message: str
) -> None:
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in MINIMAL.strip().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
        elif "=" in line:
            name, value = line.split("=", 1)
            sections[current][name.strip()] = value.strip()
    for line in lines.splitlines():
        name, value = line.split("=", 1)
        sections.setdefault(section, {})
        if value.strip() == "None":
            sections[section].pop(name.strip(), None)
        else:
            sections[section][name.strip()] = value.strip()
    text = "\n".join(
        f"[{name}]\n" + "\n".join(f"{k} = {v}" for k, v in body.items())
        for name, body in sections.items()
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text_of_error = str(caught.value)
    assert str(path) in text_of_error
    assert key in text_of_error
    assert message in text_of_error


def test_matching_by_elimination_is_on_unless_switched_off(tmp_path: Path) -> None:
    from inbox_poller.wiring import reader_settings

    config = load_config(_write(tmp_path, MINIMAL))
    assert config.matching.by_elimination is True
    assert reader_settings(config).by_elimination is True
    off = load_config(_write(tmp_path, MINIMAL + "\n[matching]\nby_elimination = false\n"))
    assert off.matching.by_elimination is False
    assert reader_settings(off).by_elimination is False


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


def test_the_example_documents_every_oauth2_key_and_its_oauth2_table_is_valid(
    tmp_path: Path,
) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in OAuth2Config.key_names():
        assert f"\n# {key} = " in text, f"imap.oauth2.{key}"
    # uncommented (with the password left out), the table is a valid configuration
    start = text.index("# [imap.oauth2]")
    table = text[start:].split("\n\n", 1)[0]
    wanted = (
        "provider",
        "grant",
        "client_id",
        "client_secret_file",
        "refresh_token_file",
        "tenant",
        "scope",
        "mechanism",
        "timeout_s",
    )
    enabled = "[imap.oauth2]\n" + "\n".join(
        line[2:]
        for line in table.splitlines()
        if re.match(r"# (" + "|".join(wanted) + r") = ", line)
    )
    changed = text.replace('auth = "password"', 'auth = "oauth2"').replace(
        'password_file = "/etc/inbox-poller/imap-password"', ""
    )
    changed = changed.replace(table, enabled)
    config = load_config(_write(tmp_path, changed))
    assert config.imap.oauth2 is not None
    assert config.imap.oauth2.effective_token_url == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert [s.key for s in config.imap_secrets] == [
        "imap.oauth2.client_secret",
        "imap.oauth2.refresh_token",
    ]


OAUTH2_BASE = """
[pinpointe]
username = "u"
usertoken_env = "T"
notify_email = "a@example.com"

[imap]
host = "imap.example.com"
username = "box@example.com"
"""


@pytest.mark.parametrize(
    ("imap", "oauth2", "message"),
    [
        ('auth = "oauth2"', None, 'auth = "oauth2" needs an [imap.oauth2] table'),
        ('auth = "oauth2"\npassword_env = "P"', 'provider = "google"', "takes no password"),
        ('password_env = "P"', 'provider = "google"', "used only with auth"),
        (
            'auth = "oauth2"',
            'provider = "generic"\nclient_id = "c"\nrefresh_token_env = "R"',
            "needs token_url",
        ),
        (
            'auth = "oauth2"',
            'provider = "google"\ngrant = "client_credentials"',
            'takes grant = "refresh_token" or "service_account"',
        ),
        (
            'auth = "oauth2"',
            'provider = "microsoft"\nclient_id = "c"',
            "needs exactly one of refresh_token_file or refresh_token_env",
        ),
        (
            'auth = "oauth2"',
            'provider = "microsoft"\ngrant = "client_credentials"\nclient_id = "c"\n'
            'client_secret_env = "S"',
            "needs tenant",
        ),
        (
            'auth = "oauth2"',
            'provider = "google"\ngrant = "service_account"',
            "needs service_account_file",
        ),
        (
            'auth = "oauth2"',
            'provider = "generic"\nclient_id = "c"\nrefresh_token_env = "R"\n'
            'token_url = "http://login.example/token"',
            "expected an https:// URL",
        ),
    ],
)
def test_oauth2_settings_are_checked_at_load(
    tmp_path: Path, imap: str, oauth2: str | None, message: str
) -> None:
    text = OAUTH2_BASE + imap + "\n"
    if oauth2 is not None:
        text += "\n[imap.oauth2]\n" + oauth2 + "\n"
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    assert message in str(error.value)
    assert "imap" in str(error.value)


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("9464", ("127.0.0.1", 9464)),  # a bare port stays on loopback
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),  # noqa: S104 (exposing it is a choice)
    ],
)
def test_metrics_listen_addresses(tmp_path: Path, listen: str, address: tuple[str, int]) -> None:
    text = MINIMAL + f'\n[metrics]\nlisten = "{listen}"\ntextfile = "node/ip.prom"\n'
    config = load_config(_write(tmp_path, text))
    assert config.metrics.address == address
    assert config.metrics_textfile == (tmp_path / "node" / "ip.prom").resolve()


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.metrics.address is None and config.metrics_textfile is None


# ---- every problem at once, with the right name suggested --------------------------------

RED_TEAM = """
[pinpointe]
username = "u@example.com"
notify_email = "nobody"

[imapp]
host = "imap.example.com"

[imap]
host = "imap.example.com"
port = 99999
username = "box@example.com"
password_env = "PASSWORD_VAR"
pasword_file = "imap-password"

[exprts]
notify_deadline = "2h"
"""


def test_every_problem_is_listed_with_the_right_name_suggested(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, RED_TEAM)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert sorted(caught.value.problems) == sorted(
        [
            (
                "pinpointe.notify_email",
                "String should match pattern '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$', got 'nobody'",
            ),
            (
                "pinpointe",
                "give exactly one of usertoken_file (a path) or usertoken_env (a variable name)",
            ),
            ("imap.port", "Input should be less than or equal to 65535, got 99999"),
            ("imap.pasword_file", "unknown key; did you mean password_file?"),
            ("[imapp]", "unknown section; did you mean [imap]?"),
            ("[exprts]", "unknown section; did you mean [exports]?"),
        ]
    )
    assert main(["-c", str(path), "exports"]) == 78
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"inbox-poller: configuration error: {path}: 6 problems:"
    assert "  [imapp]: unknown section; did you mean [imap]?" in err
    assert len(err) == 7


def test_a_missing_section_and_a_hopeless_name(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("[imap]", "[zzzz]"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert sorted(caught.value.problems) == [
        ("[zzzz]", "unknown section (check the spelling against config.example.toml)"),
        ("imap", "this section is required"),
    ]


def test_a_misspelt_key_in_an_export_table_is_matched_against_that_table(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[export]]\nname = "d"\nstat = "1"\ncron = "0 3 * * *"\nwindw = "x"\n'
    with pytest.raises(ConfigError, match=r"export\.0\.windw: unknown key; did you mean window\?"):
        load_config(_write(tmp_path, text))


def test_missing_ca_files_are_all_named(tmp_path: Path) -> None:
    text = MINIMAL.replace("[imap]", "[imap]\nca_file = 'a.pem'").replace(
        "[pinpointe]", "[pinpointe]\nca_file = 'b.pem'"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text))
    assert [key for key, _ in caught.value.problems] == ["pinpointe.ca_file", "imap.ca_file"]


# ---- secrets: the real file named, group- or world-readable files warned about -----------


def test_a_secret_error_names_the_config_file_and_the_file_really_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    text = MINIMAL.replace('usertoken_env = "TOKEN_VAR"', 'usertoken_file = "usertoken"')
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path).usertoken.read()
    assert str(caught.value) == (
        f"{path}: pinpointe.usertoken_file: cannot read the secret file {tmp_path}/usertoken "
        f"(not found in $CREDENTIALS_DIRECTORY {creds} either): No such file or directory"
    )
    real = tmp_path / "real-token"
    real.write_text("")
    (tmp_path / "usertoken").symlink_to(real)
    with pytest.raises(ConfigError, match=rf"usertoken \(a link to {real}\) .* is empty"):
        load_config(path).usertoken.read()
    monkeypatch.delenv("PASSWORD_VAR", raising=False)
    with pytest.raises(ConfigError, match=rf"^{path}: imap.password_env: the environment"):
        load_config(path).imap_password.read()


@pytest.mark.parametrize(
    ("mode", "who"),
    [
        (0o600, None),
        (0o400, None),
        (0o640, "its group"),
        (0o604, "others"),
        (0o644, "its group and others"),
    ],
)
def test_a_secret_file_readable_by_group_or_others_is_warned_about(
    tmp_path: Path, mode: int, who: str | None
) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(mode)
    text = MINIMAL.replace('usertoken_env = "TOKEN_VAR"', 'usertoken_file = "token"')
    config = load_config(_write(tmp_path, text))
    warning = config.usertoken.exposure()
    if who is None:
        assert warning is None
    else:
        assert warning == (
            f"pinpointe.usertoken: the secret file {token} is readable by {who} "
            f"(mode {mode:04o}): chmod 600 {token}"
        )
    assert config.imap_password.exposure() is None  # an environment variable


def test_run_warns_about_an_exposed_secret_in_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o644)
    text = MINIMAL.replace('usertoken_env = "TOKEN_VAR"', 'usertoken_file = "token"')
    # the refused submit (nothing on port 1) is enough to reach the warning
    text = text.replace("[pinpointe]", '[pinpointe]\napi_url = "https://127.0.0.1:1/x"')
    path = _write(tmp_path, text + f'\n[state]\npath = "{tmp_path / "s.db"}"\n')
    main(["-c", str(path), "submit", "--stat", "1"])
    assert f"WARNING inbox_poller.cli: pinpointe.usertoken: the secret file {token}" in (
        capsys.readouterr().err
    )


# ---- [hooks] -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://inbox@db.internal/x?sslmode=verify-full",
        "postgresql://inbox@db.internal/x?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
        "postgresql://inbox@127.0.0.1:5432/x",
        "postgresql://inbox@[::1]/x?sslmode=disable",
        "postgresql://inbox@localhost/x?sslmode=require",
        "postgresql:///x",
        "postgresql://inbox@%2Frun%2Fpostgresql/x",
        "postgresql://inbox@/x?host=/run/postgresql",
    ],
)
def test_state_url_without_verified_tls_only_to_this_machine(tmp_path: Path, url: str) -> None:
    config = load_config(_write(tmp_path, MINIMAL + f'\n[state]\nurl = "{url}"\n'))
    assert config.state_url == url


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('on_archived = ["load-export"]', "absolute path, got 'load-export'"),
        ('on_archived = ["/bin/true", ""]', "none of them empty"),
        ('on_archived = "/bin/true"', "valid tuple"),
        ('timeout = "forever"', "not a duration"),
        ("timeout = 0", "greater than 0"),
    ],
)
def test_hook_errors_name_the_key(tmp_path: Path, lines: str, message: str) -> None:
    with pytest.raises(ConfigError, match="hooks") as caught:
        load_config(_write(tmp_path, MINIMAL + "\n[hooks]\n" + lines + "\n"))
    assert message in str(caught.value)


def test_hooks_default_to_none(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.hooks.on_archived == ()
    assert config.hooks.timeout == 300


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)]
)
def test_durations(text: str, seconds: float) -> None:
    from inbox_poller.config import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 hours", "-1s", "1h30m", "2h\n\n3"])
def test_not_durations(text: str) -> None:
    from inbox_poller.config import parse_duration

    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


# ---- [state] url (issue 14: a PostgreSQL ledger) -------------------------------------------

PG_URL = "postgresql://inbox@db.internal:5433/inbox_poller?sslmode=verify-full"


def test_state_path_stays_the_default(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.state_path == Path("/var/lib/inbox-poller/state.db")
    assert config.state_url is None
    assert config.state_password is None
    assert config.state_location == "/var/lib/inbox-poller/state.db"


def test_state_url_with_a_password_file(tmp_path: Path) -> None:
    (tmp_path / "pg-password").write_text("s3cret-pg\n")
    (tmp_path / "pg-password").chmod(0o600)
    text = MINIMAL + f'\n[state]\nurl = "{PG_URL}"\npassword_file = "pg-password"\n'
    config = load_config(_write(tmp_path, text))
    assert config.state_url == PG_URL
    assert config.state_password is not None
    assert config.state_password.read() == "s3cret-pg"
    assert config.state_password in config.secrets
    assert config.state_location == PG_URL
    assert f"state {PG_URL};" in config.summary()
    shown = config.effective()["state"]
    assert shown["path"] is None
    assert shown["password_file"] == "pg-password"
    assert "s3cret-pg" not in repr(config.effective())


def test_state_url_with_a_password_env_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_PASS", "from-env")
    text = MINIMAL + f'\n[state]\nurl = "{PG_URL}"\npassword_env = "PG_PASS"\n'
    config = load_config(_write(tmp_path, text))
    assert config.state_password is not None
    assert config.state_password.read() == "from-env"
    bare = load_config(_write(tmp_path, MINIMAL + f'\n[state]\nurl = "{PG_URL}"\n'))
    assert bare.state_password is None  # libpq's .pgpass, PGPASSFILE or a client certificate


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            f'path = "/tmp/s.db"\nurl = "{PG_URL}"',
            "exactly one of path .a SQLite file. or url .PostgreSQL.",
        ),
        ('path = "/tmp/s.db"\npassword_file = "p"', "used only with url"),
        ('password_env = "P"', "used only with url"),
        (
            f'url = "{PG_URL}"\npassword_file = "p"\npassword_env = "P"',
            "at most one of password_file or password_env",
        ),
        ('url = "postgresql://inbox:hunter2@db/x"', "must not contain the password"),
        ('url = "postgresql://inbox@db/x?password=hunter2"', "must not contain the password"),
        ('url = "postgresql://inbox@db/x?sslpassword=hunter2"', "must not contain the password"),
        ('url = "mysql://inbox@db/x"', "must start with postgresql:// .got mysql scheme."),
        ('url = "/var/lib/state.db"', "must start with postgresql:// .got no scheme."),
        ('url = "postgresql://inbox@db"', "must name a database"),
        ('url = "postgresql://inbox@db:99999/x"', "not a valid URL"),
        (
            'url = "postgresql://inbox@db.internal/x"',
            "url reaches db.internal over the network with no sslmode .libpq's default, "
            "prefer.: add sslmode=verify-full&sslrootcert=/path/to/ca.pem",
        ),
        ('url = "postgresql://inbox@db.internal/x?sslmode=require"', "with sslmode=require: add"),
        ('url = "postgresql://inbox@10.0.0.5/x?sslmode=disable"', "reaches 10.0.0.5 "),
        (
            'url = "postgresql://inbox@localhost/x?host=db.internal&sslmode=prefer"',
            "reaches db.internal over",
        ),
        ('url = "postgresql://inbox@localhost/x?hostaddr=10.1.1.1"', "reaches 10.1.1.1 over"),
    ],
)
def test_state_errors_name_the_key(tmp_path: Path, lines: str, message: str) -> None:
    with pytest.raises(ConfigError, match="state") as caught:
        load_config(_write(tmp_path, MINIMAL + f"\n[state]\n{lines}\n"))
    assert re.search(message, str(caught.value)), str(caught.value)
    assert "hunter2" not in str(caught.value)
