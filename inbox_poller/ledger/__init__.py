"""The ledger: the durable state of every export and every mail, in one SQLite file."""
