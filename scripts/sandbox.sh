#!/usr/bin/env bash
# Run the whole loop on this machine: a simulated Pinpointe (https, local CA) and a
# throwaway Dovecot; inbox-poller's real code submits, receives, downloads, archives
# and acknowledges one export, printing each step.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH:/usr/sbin"
exec inbox-poller sandbox "$@"
