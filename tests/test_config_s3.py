"""``[archive] url``: an S3 archive instead of a directory (issue 14), validated at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from inbox_poller.cli.program import main
from inbox_poller.config import Config, load_config, parse_s3_url
from inbox_poller.errors import ConfigError
from tests.samples import MINIMAL


def _load(tmp_path: Path, archive: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL + "\n[archive]\n" + archive, encoding="utf-8")
    return load_config(path)


def _error(tmp_path: Path, archive: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, archive)
    return str(caught.value)


def test_an_s3_archive_with_key_files_and_an_ip_endpoint(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    config = _load(
        tmp_path,
        'url = "s3://inbox-archive/exports/prod/"\n'
        'endpoint_url = "https://127.0.0.1:9000"\n'
        'region = "eu-central-1"\n'
        'access_key_id_file = "key-id"\n'
        'secret_access_key_env = "S3_SECRET"\n'
        'ca_file = "ca.pem"\n',
    )
    s3 = config.archive_s3
    assert s3 is not None
    assert (s3.bucket, s3.prefix, s3.url) == (
        "inbox-archive",
        "exports/prod",
        "s3://inbox-archive/exports/prod",
    )
    assert s3.endpoint_url == "https://127.0.0.1:9000"
    assert s3.region == "eu-central-1"
    assert s3.path_style is True  # an IP endpoint: no virtual-host name to put the bucket in
    assert s3.ca_file == (tmp_path / "ca.pem").resolve()
    assert s3.access_key_id is not None and s3.secret_access_key is not None
    assert s3.access_key_id.source().endswith("key-id")
    assert s3.secret_access_key.source() == "environment variable S3_SECRET"
    assert [secret.key for secret in config.secrets][-2:] == [
        "archive.access_key_id",
        "archive.secret_access_key",
    ]
    assert "archive s3://inbox-archive/exports/prod;" in config.summary()
    effective = config.effective()["archive"]
    assert "dir" not in effective
    assert effective["ca_file"] == str((tmp_path / "ca.pem").resolve())


def test_without_keys_the_aws_chain_and_a_host_name_endpoint(tmp_path: Path) -> None:
    config = _load(tmp_path, 'url = "s3://bucket-1"\nendpoint_url = "https://s3.internal:9000"\n')
    s3 = config.archive_s3
    assert s3 is not None
    assert (s3.prefix, s3.url) == ("", "s3://bucket-1")
    assert s3.access_key_id is None and s3.secret_access_key is None
    assert s3.secrets() == ()
    assert s3.path_style is False
    forced = _load(tmp_path, 'url = "s3://bucket-1"\naddressing_style = "path"\n').archive_s3
    assert forced is not None and forced.path_style is True


def test_the_default_stays_a_directory(tmp_path: Path) -> None:
    config = _load(tmp_path, 'dir = "arch"\n')
    assert config.archive_s3 is None
    assert config.archive_dir == (tmp_path / "arch").resolve()


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        ('dir = "a"\nurl = "s3://bucket/p"\n', "exactly one of dir"),
        ('url = "s3://bucket/p"\ngroup = "staff"\n', "an S3 archive has no group"),
        ('endpoint_url = "https://127.0.0.1:9000"\n', "only used with url"),
        ('region = "eu-west-1"\n', "only used with url"),
        ('url = "https://bucket/p"\n', "expected s3://bucket/prefix"),
        ('url = "s3://Bucket_Name/p"\n', "is not an S3 bucket name"),
        ('url = "s3://bucket/a/../b"\n', "bad segment '..'"),
        ('url = "s3://bucket/a//b"\n', "bad segment ''"),
        ('url = "s3://bucket/p?x=1"\n', "expected s3://bucket/prefix"),
        ('url = "s3://bucket/p"\nendpoint_url = "http://127.0.0.1:9000"\n', "expected an https://"),
        ('url = "s3://bucket/p"\nendpoint_url = "https://h:9000/path"\n', "nothing else"),
        ('url = "s3://bucket/p"\nendpoint_url = "https://u:p@h:9000"\n', "no credentials"),
        ('url = "s3://bucket/p"\nendpoint_url = "https://h:99999"\n', "bad port"),
        ('url = "s3://bucket/p"\nregion = "EU central"\n', "is not a region name"),
        ('url = "s3://bucket/p"\naddressing_style = "dns"\n', "addressing_style"),
        ('url = "s3://bucket/p"\naccess_key_id_env = "K"\n', "but not secret_access_key"),
        ('url = "s3://bucket/p"\nsecret_access_key_file = "s"\n', "but not access_key_id"),
        (
            'url = "s3://bucket/p"\naccess_key_id_env = "K"\naccess_key_id_file = "k"\n'
            'secret_access_key_env = "S"\n',
            "not both",
        ),
        ('url = "s3://bucket/p"\nca_file = "missing.pem"\n', "no such CA file"),
    ],
)
def test_bad_s3_settings_are_refused_by_name(tmp_path: Path, archive: str, message: str) -> None:
    assert message in _error(tmp_path, archive)


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://b.c-1/x/y=2/") == ("b.c-1", "x/y=2")
    with pytest.raises(ValueError, match="bucket name"):
        parse_s3_url("s3://ab/x")


def test_config_show_names_where_the_keys_are_never_their_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "key-id").write_text("AKIDSECRETVALUE\n", encoding="utf-8")
    monkeypatch.setenv("S3_SECRET", "topsecretvalue")
    path = tmp_path / "config.toml"
    path.write_text(
        MINIMAL + '\n[archive]\nurl = "s3://bucket/p"\naccess_key_id_file = "key-id"\n'
        'secret_access_key_env = "S3_SECRET"\n',
        encoding="utf-8",
    )
    assert main(["--config", str(path), "config", "show"]) == 0
    shown = capsys.readouterr().out
    assert "archive.secret_access_key: environment variable S3_SECRET" in shown
    assert "AKIDSECRETVALUE" not in shown and "topsecretvalue" not in shown


def test_without_boto3_an_s3_archive_is_a_clear_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "inbox_poller.archive.s3", None)  # import fails
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL + '\n[archive]\nurl = "s3://bucket/p"\n', encoding="utf-8")
    assert main(["--config", str(path), "run", "--once"]) == 78
    error = capsys.readouterr().err
    assert "archive.url: an S3 archive needs boto3, which is not installed" in error
    assert "pip install 'inbox-poller[s3]'" in error
