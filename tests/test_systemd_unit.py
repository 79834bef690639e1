"""The shipped systemd unit: exposure score, syntax, layout, and inbox-poller run under it.

The first tests need only ``systemd-analyze`` (package ``systemd``; in CI its absence
is a failure). The ``systemd_box`` tests boot a throwaway systemd 252 in namespaces
(tests/plugins/systemd_box.py) and run the real CLI, and a small notify probe built
on ``inbox_poller.sdnotify``, under the unit's real sandbox; they skip where that
cannot be done (not root, or a host already run by systemd).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from inbox_poller.config import load_config
from inbox_poller.simulator import DEFAULT_TOKEN
from tests.plugins.dovecot import running_in_ci
from tests.plugins.loop import LoopEnv
from tests.plugins.systemd_box import BOX_BIN, BOX_RUN, BOX_UNIT, SystemdBox

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = REPO_ROOT / "systemd"
UNIT = SYSTEMD_DIR / "inbox-poller.service"
UNIT_CONFIG = SYSTEMD_DIR / "config.toml"
IP_DENY_DROPIN = SYSTEMD_DIR / "ip-address-deny.conf"
ADMIN_SCRIPT = SYSTEMD_DIR / "inbox-poller-admin"
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


# ---- the exposure score (reliability.md 7.8, checklist 6) ------------------------------


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


def verify(tmp_path: Path, unit_text: str, dropins: dict[str, str] | None = None) -> str:
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
    (units / "inbox-poller.service").write_text(unit_text, encoding="utf-8")
    for name, text in (dropins or {}).items():
        (units / "inbox-poller.service.d").mkdir(exist_ok=True)
        (units / "inbox-poller.service.d" / name).write_text(text, encoding="utf-8")
    for stub in (root / "opt/inbox-poller/venv/bin/inbox-poller", root / "usr/bin/kill"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    result = subprocess.run(
        [tool, "verify", f"--root={root}", "--man=no", "--generators=no", "inbox-poller.service"],
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


# ---- inbox-poller under the real sandbox (systemd 252 booted in namespaces) -------------

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

[download]
allowed_hosts = ["{host_rule}"]
allow_private_addresses = true
ca_file = "/etc/inbox-poller/pinpointe-ca.pem"

[archive]
dir = "/var/lib/inbox-poller/archive"

[state]
path = "/var/lib/inbox-poller/state.db"
"""

PROBE = r'''
"""Runs as the service: describe the sandbox, then speak sd_notify until told to stop."""
import json, mmap, os, signal, socket, sys, time
from pathlib import Path

import ijson
from inbox_poller.sdnotify import Notifier

flags = {"hup": False, "term": False}
signal.signal(signal.SIGHUP, lambda *_: flags.update(hup=True))
signal.signal(signal.SIGTERM, lambda *_: flags.update(term=True))


def attempt(fn):
    try:
        return "ok " + str(fn())
    except Exception as exc:
        return type(exc).__name__ + " " + str(getattr(exc, "errno", ""))


def wx():
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()


status = dict(
    line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines()
    if ":\t" in line
)
print(json.dumps({
    "uid": os.getuid(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "cap_eff": status["CapEff"].strip(),
    "environ": dict(os.environ),
    "argv": sys.argv,
    "credentials": sorted(os.listdir(os.environ["CREDENTIALS_DIRECTORY"])),
    "wx_mmap": attempt(wx),
    "yajl2_c": attempt(lambda: ijson.get_backend("yajl2_c").backend_name),
    "write_etc": attempt(lambda: Path("/etc/inbox-poller/x").write_text("x")),
    "write_opt": attempt(lambda: Path("/opt/inbox-poller/x").write_text("x")),
    "write_state": attempt(lambda: Path(os.environ["STATE_DIRECTORY"], "x").write_text("x")),
    "list_root": attempt(lambda: os.listdir("/root")),
    "list_home": attempt(lambda: os.listdir("/home")),
    "list_tmp": attempt(lambda: os.listdir("/tmp")),
    "pids": [p for p in os.listdir("/proc") if p.isdigit()],
    "proc_meminfo": attempt(lambda: Path("/proc/meminfo").read_text()[:1]),
    "dev_rtc": attempt(lambda: os.listdir("/dev/rtc0")),
    "setuid0": attempt(lambda: os.setuid(0)),
    "sethostname": attempt(lambda: socket.sethostname("box")),
    "netlink": attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
    "packet": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
}), flush=True)

mode = sys.argv[1]
if mode.startswith("exit"):
    sys.exit(int(mode[4:]))
notifier = Notifier()
notifier.ready()
notifier.status(f"probe: {mode}\nsecond line")
while True:
    if flags["hup"]:
        flags["hup"] = False
        notifier.reloading()
        time.sleep(0.3)
        notifier.ready()
        notifier.status("probe: reloaded")
        print("reloaded", flush=True)
    if flags["term"]:
        notifier.stopping()
        print("stopping", flush=True)
        sys.exit(0)
    if mode != "hang":
        notifier.watchdog()
    time.sleep(min(notifier.watchdog_interval_s or 1.0, 0.2))
'''

FAST_RESTARTS = "WatchdogSec=2s\nRestartSec=1s\n"


def install_config(box: SystemdBox, env: LoopEnv) -> None:
    """The documented install: config.toml 0644, CA files beside it, credentials 0600."""
    box.write(
        "/etc/inbox-poller/config.toml",
        BOX_CONFIG.format(
            api_url=env.sim.api_url,
            api_user=env.sim.username,
            imaps_port=env.dovecot.imaps_port,
            imap_user=env.dovecot.user,
            folder=env.folder,
            processed=env.processed,
            host_rule=env.sim.host_rule,
        ),
    )
    box.write("/etc/inbox-poller/pinpointe-ca.pem", env.sim.ca_file.read_text())
    box.write("/etc/inbox-poller/imap-ca.pem", env.dovecot.ca_file.read_text())
    box.path("/etc/credstore").mkdir(mode=0o700, exist_ok=True)
    box.write("/etc/credstore/inbox-poller.pinpointe-usertoken", env.sim.token, 0o600)
    box.write("/etc/credstore/inbox-poller.imap-password", env.dovecot.password, 0o600)
    box.run("rm", "-rf", "/var/lib/private/inbox-poller", "/var/lib/inbox-poller")


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


def start_probe(box: SystemdBox, mode: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    box.write(BOX_RUN / "probe.py", PROBE)
    log = box.configure(
        f"probe-{mode}",
        f"ExecStart=\nExecStart={BOX_BIN}/python {BOX_RUN}/probe.py {mode}\n{FAST_RESTARTS}",
    )
    return box.ctl("start", BOX_UNIT, check=False), log


def probe_report(log: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads(log.read_text().splitlines()[0])
    return report


def test_the_cli_works_under_the_shipped_sandbox(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box = systemd_box
    install_config(box, loop_env)
    shown, out = run_cli(box, "check", "check")
    assert shown["Result"] == "success", out
    assert "readable from file /run/credentials/inbox-poller.service/imap-password" in out
    assert "readable from file /run/credentials/inbox-poller.service/pinpointe-usertoken" in out

    shown, out = run_cli(box, "submit", "submit --stat 4242")
    assert shown["Result"] == "success", out
    job_id = out.strip().splitlines()[-1]
    loop_env.sim.job(job_id).wait_delivered(30)

    shown, out = run_cli(box, "run", "run --once")
    assert shown["Result"] == "success", out
    assert "archived 1, acknowledged 1, failed 0" in out
    state = box.path("/var/lib/private/inbox-poller")
    payloads = list(state.rglob("*.json"))
    assert len(payloads) == 1
    digest = hashlib.sha256(payloads[0].read_bytes()).hexdigest()
    assert digest == loop_env.sim.job(job_id).sha256
    owners = {p.stat().st_uid for p in [state, *state.rglob("*")]}
    assert len(owners) == 1
    assert 61184 <= owners.pop() <= 65519  # DynamicUser's range
    for path in state.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path  # UMask=0077, modes 0600/0700

    # checklist 8: no secret in the output, the unit's environment or its command lines
    unit_props = box.ctl("show", BOX_UNIT).stdout
    for secret in (DEFAULT_TOKEN, loop_env.sim.token, loop_env.dovecot.password):
        assert secret not in out
        assert secret not in unit_props


def test_a_bad_config_exits_78_and_is_not_restarted(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box = systemd_box
    install_config(box, loop_env)
    box.write("/etc/inbox-poller/config.toml", "[imap]\nport = 99999\n")
    log = box.configure(
        "bad-config",
        f"ExecStart=\nExecStart={BOX_BIN}/inbox-poller -c ${{CONFIGURATION_DIRECTORY}}/"
        f"config.toml run --once\n{FAST_RESTARTS}",
    )
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
    box.configure("no-credential", f"ExecStart=\nExecStart=/bin/true\n{FAST_RESTARTS}")
    assert box.ctl("start", BOX_UNIT, check=False).returncode != 0
    time.sleep(2.5)  # more than RestartSec
    shown = box.show("ActiveState", "ExecMainStatus", "NRestarts")
    assert shown == {"ActiveState": "failed", "ExecMainStatus": "243", "NRestarts": "0"}


def test_other_failures_are_restarted(systemd_box: SystemdBox, loop_env: LoopEnv) -> None:
    install_config(systemd_box, loop_env)
    start_probe(systemd_box, "exit3")
    shown = systemd_box.wait_for("NRestarts", "2", timeout_s=10)
    assert shown["NRestarts"] == "2", shown


def test_ready_status_reload_and_stop_reach_systemd(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    box = systemd_box
    install_config(box, loop_env)
    started, log = start_probe(box, "normal")
    assert started.returncode == 0, started.stderr  # start returns only after READY=1
    shown = box.show("ActiveState", "SubState", "StatusText", "WatchdogUSec")
    assert shown == {
        "ActiveState": "active",
        "SubState": "running",
        "StatusText": "probe: normal second line",
        "WatchdogUSec": "2s",
    }
    assert box.ctl("reload", BOX_UNIT, check=False).returncode == 0
    assert box.wait_for("StatusText", "probe: reloaded", 5)["StatusText"] == "probe: reloaded"
    time.sleep(3)  # longer than WatchdogSec=2s: the pings keep it alive
    assert box.show("ActiveState", "NRestarts") == {"ActiveState": "active", "NRestarts": "0"}
    assert box.ctl("stop", BOX_UNIT, check=False).returncode == 0
    assert box.show("Result", "ExecMainStatus") == {"Result": "success", "ExecMainStatus": "0"}
    assert log.read_text().splitlines()[1:] == ["reloaded", "stopping"]


def test_the_watchdog_restarts_a_hung_service(systemd_box: SystemdBox, loop_env: LoopEnv) -> None:
    install_config(systemd_box, loop_env)
    started, _ = start_probe(systemd_box, "hang")
    assert started.returncode == 0
    shown = systemd_box.wait_for("NRestarts", "1", timeout_s=10)  # WatchdogSec 2s + RestartSec 1s
    assert shown["NRestarts"] == "1", shown


def test_the_sandbox_holds(systemd_box: SystemdBox, loop_env: LoopEnv) -> None:
    install_config(systemd_box, loop_env)
    started, log = start_probe(systemd_box, "normal")
    assert started.returncode == 0
    report = probe_report(log)
    assert 61184 <= int(str(report["uid"])) <= 65519
    assert (report["no_new_privs"], report["seccomp"]) == ("1", "2")
    assert report["cap_eff"] == "0000000000000000"
    assert report["credentials"] == ["imap-password", "pinpointe-usertoken"]
    assert report["wx_mmap"] == "PermissionError 1"  # MemoryDenyWriteExecute
    assert report["yajl2_c"] == "ok yajl2_c"
    assert str(report["write_state"]).startswith("ok")
    for denied in ("write_etc", "write_opt", "list_root", "list_home"):
        assert not str(report[denied]).startswith("ok"), (denied, report[denied])
    assert report["list_tmp"] == "ok []"  # PrivateTmp
    pids = report["pids"]
    assert isinstance(pids, list)
    assert len(pids) == 1  # ProtectProc=invisible: other users' processes are hidden
    assert str(report["proc_meminfo"]).startswith("FileNotFoundError")  # ProcSubset=pid
    assert not str(report["dev_rtc"]).startswith("ok")  # PrivateDevices
    for refused in ("setuid0", "sethostname", "netlink", "packet"):
        assert not str(report[refused]).startswith("ok"), (refused, report[refused])
    environ = report["environ"]
    assert isinstance(environ, dict)
    for secret in (loop_env.sim.token, loop_env.dovecot.password):
        assert secret not in json.dumps(environ)
    systemd_box.ctl("stop", BOX_UNIT)


def test_the_ip_address_deny_drop_in_leaves_loopback_reachable(
    systemd_box: SystemdBox, loop_env: LoopEnv
) -> None:
    install_config(systemd_box, loop_env)
    shipped = parse_unit(IP_DENY_DROPIN.read_text(encoding="utf-8"))
    deny = one(shipped, "Service", "IPAddressDeny")
    shown, out = run_cli(systemd_box, "ip-deny", "check", f"IPAddressDeny={deny}\n")
    assert shown["Result"] == "success", out
    # The control: denying loopback must break the same check, or the firewall is not on.
    shown, out = run_cli(systemd_box, "ip-deny-localhost", "check", "IPAddressDeny=localhost\n")
    if shown["Result"] == "success":
        pytest.skip("IPAddressDeny= is not enforced in this box (no cgroup BPF)")
    assert "FAIL imap" in out
