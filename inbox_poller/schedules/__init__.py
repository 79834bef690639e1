"""Scheduled exports: the ``[[export]]`` tables, their date windows, and what is due when.

Pure: no I/O and no running scheduler. Time is always a parameter (aware datetimes,
computed in UTC), so the daemon, ``run --once`` and the tests share the same decisions.
APScheduler contributes only its triggers, which define *when* a schedule fires; the
ledger, not a persistent job store, decides what was already submitted
(docs/reliability.md §5). The rules are in docs/schedules.md:

- ``table``: one ``[[export]]`` table and its validation (§1);
- ``windows``: fire times and the date window each one asks for (§2);
- ``due``: what the schedules ask for since their last fire (§3);
- ``duplicates``: whether a due submission is already in the ledger (§4);
- ``jobs``: the APScheduler job the daemon registers per schedule (§3).
"""
