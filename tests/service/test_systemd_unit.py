"""The shipped systemd unit: exposure score, syntax, layout, and inbox-poller run under it.

The first tests need only ``systemd-analyze`` (package ``systemd``; in CI its absence
is a failure). The ``systemd_box`` tests boot a throwaway systemd 252 in namespaces
(tests/plugins/systemd_box.py) and run the unit's own ``ExecStart=`` (the daemon), the
CLI and ``inbox-poller-admin`` under the unit's real sandbox, plus a small probe for
what only code inside the sandbox can try; they skip where that cannot be done (not
root, or a host already run by systemd).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inbox_poller.config import load_config
from inbox_poller.sandbox.simulator.server import DEFAULT_TOKEN
from tests.plugins.dovecot import running_in_ci
from tests.plugins.loop import LoopEnv
from tests.plugins.systemd_box import BOX_ADMIN, BOX_BIN, BOX_RUN, BOX_SRC, BOX_UNIT, SystemdBox

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO_ROOT / "systemd"
UNIT = SYSTEMD_DIR / "inbox-poller.service"
UNIT_CONFIG = SYSTEMD_DIR / "config.toml"
IP_DENY_DROPIN = SYSTEMD_DIR / "ip-address-deny.conf"
ADMIN_SCRIPT = SYSTEMD_DIR / "inbox-poller-admin"
TEMPLATE = SYSTEMD_DIR / "inbox-poller@.service"
ACCOUNT_CONFIG = SYSTEMD_DIR / "account.toml"
ACCOUNT_ADMIN_SCRIPT = SYSTEMD_DIR / "inbox-poller-account-admin"
MAX_EXPOSURE = 1.5
SYSTEM_UNIT_DIR = Path("/lib/systemd/system")
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(text: str) -> Unit:
    """Return section -> [(key, value), ...] in file order (keys repeat in unit files)."""
    unit: Unit = {}
    section: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], [])
            continue
        key, _, value = line.partition("=")
        section.append((key.strip(), value.strip()))
    return unit


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


@pytest.fixture(scope="module")
def shipped() -> Unit:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        message = "systemd-analyze is missing: apt-get install systemd"
        if running_in_ci():
            pytest.fail(f"{message} (required in CI)", pytrace=False)
        pytest.skip(message)
    return tool


def exposure(unit_path: Path) -> tuple[int, float, str]:
    """Run the CI gate on *unit_path*; return its exit status, the score and the output."""
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=true",
            "--threshold=15",
            "--no-pager",
            unit_path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = EXPOSURE_RE.search(result.stdout)
    assert match, f"no exposure figure in: {result.stdout[-500:]} {result.stderr}"
    return result.returncode, float(match.group(1)), result.stdout


# ---- the exposure score (docs/reliability.md §7.8, §9 item 6) ------------------------------


def test_exposure_score_is_at_most_1_5() -> None:
    status, score, output = exposure(UNIT)
    assert status == 0, output
    assert score <= MAX_EXPOSURE, output


def test_the_gate_fails_a_unit_without_hardening(tmp_path: Path, shipped: Unit) -> None:
    # The same unit up to the hardening block: proves the gate and the parsing can fail.
    text = UNIT.read_text(encoding="utf-8")
    weak = tmp_path / "inbox-poller.service"
    weak.write_text(text.split("# Hardening.")[0] + "\n[Install]\nWantedBy=multi-user.target\n")
    status, score, _ = exposure(weak)
    assert status != 0
    assert score > MAX_EXPOSURE


# ---- systemd-analyze verify, offline -----------------------------------------------------


def verify(
    tmp_path: Path,
    unit_text: str,
    dropins: dict[str, str] | None = None,
    *,
    file_name: str = "inbox-poller.service",
    unit_name: str = "inbox-poller.service",
) -> str:
    """``systemd-analyze verify`` in a private root holding the unit and stub executables.

    Outside the root, verify insists that ExecStart's /opt/inbox-poller venv exists;
    the root also needs systemd's own units (sysinit.target, ...). Returns the output:
    verify reports "ignoring" problems on stderr even when it exits 0.
    """
    tool = systemd_analyze()
    if not SYSTEM_UNIT_DIR.is_dir():
        pytest.skip(f"{SYSTEM_UNIT_DIR} is missing")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNIT_DIR, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / file_name).write_text(unit_text, encoding="utf-8")
    for name, text in (dropins or {}).items():
        (units / f"{unit_name}.d").mkdir(exist_ok=True)
        (units / f"{unit_name}.d" / name).write_text(text, encoding="utf-8")
    for stub in (root / "opt/inbox-poller/venv/bin/inbox-poller", root / "usr/bin/kill"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    result = subprocess.run(
        [tool, "verify", f"--root={root}", "--man=no", "--generators=no", unit_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    return output


def test_the_unit_and_the_drop_in_verify_cleanly(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    dropin = IP_DENY_DROPIN.read_text(encoding="utf-8")
    assert verify(tmp_path, text, {"ip-address-deny.conf": dropin}) == ""


def test_verify_reports_a_misspelt_setting(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8").replace("ProtectProc=", "ProtectProcs=")
    assert "Unknown key 'ProtectProcs'" in verify(tmp_path, text)


# ---- what the daemon relies on --------------------------------------------------------


def test_service_lifecycle_settings(shipped: Unit) -> None:
    assert one(shipped, "Service", "Type") == "notify"  # notify-reload needs systemd >= 253
    assert one(shipped, "Service", "NotifyAccess") == "main"
    assert one(shipped, "Service", "ExecReload").endswith("kill -HUP $MAINPID")
    assert one(shipped, "Service", "ExecStart").endswith(
        " -c ${CONFIGURATION_DIRECTORY}/config.toml run"
    )
    assert one(shipped, "Service", "WatchdogSec") == "120s"
    assert one(shipped, "Service", "Restart") == "on-failure"
    assert one(shipped, "Service", "RestartSec") == "5s"
    assert one(shipped, "Service", "RestartPreventExitStatus").split() == ["78", "243"]
    assert one(shipped, "Unit", "StartLimitIntervalSec") == "0"
    assert "network-online.target" in one(shipped, "Unit", "After")
    assert one(shipped, "Install", "WantedBy") == "multi-user.target"


def test_identity_files_and_hardening_settings(shipped: Unit) -> None:
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "inbox-poller",
        "StateDirectoryMode": "0700",
        "ConfigurationDirectory": "inbox-poller",
        "UMask": "0077",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateUsers": "yes",
        "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
    }
    assert {key: one(shipped, "Service", key) for key in expected} == expected
    assert values(shipped, "Service", "SystemCallFilter") == [
        "@system-service",
        "~@privileged @resources",
    ]
    assert values(shipped, "Service", "IPAddressDeny") == []  # optional drop-in instead


def test_no_trailing_comments(shipped: Unit) -> None:
    # systemd has no inline comments: "Type=notify  # x" would set Type to "notify  # x".
    for section, pairs in shipped.items():
        for key, value in pairs:
            assert "#" not in value, f"[{section}] {key}={value}"


def test_unit_config_matches_the_credentials_and_directories(
    shipped: Unit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = load_config(UNIT_CONFIG)
    credentials = dict(v.split(":", 1) for v in values(shipped, "Service", "LoadCredential"))
    assert set(credentials) == {"pinpointe-usertoken", "imap-password"}
    for cred_id, source in credentials.items():
        assert source == f"/etc/credstore/inbox-poller.{cred_id}"
    assert {config.pinpointe.usertoken_file, config.imap.password_file} == set(credentials)
    state_dir = Path("/var/lib") / one(shipped, "Service", "StateDirectory")
    assert config.state_path.parent == state_dir
    assert config.archive_dir.parent == state_dir
    assert one(shipped, "Service", "ConfigurationDirectory") == "inbox-poller"


def test_unit_config_reads_secrets_from_the_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pinpointe-usertoken").write_text("token-canary\n")
    (tmp_path / "imap-password").write_text("password-canary\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(UNIT_CONFIG)
    assert config.usertoken.read() == "token-canary"
    assert config.imap_password.read() == "password-canary"


def test_unit_config_has_no_inline_secrets() -> None:
    text = UNIT_CONFIG.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(usertoken|password)\s*=", text, re.MULTILINE)
    assert not re.search(r"^\s*\w+_env\s*=", text, re.MULTILINE)


def test_the_admin_script_runs_as_the_service_would(shipped: Unit) -> None:
    # Same dynamic user, state directory, credentials and config as the unit: the CLI
    # run by root would leave files in the state directory the service cannot open.
    text = ADMIN_SCRIPT.read_text(encoding="utf-8")
    properties = re.findall(r"--property=(\w+)=(\S+)", text)
    assert ("DynamicUser", "yes") in properties
    assert ("User", "inbox-poller") in properties
    for key in ("StateDirectory", "StateDirectoryMode", "ConfigurationDirectory", "UMask"):
        assert (key, one(shipped, "Service", key)) in properties
    assert [v for k, v in properties if k == "LoadCredential"] == values(
        shipped, "Service", "LoadCredential"
    )
    assert '/opt/inbox-poller/venv/bin/inbox-poller -c /etc/inbox-poller/config.toml "$@"' in text
    assert ADMIN_SCRIPT.stat().st_mode & 0o111


def test_the_ip_address_deny_drop_in_keeps_loopback_and_blocks_private_ranges() -> None:
    dropin = parse_unit(IP_DENY_DROPIN.read_text(encoding="utf-8"))
    entries = " ".join(values(dropin, "Service", "IPAddressDeny")).split()
    assert "link-local" in entries
    assert not {"any", "localhost"} & set(entries)
    networks = [ipaddress.ip_network(e) for e in entries if e[0].isdigit() or ":" in e]
    for blocked in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd00::1"):
        assert any(ipaddress.ip_address(blocked) in n for n in networks), blocked
    for allowed in ("127.0.0.53", "::1", "203.0.113.7"):
        address = ipaddress.ip_address(allowed)
        assert not any(address.version == n.version and address in n for n in networks)


# ---- the template unit: one instance per account ----------------------------------------

INSTANCE_KEYS = {
    ("Unit", "Description"),
    ("Service", "ExecStart"),
    ("Service", "User"),
    ("Service", "StateDirectory"),
    ("Service", "LoadCredential"),
}
"""What an instance of the template has of its own; every other setting is the shipped unit's."""


@pytest.fixture(scope="module")
def template() -> Unit:
    return parse_unit(TEMPLATE.read_text(encoding="utf-8"))


def test_the_template_exposure_score_is_at_most_1_5() -> None:
    status, score, output = exposure(TEMPLATE)
    assert status == 0, output
    assert score <= MAX_EXPOSURE, output


def test_an_instance_of_the_template_verifies_cleanly(tmp_path: Path) -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    dropin = {"ip-address-deny.conf": IP_DENY_DROPIN.read_text(encoding="utf-8")}
    out = verify(
        tmp_path,
        text,
        dropin,
        file_name="inbox-poller@.service",
        unit_name="inbox-poller@acme.service",
    )
    assert out == ""
    broken = text.replace("ProtectProc=", "ProtectProcs=")
    out = verify(
        tmp_path / "broken",
        broken,
        file_name="inbox-poller@.service",
        unit_name="inbox-poller@b.service",
    )
    assert "Unknown key 'ProtectProcs'" in out


def test_the_template_is_the_shipped_unit_but_for_what_each_account_owns(
    shipped: Unit, template: Unit
) -> None:
    def common(unit: Unit) -> dict[str, list[tuple[str, str]]]:
        return {
            section: [(k, v) for k, v in pairs if (section, k) not in INSTANCE_KEYS]
            for section, pairs in unit.items()
        }

    assert common(template) == common(shipped)
    assert one(template, "Service", "ExecStart") == one(shipped, "Service", "ExecStart").replace(
        "/config.toml", "/%i.toml"
    )
    assert one(template, "Service", "User") == "inbox-poller-%i"
    assert one(template, "Service", "StateDirectory") == "inbox-poller-%i"
    assert values(template, "Service", "LoadCredential") == [
        v.replace("/inbox-poller.", "/inbox-poller-%i.")
        for v in values(shipped, "Service", "LoadCredential")
    ]
    assert "%i" in one(template, "Unit", "Description")


def test_the_account_config_matches_the_templates_directories_and_credentials(
    template: Unit, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    text = ACCOUNT_CONFIG.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(usertoken|password)\s*=", text, re.MULTILINE)
    account = tmp_path / "acme.toml"
    account.write_text(text.replace("ACCOUNT", "acme"))
    config = load_config(account)
    state_dir = Path("/var/lib") / one(template, "Service", "StateDirectory").replace("%i", "acme")
    assert config.state_path.parent == state_dir
    assert config.archive_dir.parent == state_dir
    credentials = dict(v.split(":", 1) for v in values(template, "Service", "LoadCredential"))
    assert {config.pinpointe.usertoken_file, config.imap.password_file} == set(credentials)


def test_the_account_admin_script_runs_as_the_instance_would(template: Unit) -> None:
    text = ACCOUNT_ADMIN_SCRIPT.read_text(encoding="utf-8")
    properties = [
        (key, value.replace('"$account"', "%i"))
        for key, value in re.findall(r"--property=(\w+)=(\S+)", text)
    ]
    assert ("DynamicUser", "yes") in properties
    for key in ("User", "StateDirectory", "StateDirectoryMode", "ConfigurationDirectory", "UMask"):
        assert (key, one(template, "Service", key)) in properties
    assert [v for k, v in properties if k == "LoadCredential"] == values(
        template, "Service", "LoadCredential"
    )
    assert (
        '/opt/inbox-poller/venv/bin/inbox-poller -c /etc/inbox-poller/"$account".toml "$@"' in text
    )
    assert ACCOUNT_ADMIN_SCRIPT.stat().st_mode & 0o111


@pytest.mark.parametrize("account", ["", "../etc", "a b", "-c", "x;rm"])
def test_the_account_admin_script_refuses_what_is_not_an_account_name(account: str) -> None:
    result = subprocess.run(
        [str(ACCOUNT_ADMIN_SCRIPT), account, "status"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 2
    assert "not an account name" in result.stderr


# ---- inbox-poller under the real sandbox (systemd 252 booted in namespaces) -------------
#
# Everything below runs in the box (tests/plugins/systemd_box.py): real systemd 252, the
# shipped unit file unchanged, plus a test drop-in that sends the output to a file (the
# box runs no journald) and, per test, only the settings it names.

STATE_DIR = "/var/lib/private/inbox-poller"  # StateDirectory= under DynamicUser=yes
CREDENTIALS_DIR = f"/run/credentials/{BOX_UNIT}"
DYNAMIC_UIDS = range(61184, 65520)
STOP_LIMIT_S = 10.0
"""The issue's bound for SIGTERM to exit; the unit's own TimeoutStopSec= is 30 s."""

BOX_CONFIG = """\
[pinpointe]
api_url = "{api_url}"
username = "{api_user}"
usertoken_file = "pinpointe-usertoken"
notify_email = "exports@inbox.example"
ca_file = "/etc/inbox-poller/pinpointe-ca.pem"
timeout_s = 10

[imap]
host = "127.0.0.1"
port = {imaps_port}
username = "{imap_user}"
password_file = "imap-password"
folder = "{folder}"
processed_folder = "{processed}"
ca_file = "/etc/inbox-poller/imap-ca.pem"
timeout_s = 10
poll_interval = 5

[download]
allowed_hosts = ["{host_rule}"]
allow_private_addresses = true
ca_file = "/etc/inbox-poller/pinpointe-ca.pem"

[archive]
dir = "{archive}"

[state]
path = "/var/lib/inbox-poller/state.db"
"""

SCHEDULE = """
[[export]]
name = "daily"
stat = "5151"
every = "1d"
window = "previous-day"
"""
"""Added by a reload: the daemon submits the window that is due at once (docs/schedules.md)."""

PROBE = r'''
"""Runs as the service and reports, as one JSON line, what the sandbox lets it do."""
import json, mmap, os, socket
from pathlib import Path

import ijson


def attempt(fn):
    try:
        return "ok " + str(fn())
    except Exception as exc:
        return type(exc).__name__ + " " + str(getattr(exc, "errno", ""))


def wx():
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()


print(json.dumps({
    "wx_mmap": attempt(wx),
    "yajl2_c": attempt(lambda: ijson.get_backend("yajl2_c").backend_name),
    "write_etc": attempt(lambda: Path("/etc/inbox-poller/x").write_text("x")),
    "write_opt": attempt(lambda: Path("/opt/inbox-poller/x").write_text("x")),
    "write_state": attempt(lambda: Path(os.environ["STATE_DIRECTORY"], "x").write_text("x")),
    "list_root": attempt(lambda: os.listdir("/root")),
    "list_home": attempt(lambda: os.listdir("/home")),
    "list_tmp": attempt(lambda: os.listdir("/tmp")),
    "write_run_lock": attempt(lambda: Path("/run/lock/probe").write_text("x")),
    "write_dev_shm": attempt(lambda: Path("/dev/shm/probe").write_text("x")),
    "pids": [p for p in os.listdir("/proc") if p.isdigit()],
    "proc_meminfo": attempt(lambda: Path("/proc/meminfo").read_text()[:1]),
    "dev_rtc": attempt(lambda: os.listdir("/dev/rtc0")),
    "setuid0": attempt(lambda: os.setuid(0)),
    "sethostname": attempt(lambda: socket.sethostname("box")),
    "netlink": attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
    "packet": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
}), flush=True)
'''

FAST_RESTARTS = "RestartSec=1s\n"
REPORT_THE_END = (
    "ExecStopPost=/bin/sh -c 'echo \"ended: $$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS\"'\n"
)
"""systemd tells ExecStopPost= how the main process ended; ``$$`` keeps ``$`` for the shell."""


def wait_until(what: str, predicate: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def box_config(env: LoopEnv, archive: str = "/var/lib/inbox-poller/archive") -> str:
    return BOX_CONFIG.format(
        api_url=env.sim.api_url,
        api_user=env.sim.username,
        imaps_port=env.dovecot.imaps_port,
        imap_user=env.dovecot.user,
        folder=env.folder,
        processed=env.processed,
        host_rule=env.sim.host_rule,
        archive=archive,
    )


def install_config(box: SystemdBox, env: LoopEnv) -> None:
    """The documented install: config.toml 0644, CA files beside it, credentials 0600."""
    box.write("/etc/inbox-poller/config.toml", box_config(env))
    box.write("/etc/inbox-poller/pinpointe-ca.pem", env.sim.ca_file.read_text())
    box.write("/etc/inbox-poller/imap-ca.pem", env.dovecot.ca_file.read_text())
    box.path("/etc/credstore").mkdir(mode=0o700, exist_ok=True)
    box.write("/etc/credstore/inbox-poller.pinpointe-usertoken", env.sim.token, 0o600)
    box.write("/etc/credstore/inbox-poller.imap-password", env.dovecot.password, 0o600)
    box.ctl("stop", BOX_UNIT, check=False)
    box.run("rm", "-rf", STATE_DIR, "/var/lib/inbox-poller")


def secrets_of(env: LoopEnv) -> tuple[str, ...]:
    return (DEFAULT_TOKEN, env.sim.token, env.dovecot.password)


def run_cli(box: SystemdBox, name: str, args: str, extra: str = "") -> tuple[dict[str, str], str]:
    """Run ``inbox-poller -c ${CONFIGURATION_DIRECTORY}/config.toml ARGS`` as the unit."""
    log = box.configure(
        name,
        "Type=oneshot\nExecStart=\n"
        f"ExecStart={BOX_BIN}/inbox-poller -c ${{CONFIGURATION_DIRECTORY}}/config.toml {args}\n"
        + extra,
    )
    box.ctl("start", BOX_UNIT, check=False)
    shown = box.show("ExecMainStatus", "Result", "ExecMainPID")
    return shown, log.read_text() if log.exists() else ""


def admin(box: SystemdBox, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the shipped ``inbox-poller-admin ARGS`` in the box, as an operator would."""
    box.start_dbus()
    return box.run(str(BOX_ADMIN), *args, check=False)


def process_status(box: SystemdBox, pid: int) -> dict[str, str]:
    lines = (box.proc(pid) / "status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":\t") for line in lines)}


def children(box: SystemdBox, pid: int) -> list[int]:
    """The processes whose parent is *pid*, in the box's procfs."""
    found = []
    for entry in box.path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def process_environ(box: SystemdBox, pid: int) -> dict[str, str]:
    raw = (box.proc(pid) / "environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


Mount = tuple[str, bool, str]
"""A line of /proc/PID/mountinfo: mount point, writable (per mount and per superblock), type."""
API_FILESYSTEMS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "mqueue", "devpts", "bpf"})


def mount_table(box: SystemdBox, pid: int) -> list[Mount]:
    """The mounts the process sees, in /proc/PID/mountinfo order."""
    table = []
    for line in (box.proc(pid) / "mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _source, super_options) = left.split(), right.split()
        point = fields[4].encode().decode("unicode_escape")  # \040 and friends
        writable = "rw" in fields[5].split(",") and "rw" in super_options.split(",")
        table.append((point, writable, fstype))
    return table


def covering_mount(table: list[Mount], path: str) -> Mount:
    """The mount *path* is on: the longest mount point above it, the last one if stacked."""
    above = [m for m in table if m[0] == "/" or path == m[0] or path.startswith(m[0] + "/")]
    return max(reversed(above), key=lambda m: len(m[0]))


def files_owned_by(root: Path, uid: int) -> list[Path]:
    """Every file or directory under *root* owned by *uid* (not following symlinks)."""
    owned = []
    for path in [root, *root.rglob("*")]:
        try:
            if path.lstat().st_uid == uid:
                owned.append(path)
        except FileNotFoundError:  # a file removed while we walk
            continue
    return owned


def start_daemon(box: SystemdBox, name: str, extra: str = "") -> tuple[int, Path]:
    """Start the shipped unit with its own ``ExecStart=``; return the main PID and the log."""
    log = box.configure(name, REPORT_THE_END + extra)
    started = box.ctl("start", BOX_UNIT, check=False)
    assert started.returncode == 0, (started.stderr, log.read_text() if log.exists() else "")
    return box.main_pid(), log


def test_check_works_under_the_shipped_sandbox(systemd_box: SystemdBox, loop_env: LoopEnv) -> None:
    install_config(systemd_box, loop_env)
    shown, out = run_cli(systemd_box, "check", "check")
    assert shown["Result"] == "success", out
    assert "readable from file /run/credentials/inbox-poller.service/imap-password" in out
    assert "readable from file /run/credentials/inbox-poller.service/pinpointe-usertoken" in out
    for secret in secrets_of(loop_env):
        assert secret not in out


def test_the_daemon_runs_under_the_shipped_unit(systemd_box: SystemdBox, loop_env: LoopEnv) -> None:
    """checklist 1-4, 7, 8 and 36 under real systemd: the unit's own ExecStart= and sandbox."""
    box, env = systemd_box, loop_env
    install_config(box, env)
    pid, log = start_daemon(box, "daemon")  # Type=notify: start returns after READY=1

    # READY: active at once, with the ledger open; STATUS= from the daemon; watchdog armed
    shown = box.show("ActiveState", "SubState", "WatchdogUSec", "NRestarts", "StatusText")
    assert shown["ActiveState"] == "active" and shown["SubState"] == "running", shown
    assert shown["WatchdogUSec"] == "2min" and shown["NRestarts"] == "0", shown
    assert box.path(f"{STATE_DIR}/state.db").is_file()
    assert "daemon: ready" in log.read_text()
    wait_until(
        "a STATUS= line", lambda: "pending export" in box.show("StatusText")["StatusText"], 5
    )

    # the process itself: the shipped ExecStart with its variable expanded, the sandbox on
    cmdline = (box.proc(pid) / "cmdline").read_bytes().split(b"\0")[:-1]
    assert cmdline[-3:] == [b"-c", b"/etc/inbox-poller/config.toml", b"run"], cmdline
    status = process_status(box, pid)
    uid = int(status["Uid"].split()[0])
    assert uid in DYNAMIC_UIDS
    assert (status["NoNewPrivs"], status["Seccomp"], status["CapEff"]) == (
        "1",
        "2",
        "0000000000000000",
    )
    maps = (box.proc(pid) / "maps").read_text()
    assert not [line for line in maps.splitlines() if line.split()[1].startswith("rwx")]
    assert "_yajl2" in maps  # the C backend is loaded, under MemoryDenyWriteExecute=yes
    environ = process_environ(box, pid)
    assert environ["WATCHDOG_USEC"] == "120000000" and environ["WATCHDOG_PID"] == str(pid)
    assert environ["CREDENTIALS_DIRECTORY"] == CREDENTIALS_DIR
    assert environ["NOTIFY_SOCKET"].startswith("/run/systemd/notify")
    first_ping = box.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
    for name in ("imap-password", "pinpointe-usertoken"):
        credential = box.path(f"{CREDENTIALS_DIR}/{name}").stat()
        assert (credential.st_uid, credential.st_mode & 0o777) == (uid, 0o400)

    # an export submitted by the operator is received, archived and acknowledged unaided
    submitted = admin(box, "submit", "--stat", "4242", "--start", "20261101", "--end", "20261102")
    assert submitted.returncode == 0, submitted.stderr
    first_job = submitted.stdout.strip()
    env.sim.job(first_job).wait_delivered(30)
    manifest = box.path(f"{STATE_DIR}/archive/manifest.jsonl")

    def archived() -> dict[str, str]:
        text = manifest.read_text() if manifest.exists() else ""
        return {line["job_id"]: line["sha256"] for line in map(json.loads, text.splitlines())}

    wait_until("the export archived", lambda: first_job in archived(), 30)
    assert archived()[first_job] == env.sim.job(first_job).sha256
    wait_until("the mail moved", lambda: len(env.messages(env.processed)) == 1, 15)
    assert env.messages() == {}
    # the mail was read by the read budget's worker (docs/reliability.md §4.3): a new
    # interpreter under the same sandbox, isolated, empty environment, its own limits
    [worker] = children(box, pid)
    worker_status = process_status(box, worker)
    assert (worker_status["NoNewPrivs"], worker_status["Seccomp"]) == ("1", "2")
    limits = (box.proc(worker) / "limits").read_text()
    assert re.search(r"Max address space\s+536870912\s+536870912", limits), limits
    assert re.search(r"Max core file size\s+0\s+0", limits), limits
    assert b"-I" in (box.proc(worker) / "cmdline").read_bytes().split(b"\0")
    assert set(process_environ(box, worker)) <= {"LC_CTYPE"}
    # the pings reach systemd (WATCHDOG=1 moves the timestamp of the last one)
    assert box.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != first_ping

    # the operator's tools while the service runs: status is healthy, a second run refused
    status_out = admin(box, "status", "--json")
    assert status_out.returncode == 0, status_out.stdout + status_out.stderr
    report = json.loads(status_out.stdout)
    assert report["running"] is True and report["counts"] == {"acknowledged": 1}, report
    second = admin(box, "run", "--once")
    assert second.returncode == 1 and "already running" in second.stderr, second.stderr

    # an invalid config on reload: one error, the same process keeps running
    good = box_config(env)
    box.write(
        "/etc/inbox-poller/config.toml", good.replace("poll_interval = 5", "poll_interval = 1")
    )
    assert box.ctl("reload", BOX_UNIT, check=False).returncode == 0
    wait_until("the refused reload", lambda: "reload refused" in log.read_text(), 10)
    # READY=1 after RELOADING=1 ends systemd's "reloading" state; no restart, same process
    shown = box.wait_for("ActiveState", "active", timeout_s=5)
    assert (shown["SubState"], shown["NRestarts"], box.main_pid()) == ("running", "0", pid)
    assert log.read_text().count("reload refused") == 1

    # a valid reload takes effect: the schedule it adds makes the daemon submit on its own
    box.write("/etc/inbox-poller/config.toml", good + SCHEDULE)
    assert box.ctl("reload", BOX_UNIT, check=False).returncode == 0
    wait_until("the reload", lambda: "daemon: reloaded" in log.read_text(), 10)
    wait_until("a scheduled submission", lambda: len(env.sim.jobs) == 2, 20)
    [scheduled_job] = set(env.sim.jobs) - {first_job}
    assert env.sim.job(scheduled_job).stat == "5151"
    wait_until("the scheduled export archived", lambda: scheduled_job in archived(), 30)
    wait_until("its mail moved", lambda: len(env.messages(env.processed)) == 2, 15)
    shown = box.wait_for("ActiveState", "active", timeout_s=5)
    assert (shown["SubState"], shown["NRestarts"], box.main_pid()) == ("running", "0", pid)

    # ProtectSystem=strict as the daemon sees it, and what it wrote: nothing of its own
    # outside the state directory, in any place it could have written to
    table = mount_table(box, pid)
    for where in ("/", "/usr", "/etc", "/opt/inbox-poller/src", "/var/lib", CREDENTIALS_DIR):
        assert not covering_mount(table, where)[1], covering_mount(table, where)
    for where in (STATE_DIR, "/tmp", "/var/tmp"):
        assert covering_mount(table, where)[1], covering_mount(table, where)
    root = box.proc(pid) / "root"
    stray = []
    for point, writable, fstype in table:
        if writable and fstype not in API_FILESYSTEMS and not point.startswith(("/proc", "/sys")):
            stray += files_owned_by(root / point.lstrip("/"), uid)
    assert root / STATE_DIR[1:] / "state.db" in stray  # the walk does find its files
    # the credentials are the one exception: PID 1 put them there, on a read-only mount
    mine = (root / STATE_DIR[1:], root / CREDENTIALS_DIR[1:])
    outside = [p for p in stray if not any(p.is_relative_to(place) for place in mine)]
    assert outside == [], outside
    assert list((root / "tmp").iterdir()) == [] and list((root / "var/tmp").iterdir()) == []
    # ConfigurationDirectory= leaves /etc/inbox-poller writable at the mount level: only its
    # owner (root, from the install step) and mode keep the daemon out (docs/systemd.md)
    config_dir = box.path("/etc/inbox-poller").stat()
    assert (config_dir.st_uid, config_dir.st_mode & 0o022) == (0, 0)
    state = box.path(STATE_DIR)
    for path in [state, *state.rglob("*")]:
        assert path.stat().st_uid == uid, path
        assert path.stat().st_mode & 0o077 == 0, path  # UMask=0077, StateDirectoryMode=0700

    # no secret in the unit's properties, the process's argv or environment, the admin's
    # output, or (below) the daemon's own output
    unit_props = box.ctl("show", BOX_UNIT).stdout
    argv_and_env = b"\0".join(cmdline).decode() + json.dumps(environ)
    admin_out = "".join(r.stdout + r.stderr for r in (submitted, status_out, second))
    for secret in secrets_of(env):
        for where, text in (
            ("systemctl show", unit_props),
            ("argv/environ", argv_and_env),
            ("inbox-poller-admin", admin_out),
        ):
            assert secret not in text, where

    # stop: SIGTERM, STOPPING=1, a clean exit well inside the limit
    started = time.monotonic()
    assert box.ctl("stop", BOX_UNIT, check=False).returncode == 0
    took_s = time.monotonic() - started
    print(f"systemctl stop took {took_s:.2f}s")
    assert took_s < STOP_LIMIT_S
    assert box.show("Result")["Result"] == "success"
    out = log.read_text()
    assert "daemon: stopping" in out and "daemon: stopped" in out
    assert "ended: success exited 0" in out  # exit(0) by itself, not killed by SIGTERM
    for secret in secrets_of(env):
        assert secret not in out  # what journald would have received
    stopped = admin(box, "status")
    assert stopped.returncode == 1 and "the daemon is not running" in stopped.stdout


WATCHDOG_SOAK_S = float(os.environ.get("INBOX_POLLER_WATCHDOG_SOAK_S", "120"))
"""How long a healthy daemon must live under WatchdogSec=2s: minutes, not one interval."""


@pytest.mark.timeout(WATCHDOG_SOAK_S + 120)
def test_the_watchdog_restarts_a_daemon_that_stops_responding(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box = systemd_box
    install_config(box, loop_env)
    # Far below IDLE's 5 s renewal: the daemon renews (and pings) faster to fit it; no core
    pid, log = start_daemon(box, "watchdog", f"WatchdogSec=2s\n{FAST_RESTARTS}LimitCORE=0\n")
    assert process_environ(box, pid)["WATCHDOG_USEC"] == "2000000"
    # an idle, healthy daemon keeps pinging: minutes, not one interval (issue 9)
    time.sleep(WATCHDOG_SOAK_S)
    assert box.show("ActiveState", "MainPID", "NRestarts") == {
        "ActiveState": "active",
        "MainPID": str(pid),
        "NRestarts": "0",
    }
    box.run("kill", "-STOP", str(pid))  # hung: no pings, but no exit either
    stopped_at = time.monotonic()
    shown = box.wait_for("NRestarts", "1", timeout_s=20)
    print(f"restarted {time.monotonic() - stopped_at:.1f}s after SIGSTOP")
    assert shown["NRestarts"] == "1", shown
    box.wait_for("SubState", "running", timeout_s=10)
    assert box.main_pid() not in (0, pid)
    # WatchdogSignal= is SIGABRT; LimitCORE=0, so no core: "killed", not "dumped"
    assert "ended: watchdog killed ABRT" in log.read_text()
    box.ctl("stop", BOX_UNIT)


def test_a_bad_config_exits_78_and_is_not_restarted(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box = systemd_box
    install_config(box, loop_env)
    box.write("/etc/inbox-poller/config.toml", "[imap]\nport = 99999\n")
    log = box.configure("bad-config", FAST_RESTARTS)
    assert box.ctl("start", BOX_UNIT, check=False).returncode != 0
    time.sleep(2.5)  # more than RestartSec
    shown = box.show("ActiveState", "ExecMainStatus", "NRestarts")
    assert shown == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
    assert "configuration error" in log.read_text()


def test_a_missing_credential_fails_without_restarting(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box = systemd_box
    install_config(box, loop_env)
    box.path("/etc/credstore/inbox-poller.imap-password").unlink()
    box.configure("no-credential", FAST_RESTARTS)
    assert box.ctl("start", BOX_UNIT, check=False).returncode != 0
    time.sleep(2.5)  # more than RestartSec
    shown = box.show("ActiveState", "ExecMainStatus", "NRestarts")
    assert shown == {"ActiveState": "failed", "ExecMainStatus": "243", "NRestarts": "0"}


def test_an_archive_outside_the_writable_paths_exits_78_and_is_not_restarted(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    # ProtectSystem=strict for the daemon: an archive outside the state directory is
    # read-only; that is the configuration's fault, named with its fix, not a restart loop
    box = systemd_box
    install_config(box, loop_env)
    archive = "/var/lib/inbox-poller-archive"  # beside the state directory, not in it
    box.write("/etc/inbox-poller/config.toml", box_config(loop_env, archive=archive))
    log = box.configure("archive-outside", FAST_RESTARTS)
    assert box.ctl("start", BOX_UNIT, check=False).returncode != 0
    time.sleep(2.5)  # more than RestartSec
    shown = box.show("ActiveState", "ExecMainStatus", "NRestarts")
    assert shown == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
    out = log.read_text()
    assert f"archive directory {archive} is not writable: [Errno 30] Read-only file system" in out
    assert "fix: the file system is read-only here; under the systemd unit only" in out
    assert not box.path(archive).exists()


def test_other_failures_are_restarted(systemd_box: SystemdBox, loop_env: LoopEnv) -> None:
    # The control for the three above: a ledger that is not a database fails the start
    # with exit 1, which is worth retrying (a disk may come back), so systemd restarts it.
    box = systemd_box
    install_config(box, loop_env)
    box.path(STATE_DIR).mkdir(parents=True, exist_ok=True)
    box.write(f"{STATE_DIR}/state.db", "not a database, but long enough to look like one\n" * 90)
    log = box.configure("not-a-ledger", FAST_RESTARTS)
    assert box.ctl("start", BOX_UNIT, check=False).returncode != 0
    shown = box.wait_for("NRestarts", "2", timeout_s=15)
    box.ctl("stop", BOX_UNIT, check=False)
    assert shown["NRestarts"] == "2", shown
    assert "file is not a database" in log.read_text()


def test_the_sandbox_holds(systemd_box: SystemdBox, loop_env: LoopEnv) -> None:
    """What only code inside the sandbox can try (the daemon's own process is checked above)."""
    box = systemd_box
    install_config(box, loop_env)
    box.write(BOX_RUN / "probe.py", PROBE)
    log = box.configure(
        "probe", f"Type=oneshot\nExecStart=\nExecStart={BOX_BIN}/python {BOX_RUN}/probe.py\n"
    )
    assert box.ctl("start", BOX_UNIT, check=False).returncode == 0, log.read_text()
    report: dict[str, object] = json.loads(log.read_text().splitlines()[0])
    assert report["wx_mmap"] == "PermissionError 1"  # MemoryDenyWriteExecute
    assert report["yajl2_c"] == "ok yajl2_c"
    assert str(report["write_state"]).startswith("ok")
    for denied in ("write_etc", "write_opt", "list_root", "list_home"):
        assert not str(report[denied]).startswith("ok"), (denied, report[denied])
    assert report["list_tmp"] == "ok []"  # PrivateTmp
    # world-writable on the host; ReadOnlyPaths= in the unit closes them (docs/systemd.md)
    assert str(report["write_run_lock"]).startswith("OSError 30"), report["write_run_lock"]
    assert str(report["write_dev_shm"]).startswith("OSError 30"), report["write_dev_shm"]
    pids = report["pids"]
    assert isinstance(pids, list)
    assert len(pids) == 1  # ProtectProc=invisible: other users' processes are hidden
    assert str(report["proc_meminfo"]).startswith("FileNotFoundError")  # ProcSubset=pid
    assert not str(report["dev_rtc"]).startswith("ok")  # PrivateDevices
    for refused in ("setuid0", "sethostname", "netlink", "packet"):
        assert not str(report[refused]).startswith("ok"), (refused, report[refused])


def test_the_ip_address_deny_drop_in_leaves_loopback_reachable(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    install_config(systemd_box, loop_env)
    # short timeouts: the control below waits for them to expire
    fast = box_config(loop_env).replace("timeout_s = 10", "timeout_s = 2")
    systemd_box.write("/etc/inbox-poller/config.toml", fast)
    shipped = parse_unit(IP_DENY_DROPIN.read_text(encoding="utf-8"))
    deny = one(shipped, "Service", "IPAddressDeny")
    shown, out = run_cli(systemd_box, "ip-deny", "check", f"IPAddressDeny={deny}\n")
    assert shown["Result"] == "success", out
    # The control: denying loopback must break the same check, or the firewall is not on.
    shown, out = run_cli(systemd_box, "ip-deny-localhost", "check", "IPAddressDeny=localhost\n")
    if shown["Result"] == "success":
        pytest.skip("IPAddressDeny= is not enforced in this box (no cgroup BPF)")
    assert "FAIL imap" in out


# ---- the template unit in the box: two accounts side by side -----------------------------


def install_account(box: SystemdBox, env: LoopEnv, account: str) -> str:
    """The documented install of one account; returns its state directory (as stored)."""
    state = f"/var/lib/inbox-poller-{account}"
    text = ACCOUNT_CONFIG.read_text(encoding="utf-8").replace("ACCOUNT", account)
    config = box_config(env, archive=f"{state}/archive").replace(
        'path = "/var/lib/inbox-poller/state.db"', f'path = "{state}/state.db"'
    )
    assert f'dir = "{state}/archive"' in text and f'path = "{state}/state.db"' in text
    box.write(f"/etc/inbox-poller/{account}.toml", config)
    box.write(f"/etc/credstore/inbox-poller-{account}.pinpointe-usertoken", env.sim.token, 0o600)
    box.write(f"/etc/credstore/inbox-poller-{account}.imap-password", env.dovecot.password, 0o600)
    box.run("rm", "-rf", f"/var/lib/private/inbox-poller-{account}", state)
    return f"/var/lib/private/inbox-poller-{account}"


def test_each_account_runs_in_its_own_instance_of_the_template(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box, env = systemd_box, loop_env
    install_config(box, env)  # the CA files beside the configurations
    box.write("/etc/systemd/system/inbox-poller@.service", TEMPLATE.read_text(encoding="utf-8"))
    box.write(
        "/etc/systemd/system/inbox-poller@.service.d/test.conf",
        "[Service]\nStandardOutput=append:/run/box/out/%i.log\nStandardError=inherit\n",
    )
    box.ctl("daemon-reload")
    states = {account: install_account(box, env, account) for account in ("acme", "globex")}
    try:
        for account in states:
            started = box.ctl("start", f"inbox-poller@{account}.service", check=False)
            log = box.path(f"/run/box/out/{account}.log")
            assert started.returncode == 0, (started.stderr, log.read_text())
        uids = {}
        for account, state in states.items():
            unit = f"inbox-poller@{account}.service"
            shown = box.ctl("show", unit, "--property=MainPID", "--property=ActiveState").stdout
            props = dict(line.split("=", 1) for line in shown.splitlines())
            assert props["ActiveState"] == "active", props
            pid = int(props["MainPID"])
            cmdline = (box.proc(pid) / "cmdline").read_bytes().split(b"\0")[:-1]
            assert cmdline[-3:] == [b"-c", f"/etc/inbox-poller/{account}.toml".encode(), b"run"]
            uids[account] = int(process_status(box, pid)["Uid"].split()[0])
            assert uids[account] in DYNAMIC_UIDS
            environ = process_environ(box, pid)
            assert environ["CREDENTIALS_DIRECTORY"] == f"/run/credentials/{unit}"
            ledger = box.path(f"{state}/state.db").stat()
            assert (ledger.st_uid, ledger.st_mode & 0o077) == (uids[account], 0)
        assert uids["acme"] != uids["globex"]  # neither can read the other's ledger

        # acme's operator submits through its own admin script; acme archives it, alone
        box.start_dbus()
        account_admin = str(BOX_SRC / "systemd" / "inbox-poller-account-admin")
        submitted = box.run(account_admin, "acme", "submit", "--stat", "4242", check=False)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        waited = box.run(account_admin, "acme", "wait", job_id, "--timeout", "60", check=False)
        assert waited.returncode == 0, waited.stderr
        # config resolves the StateDirectory= symlink: /var/lib/private/inbox-poller-acme
        archived = waited.stdout.strip()
        assert archived.startswith(f"{states['acme']}/archive/"), archived
        assert box.path(archived).is_file()
        assert box.path(f"{states['acme']}/archive/manifest.jsonl").exists()
        assert not box.path(f"{states['globex']}/archive/manifest.jsonl").exists()
        globex = box.run(account_admin, "globex", "exports", "--json", check=False)
        assert globex.returncode == 0 and json.loads(globex.stdout) == [], globex.stderr
        config = box.run(account_admin, "acme", "config", "show", check=False)
        assert "imap.password: file /run/credentials/run-" in config.stdout, config.stdout
        for secret in secrets_of(env):
            assert secret not in config.stdout
    finally:
        for account in states:
            box.ctl("stop", f"inbox-poller@{account}.service", check=False)
