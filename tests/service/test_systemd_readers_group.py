"""A readers' group under the shipped unit: archive.group with systemd/readers-group.conf.

The offline tests hold the drop-in to the unit's exposure gate; the ``systemd_box`` test
runs the shipped unit with the drop-in in a throwaway systemd 252 (tests/plugins/
systemd_box.py) and reads the archive as a member of the group, and fails to as anyone
else (docs/systemd.md, "A readers' group").
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.plugins.loop import LoopEnv
from tests.plugins.systemd_box import BOX_BIN, BOX_UNIT, SystemdBox
from tests.service.test_systemd_unit import (
    MAX_EXPOSURE,
    REPORT_THE_END,
    SYSTEMD_DIR,
    UNIT,
    admin,
    box_config,
    exposure,
    install_config,
    parse_unit,
    values,
    verify,
    wait_until,
)

DROPIN = SYSTEMD_DIR / "readers-group.conf"
SYSUSERS = SYSTEMD_DIR / "inbox-poller.sysusers"
ARCHIVE = "/var/lib/inbox-poller/archive"
READ_AS_MEMBER = """
import sys
from inbox_poller.archive_reader import ArchiveReader, verify
archive = ArchiveReader(sys.argv[1])
print(sum(1 for entry in archive.manifest() for record in archive.records(entry)))
print(verify(sys.argv[1]).ok)
"""


def merged_unit(tmp_path: Path) -> Path:
    """The shipped unit with the drop-in's settings, as one file for the offline gate."""
    service = "\n".join(
        f"{key}={value}" for key, value in parse_unit(DROPIN.read_text())["Service"]
    )
    text = UNIT.read_text(encoding="utf-8").replace("[Install]", f"{service}\n\n[Install]")
    path = tmp_path / "inbox-poller.service"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_drop_in_keeps_the_exposure_gate(tmp_path: Path) -> None:
    status, score, output = exposure(merged_unit(tmp_path))
    assert status == 0, output
    assert score <= MAX_EXPOSURE, output


def test_the_drop_in_verifies_cleanly(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert verify(tmp_path, text, {"readers-group.conf": DROPIN.read_text()}) == ""
    dropin = parse_unit(DROPIN.read_text())
    assert values(dropin, "Service", "DynamicUser") == ["no"]
    assert values(dropin, "Service", "User") == ["inbox-poller"]
    assert SYSUSERS.read_text().split("\n")[-2].split()[:2] == ["u", "inbox-poller"]


def test_a_member_of_the_group_reads_the_archive(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box, env = systemd_box, loop_env
    install_config(box, env)
    for command in (
        ("groupadd", "--system", "analysts"),
        ("useradd", "--no-create-home", "--groups", "analysts", "alice"),
        ("useradd", "--no-create-home", "bob"),
    ):
        made = box.run(*command, check=False)  # the box outlives one test: may exist already
        assert made.returncode in (0, 9), made.stderr  # 9: exists
    # the documented install of the static user
    box.write("/etc/sysusers.d/inbox-poller.conf", SYSUSERS.read_text())
    created = box.run("systemd-sysusers", "/etc/sysusers.d/inbox-poller.conf", check=False)
    assert created.returncode == 0 and "not a valid" not in created.stderr, created.stderr
    for database, name in (("passwd", "inbox-poller"), ("group", "analysts"), ("passwd", "alice")):
        found = box.run("getent", database, name, check=False)
        assert found.returncode == 0, (database, name, found.stderr)
    config = box_config(env).replace(f'dir = "{ARCHIVE}"', f'dir = "{ARCHIVE}"\ngroup = "analysts"')
    assert 'group = "analysts"' in config
    box.write("/etc/inbox-poller/config.toml", config)
    box.write(f"/etc/systemd/system/{BOX_UNIT}.d/readers-group.conf", DROPIN.read_text())
    try:
        log = box.configure("readers-group", REPORT_THE_END)
        started = box.ctl("start", BOX_UNIT, check=False)
        status = box.ctl("status", BOX_UNIT, check=False).stdout
        assert started.returncode == 0, status + (log.read_text() if log.exists() else "")
        pid = box.main_pid()
        shown = box.show("ActiveState", "User", "Group", "DynamicUser")
        assert shown["ActiveState"] == "active", log.read_text()
        assert (shown["User"], shown["Group"], shown["DynamicUser"]) == (
            "inbox-poller",
            "analysts",
            "no",
        )
        submitted = admin(
            box, "submit", "--stat", "4242", "--start", "20261101", "--end", "20261102"
        )
        assert submitted.returncode == 0, submitted.stderr
        job = submitted.stdout.strip()
        env.sim.job(job).wait_delivered(30)
        manifest = box.path(f"{ARCHIVE}/manifest.jsonl")
        wait_until(
            "the export archived", lambda: manifest.exists() and job in manifest.read_text(), 30
        )
        [line] = [json.loads(x) for x in manifest.read_text().splitlines()]

        analysts = int(box.run("getent", "group", "analysts").stdout.split(":")[2])
        payload = box.path(f"{ARCHIVE}/{line['path']}")
        for path in (payload, manifest):
            info = path.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, analysts), path
        for directory in (
            "/var/lib/inbox-poller",
            ARCHIVE,
            str(Path(ARCHIVE, line["path"]).parent),
        ):
            info = box.path(directory).stat()
            assert stat.S_IMODE(info.st_mode) == 0o750, directory
            assert info.st_gid == analysts, directory
        ledger = box.path("/var/lib/inbox-poller/state.db").stat()
        assert stat.S_IMODE(ledger.st_mode) == 0o600  # the ledger stays the service's

        # a member reads every record and verifies the archive; anyone else cannot
        member = box.run(
            "runuser",
            "-u",
            "alice",
            "--",
            f"{BOX_BIN}/python",
            "-c",
            READ_AS_MEMBER,
            ARCHIVE,
            check=False,
        )
        assert member.returncode == 0, member.stderr
        assert member.stdout.split() == [str(line["records"]), "True"]
        other = box.run(
            "runuser", "-u", "bob", "--", "cat", f"{ARCHIVE}/manifest.jsonl", check=False
        )
        assert other.returncode != 0 and "Permission denied" in other.stderr
        # the operator's tool follows the drop-in: the same ledger, not a fresh private one
        listing = admin(box, "exports", "--json")
        assert listing.returncode == 0, listing.stderr
        assert [e["job_id"] for e in json.loads(listing.stdout)] == [job]
        assert box.main_pid() == pid
    finally:
        box.ctl("stop", BOX_UNIT, check=False)
        box.path(f"/etc/systemd/system/{BOX_UNIT}.d/readers-group.conf").unlink(missing_ok=True)
        box.ctl("daemon-reload", check=False)
