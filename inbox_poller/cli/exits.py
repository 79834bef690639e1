"""The exit codes of the command line, in a module of their own so that the parser
(``program``) can name them without importing the subcommands (``commands``)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75
"""``EX_TEMPFAIL``: the ledger is unavailable for now (a PostgreSQL restart); try again."""
EXIT_CONFIG = 78
"""``EX_CONFIG`` from sysexits.h: the unit file does not restart on it."""
EXIT_TIMEOUT = 124
"""``wait`` timed out (as ``timeout(1)`` does); the export is still under way."""
