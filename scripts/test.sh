#!/usr/bin/env bash
# The test command: everything CI runs. Installs what is missing, then lint, types, the
# rules between rooms and the whole suite, integration tests against a real Dovecot included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH:/usr/sbin"
ruff check inbox_poller tests bench
ruff format --check inbox_poller tests bench
mypy
lint-imports --no-cache
pytest "$@"
