"""``inbox-poller migrate``: a SQLite ledger and a local archive to PostgreSQL and S3."""
