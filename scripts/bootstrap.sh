#!/usr/bin/env bash
# Install what inbox-poller's sandbox, tests and benchmarks need on a fresh Debian
# machine: Debian packages (Dovecot, PostgreSQL, openssl, curl), Courier-IMAP and promtool unpacked
# into private prefixes (the second test server, docs/providers.md; the alert rules'
# checker, docs/metrics.md), and the package itself, with its test tools, in ./.venv. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
# PostgreSQL's server programs, for the throwaway clusters of the tests (docs/engines.md)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
# Courier-IMAP's libraries (its own packages conflict with dovecot-imapd: see below)
courier_libs=(libcourier-unicode4 libgamin0 gamin libgdbm6 libgnutls30 libidn12 libltdl7 libpcre3 perl)
for package in "${courier_libs[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
        missing+=("$package")
done
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
updated=false
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    updated=true
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" postgresql "* ]]; then
        # The package creates and may start a cluster of its own ("main", port 5432) that
        # the tests never use (they start private ones): stop it and keep it from starting
        # at boot. A PostgreSQL that was installed before is left alone.
        for conf in /etc/postgresql/*/*/start.conf; do
            [ -f "$conf" ] && "${sudo[@]}" sed -i 's/^auto$/manual/' "$conf"
        done
        if [ -d /run/systemd/system ]; then
            "${sudo[@]}" systemctl disable --now -q postgresql 2>/dev/null || true
        fi
        pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _ status _; do
            if [ "$status" = online ]; then
                "${sudo[@]}" pg_ctlcluster "$version" "$cluster" stop
            fi
        done
    fi
fi

# Courier-IMAP, the second server the tests run: its packages declare Conflicts:
# imap-server, so they are downloaded and unpacked into a private prefix, never
# installed (inbox_poller/sandbox/courier/install.py lists what it needs).
courier_prefix="${INBOX_POLLER_COURIER_PREFIX:-/opt/inbox-poller/courier}"
courier_packages=(courier-imap courier-base courier-authlib courier-authdaemon courier-authlib-userdb)
if [ ! -x "$courier_prefix/usr/lib/courier/courier/imaplogin" ]; then
    echo "bootstrap: unpacking Courier-IMAP into $courier_prefix" >&2
    "$updated" || "${sudo[@]}" apt-get update -qq
    debs="$(mktemp -d)"
    chmod 0755 "$debs"  # apt's download user writes here
    (cd "$debs" && "${sudo[@]}" apt-get download -qq "${courier_packages[@]}" 2>/dev/null)
    "${sudo[@]}" mkdir -p "$courier_prefix.tmp"
    for deb in "$debs"/*.deb; do
        "${sudo[@]}" dpkg-deb -x "$deb" "$courier_prefix.tmp"
    done
    "${sudo[@]}" rm -rf "$courier_prefix"
    "${sudo[@]}" mv "$courier_prefix.tmp" "$courier_prefix"
    "${sudo[@]}" rm -rf "$debs"
fi

# promtool, which checks and unit-tests contrib/prometheus/alerts.yml and lints the
# metrics' names (tests/contrib, tests/metrics): Debian's prometheus package provides it;
# it is unpacked into a private prefix, never installed, so that no Prometheus server is
# enabled on this machine.
promtool_prefix="${INBOX_POLLER_PROMTOOL_PREFIX:-/opt/inbox-poller/prometheus}"
if [ ! -x "$promtool_prefix/usr/bin/promtool" ]; then
    echo "bootstrap: unpacking promtool into $promtool_prefix" >&2
    "$updated" || "${sudo[@]}" apt-get update -qq
    updated=true
    debs="$(mktemp -d)"
    chmod 0755 "$debs"  # apt's download user writes here
    (cd "$debs" && "${sudo[@]}" apt-get download -qq prometheus 2>/dev/null)
    "${sudo[@]}" rm -rf "$promtool_prefix.tmp"
    "${sudo[@]}" mkdir -p "$promtool_prefix.tmp"
    "${sudo[@]}" dpkg-deb -x "$debs"/prometheus_*.deb "$promtool_prefix.tmp"
    "${sudo[@]}" "$promtool_prefix.tmp/usr/bin/promtool" --version >/dev/null
    "${sudo[@]}" rm -rf "$promtool_prefix"
    "${sudo[@]}" mv "$promtool_prefix.tmp" "$promtool_prefix"
    "${sudo[@]}" rm -rf "$debs"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
