"""A throwaway systemd, booted as PID 1 of its own namespaces, to run the shipped unit.

On a machine whose PID 1 is not systemd (containers, CI sandboxes), root can still
boot the installed ``/lib/systemd/systemd`` inside fresh PID, mount, cgroup, UTS and
IPC namespaces. It then manages real services with the real sandbox: DynamicUser,
LoadCredential, ProtectSystem, seccomp, MemoryDenyWriteExecute, the notify socket,
the watchdog and restarts. The network namespace is shared, so the service reaches
the session Dovecot and the Pinpointe simulator on loopback.

The host is left alone: inside the box ``/run``, ``/var/lib``, ``/var/log``, ``/opt``,
``/tmp``, ``/var/tmp`` and ``/dev/shm`` are fresh tmpfs mounts and ``/etc`` is an overlay whose
writes land in the box's directory. The host's boot units are masked and the box
boots only its own ``box.target``; every service (transient ones too) gets
``DefaultDependencies=no`` from a ``service.d`` drop-in, so nothing pulls in
``sysinit.target``. The interpreter and the checkout are bound read-only under
``/opt/inbox-poller`` (a stand-in for the documented venv), because ProtectHome=
and PrivateTmp= hide /root, /home and /tmp from the service.

``systemd_box`` (module-scoped) yields a booted :class:`SystemdBox` with the unit
installed, or skips with the reason the box cannot run here (not root, no systemd
binary, a host already run by systemd, no overlayfs, ...). It plants a file in the
host's ``/tmp`` before boot and fails the module if the file is gone afterwards.
:meth:`SystemdBox.start_dbus` starts a D-Bus system bus inside the box, which
``systemd-run`` (and so ``systemd/inbox-poller-admin``) needs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_UNIT = REPO_ROOT / "systemd" / "inbox-poller.service"
BOX_UNIT = "inbox-poller.service"
SYSTEMD_BINARY = Path("/lib/systemd/systemd")
BOX_PREFIX = Path("/opt/inbox-poller")
BOX_PYTHON_ROOT = BOX_PREFIX / "python"
BOX_SRC = BOX_PREFIX / "src"
BOX_BIN = BOX_PREFIX / "venv" / "bin"
BOX_RUN = Path("/run/box")
BOX_ADMIN = BOX_SRC / "systemd" / "inbox-poller-admin"
DBUS_DAEMON = Path("/usr/bin/dbus-daemon")
OPT_IN_ENV = "INBOX_POLLER_SYSTEMD_BOX"
BOOT_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 120.0
_HIDDEN_FROM_SERVICE = (Path("/root"), Path("/home"), Path("/run/user"), Path("/tmp"))

NEVER_STARTED = ("sysinit.target", "basic.target", "rescue.target", "emergency.target")
MASKED_UNITS = (
    *NEVER_STARTED,
    "rescue.service",
    "emergency.service",
    "network-online.target",
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-sysctl.service",
    "systemd-sysusers.service",
    "systemd-journald.service",
    "systemd-journald.socket",
    "systemd-journald-dev-log.socket",
    "console-getty.service",
)
"""Units that must never run in the box: they would act on the shared host."""

NO_DEFAULT_DEPENDENCIES = """\
[Unit]
# The box never starts sysinit.target (it would run the host's boot services), and a
# unit that Requires= a masked unit cannot start: so no unit may depend on it.
DefaultDependencies=no
"""
"""Applied to every service (``service.d/``, transient ones included) and to D-Bus's socket."""

TEST_DROPIN = """\
[Service]
StandardOutput=append:{log}
StandardError=inherit
{extra}
"""


class BoxUnavailable(Exception):
    """The box cannot run on this machine; the message says why."""


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _cgroup2_dir() -> Path:
    """Return our own cgroup's directory in the unified (v2) hierarchy."""
    mount_point = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup2":
            mount_point = Path(left.split()[4])
            break
    if mount_point is None:
        raise BoxUnavailable("no cgroup2 (unified) hierarchy is mounted")
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return mount_point / line[3:].lstrip("/")
    raise BoxUnavailable("this process is not in the unified cgroup hierarchy")


def _check_host() -> None:
    if os.environ.get(OPT_IN_ENV) != "1":
        raise BoxUnavailable(f"opt-in: set {OPT_IN_ENV}=1 (boots a systemd as root)")
    if os.geteuid() != 0:
        raise BoxUnavailable("needs root (mount and PID namespaces)")
    if Path("/run/systemd/system").exists():
        raise BoxUnavailable("the host runs systemd: use systemd-run there, not a second PID 1")
    if not SYSTEMD_BINARY.exists():
        raise BoxUnavailable(f"{SYSTEMD_BINARY} is missing (apt-get install systemd)")
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            raise BoxUnavailable(f"{tool} is missing (util-linux)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise BoxUnavailable("the kernel has no overlayfs")


class _PythonLayout:
    """Where this interpreter and its packages appear inside the box."""

    def __init__(self) -> None:
        self.base = Path(sys.base_prefix).resolve()
        executable = Path(os.path.realpath(sys.executable))
        if not _under(executable, self.base):
            raise BoxUnavailable(f"{executable} is not under {self.base}")
        self.executable = self.translate(executable)
        libdir = Path(str(sysconfig.get_config_var("LIBDIR") or self.base / "lib")).resolve()
        self.libdir = self.translate(libdir)
        self.pythonpath = [BOX_SRC] + [
            self.translate(Path(entry).resolve())
            for entry in sys.path
            if entry.endswith(("site-packages", "dist-packages")) and Path(entry).is_dir()
        ]

    def translate(self, path: Path) -> Path:
        if _under(path, self.base):
            return BOX_PYTHON_ROOT / path.relative_to(self.base)
        if _under(path, REPO_ROOT):
            return BOX_SRC / path.relative_to(REPO_ROOT)
        if any(_under(path, hidden) for hidden in _HIDDEN_FROM_SERVICE):
            raise BoxUnavailable(f"{path} would be hidden from the service")
        return path

    def python_wrapper(self) -> str:
        # Stands in for /opt/inbox-poller/venv/bin/python of the documented install.
        return (
            "#!/bin/sh\n"
            f"export LD_LIBRARY_PATH={shlex.quote(str(self.libdir))}\n"
            f"export PYTHONPATH={shlex.quote(':'.join(map(str, self.pythonpath)))}\n"
            "export PYTHONDONTWRITEBYTECODE=1\n"
            f'exec {shlex.quote(str(self.executable))} "$@"\n'
        )


def _boot_script(workdir: Path, layout: _PythonLayout) -> str:
    stage = workdir / "stage"
    q = shlex.quote
    overlay = f"lowerdir=/etc,upperdir={workdir / 'etc-upper'},workdir={workdir / 'etc-work'}"
    return f"""#!/bin/sh
set -eu
mount --make-rprivate /
mount --bind {q(str(layout.base))} {q(str(stage / "python"))}
mount --bind {q(str(REPO_ROOT))} {q(str(stage / "src"))}
mount -t proc proc /proc
for dir in /run /var/lib /var/log /opt; do mount -t tmpfs -o mode=0755 tmpfs "$dir"; done
mount -t overlay overlay -o {q(overlay)} /etc
mkdir -p {BOX_PYTHON_ROOT} {BOX_SRC} {BOX_BIN} {BOX_RUN}/out
mount --bind -o ro {q(str(stage / "python"))} {BOX_PYTHON_ROOT}
mount --bind -o ro {q(str(stage / "src"))} {BOX_SRC}
mount -o remount,bind,ro {BOX_PYTHON_ROOT}
mount -o remount,bind,ro {BOX_SRC}
cp {q(str(workdir / "python"))} {BOX_BIN}/python
cp {q(str(workdir / "inbox-poller"))} {BOX_BIN}/inbox-poller
chmod 0755 {BOX_BIN}/python {BOX_BIN}/inbox-poller
# last, as boot.sh itself lives in /tmp: the box must never touch the host's /tmp
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# PrivateDevices= binds /dev/shm into the service's /dev: let that be the box's own
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# systemd moves credential mounts by propagation: give it shared mounts of its own
mount --make-rshared /
export container=inbox-poller-test
exec {SYSTEMD_BINARY} --system --unit=box.target --log-target=console </dev/null
"""


def _child_of(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent:
            return int(entry.name)
    return None


class SystemdBox:
    """A booted systemd in namespaces, with the shipped unit installed in /etc."""

    def __init__(self, workdir: Path) -> None:
        _check_host()
        self.workdir = workdir
        self.layout = _PythonLayout()
        self.cgroup = _cgroup2_dir() / f"inbox-poller-box-{secrets.token_hex(4)}"
        self.pid = 0
        self._process: subprocess.Popen[bytes] | None = None

    # ---- life cycle -----------------------------------------------------------------

    def boot(self) -> None:
        for name in ("etc-upper/systemd/system", "etc-work", "stage/python", "stage/src"):
            (self.workdir / name).mkdir(parents=True)
        self._stage_units(self.workdir / "etc-upper/systemd/system")
        (self.workdir / "python").write_text(self.layout.python_wrapper())
        (self.workdir / "inbox-poller").write_text(
            f'#!/bin/sh\nexec {BOX_BIN}/python -m inbox_poller "$@"\n'
        )
        boot = self.workdir / "boot.sh"
        boot.write_text(_boot_script(self.workdir, self.layout))
        try:
            self.cgroup.mkdir()
        except OSError as exc:
            raise BoxUnavailable(f"cannot create the cgroup {self.cgroup}: {exc}") from exc
        enter = (
            f"echo $$ > {shlex.quote(str(self.cgroup / 'cgroup.procs'))} && exec unshare "
            f"--pid --fork --mount --cgroup --uts --ipc -- /bin/sh {shlex.quote(str(boot))}"
        )
        self._process = subprocess.Popen(
            ["/bin/sh", "-c", enter],
            stdout=(self.workdir / "console.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_until_running()
        active = self.ctl("is-active", *NEVER_STARTED, check=False).stdout.split()
        if "active" in active:
            # A fallback to rescue.target would run the host's boot services.
            self.shutdown()
            raise RuntimeError(f"the box started host boot units: {NEVER_STARTED} {active}")

    @staticmethod
    def _stage_units(units: Path) -> None:
        """Put the units in /etc before boot: a missing --unit= target falls back to
        rescue.target, whose sysinit.target runs the host's boot services (tmpfiles
        would empty /tmp, which the box shares with the host but for its own tmpfs)."""
        (units / "box.target").write_text("[Unit]\nDefaultDependencies=no\n")
        (units / BOX_UNIT).write_text(SHIPPED_UNIT.read_text())
        for name in MASKED_UNITS:
            (units / name).symlink_to("/dev/null")
        for dropins in ("service.d", "dbus.socket.d"):
            (units / dropins).mkdir()
            (units / dropins / "box.conf").write_text(NO_DEFAULT_DEPENDENCIES)

    def _wait_until_running(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            self.pid = self.pid or (_child_of(self._process.pid) or 0)
            if self.pid:
                state = self.ctl("is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.1)
        console = (self.workdir / "console.log").read_text(errors="replace")[-2000:]
        raise BoxUnavailable(f"systemd did not come up in the box: {console}")

    def shutdown(self) -> None:
        if self.pid:
            # Killing a PID namespace's init kills everything in it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while self.cgroup.exists():
            leftovers = sorted(self.cgroup.rglob("*"), key=lambda p: -len(p.parts))
            try:
                for path in leftovers:
                    if path.is_dir():
                        path.rmdir()
                self.cgroup.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # ---- access -----------------------------------------------------------------------

    def path(self, inside: str | Path) -> Path:
        """The host's view of a path inside the box (PID 1's mount namespace)."""
        return Path(f"/proc/{self.pid}/root") / Path(inside).relative_to("/")

    def write(self, inside: str | Path, text: str, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the box's namespaces (as root, outside any unit)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", "--", *args],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=check,
        )

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, *properties: str) -> dict[str, str]:
        out = self.ctl("show", BOX_UNIT, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def configure(self, name: str, extra: str = "") -> Path:
        """Replace the test drop-in (output to a log named *name*); return the log's path."""
        self.ctl("stop", BOX_UNIT, check=False)
        self.ctl("reset-failed", BOX_UNIT, check=False)
        log = BOX_RUN / "out" / f"{name}.log"
        self.write(
            f"/etc/systemd/system/{BOX_UNIT}.d/test.conf",
            TEST_DROPIN.format(log=log, extra=extra),
        )
        self.ctl("daemon-reload")
        return self.path(log)

    def start_dbus(self) -> None:
        """Start the system bus in the box (its socket is in the box's own /run).

        ``systemd-run`` asks PID 1 over D-Bus, so ``inbox-poller-admin`` needs it.
        """
        if not DBUS_DAEMON.exists():
            raise BoxUnavailable(f"{DBUS_DAEMON} is missing (apt-get install dbus)")
        self.ctl("start", "dbus.service")

    def main_pid(self) -> int:
        """The service's main PID, as the box (and its /proc) numbers it; 0 if none."""
        return int(self.show("MainPID")["MainPID"])

    def proc(self, pid: int) -> Path:
        """The host's view of /proc/PID inside the box (the box's own procfs)."""
        return self.path(f"/proc/{pid}")

    def wait_for(self, prop: str, value: str, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            shown = self.show(prop, "ActiveState", "SubState", "Result", "NRestarts")
            if shown.get(prop) == value or time.monotonic() > deadline:
                return shown
            time.sleep(0.1)


@pytest.fixture(scope="module")
def systemd_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdBox]:
    """A booted throwaway systemd with the shipped unit installed (module-scoped)."""
    try:
        box = SystemdBox(tmp_path_factory.mktemp("systemd-box"))
    except BoxUnavailable as exc:
        pytest.skip(f"no systemd box here: {exc}")
    # An earlier box once ran systemd-tmpfiles against the host and emptied /tmp.
    canary = Path("/tmp") / f"inbox-poller-box-canary-{secrets.token_hex(4)}"
    canary.write_text("the systemd box must leave the host's /tmp alone\n")
    try:
        try:
            box.boot()
        except BoxUnavailable as exc:
            box.shutdown()
            pytest.skip(f"no systemd box here: {exc}")
        try:
            yield box
        finally:
            box.shutdown()
        assert canary.exists(), f"the systemd box deleted {canary} from the host's /tmp"
    finally:
        canary.unlink(missing_ok=True)
