"""What a hook sees in its environment: the manifest line's fields, and no secret."""

from __future__ import annotations

from pathlib import Path

from inbox_poller.hooks.environment import BucketArchive, hook_environment

LINE = {
    "job_id": "987654",
    "stat": "12345",
    "method": "GetNewsletterContactDataSummaryAsync",
    "startdate": "20261101",
    "enddate": None,
    "path": "GetNewsletterContactDataSummaryAsync/2026/11/stat-12345_job-987654.json",
    "bytes": 5242880,
    "sha256": "ab" * 32,
    "records": 20000,
    "export_id": 1,
}


def test_every_manifest_field_and_the_file_are_given() -> None:
    env = hook_environment(
        "on_archived",
        LINE,
        archive_dir=Path("/srv/archive"),
        manifest_path=Path("/srv/archive/manifest.jsonl"),
        attempt=2,
        inherited={"PATH": "/opt/bin", "LANG": "C.UTF-8", "HOME": "/var/lib/x"},
    )
    assert env == {
        "PATH": "/opt/bin",
        "LANG": "C.UTF-8",
        "HOME": "/var/lib/x",
        "INBOX_POLLER_JOB_ID": "987654",
        "INBOX_POLLER_STAT": "12345",
        "INBOX_POLLER_METHOD": "GetNewsletterContactDataSummaryAsync",
        "INBOX_POLLER_STARTDATE": "20261101",
        "INBOX_POLLER_PATH": LINE["path"],
        "INBOX_POLLER_BYTES": "5242880",
        "INBOX_POLLER_SHA256": "ab" * 32,
        "INBOX_POLLER_RECORDS": "20000",
        "INBOX_POLLER_EXPORT_ID": "1",
        "INBOX_POLLER_HOOK": "on_archived",
        "INBOX_POLLER_ATTEMPT": "2",
        "INBOX_POLLER_ARCHIVE_DIR": "/srv/archive",
        "INBOX_POLLER_MANIFEST": "/srv/archive/manifest.jsonl",
        "INBOX_POLLER_FILE": f"/srv/archive/{LINE['path']}",
    }


def test_the_daemons_secrets_and_credentials_are_not_inherited() -> None:
    env = hook_environment(
        "on_archived",
        LINE,
        archive_dir=Path("/a"),
        manifest_path=Path("/a/manifest.jsonl"),
        attempt=1,
        inherited={
            "PINPOINTE_TOKEN": "secret",
            "IMAP_PASSWORD": "secret",
            "CREDENTIALS_DIRECTORY": "/run/credentials/inbox-poller.service",
            "INBOX_POLLER_CONFIG": "/etc/inbox-poller/config.toml",
            "NOTIFY_SOCKET": "/run/systemd/notify",
        },
    )
    assert "secret" not in env.values()
    assert not {"CREDENTIALS_DIRECTORY", "INBOX_POLLER_CONFIG", "NOTIFY_SOCKET"} & set(env)
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"


def test_on_a_bucket_the_payloads_url_bucket_and_key_are_given_and_no_local_path() -> None:
    env = hook_environment(
        "on_archived",
        LINE,
        bucket=BucketArchive("exports", "arch/prod", "https://s3.internal:9000", "eu-central-1"),
        attempt=1,
        inherited={"PATH": "/opt/bin"},
    )
    key = f"arch/prod/{LINE['path']}"
    assert env["INBOX_POLLER_URL"] == f"s3://exports/{key}"
    assert env["INBOX_POLLER_BUCKET"] == "exports"
    assert env["INBOX_POLLER_KEY"] == key
    assert env["INBOX_POLLER_ARCHIVE_URL"] == "s3://exports/arch/prod"
    assert env["INBOX_POLLER_MANIFEST_KEY"] == (
        "arch/prod/manifest/GetNewsletterContactDataSummaryAsync/2026/11/stat-12345_job-987654.json"
    )
    assert env["INBOX_POLLER_S3_ENDPOINT_URL"] == "https://s3.internal:9000"
    assert env["INBOX_POLLER_S3_REGION"] == "eu-central-1"
    assert not {"INBOX_POLLER_FILE", "INBOX_POLLER_ARCHIVE_DIR", "INBOX_POLLER_MANIFEST"} & set(env)


def test_a_bucket_without_prefix_endpoint_or_region() -> None:
    env = hook_environment(
        "on_archived", LINE, bucket=BucketArchive("exports", ""), attempt=1, inherited={}
    )
    assert env["INBOX_POLLER_KEY"] == LINE["path"]
    assert env["INBOX_POLLER_ARCHIVE_URL"] == "s3://exports"
    assert "INBOX_POLLER_S3_ENDPOINT_URL" not in env and "INBOX_POLLER_S3_REGION" not in env
