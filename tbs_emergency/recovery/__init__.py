"""Data protection, as plain logic: backups, restores, point-in-time recovery, flashback.

No Prefect and no driver is imported here. The modules say what a backup is (its manifest and
the layout of its objects in storage), which backups retention keeps, how a table is split into
chunks, when a point-in-time recovery is possible and what it would do, how a flashback undoes
changes, and what a reconciliation report contains. The tasks in `tasks/backup.py` and
`tasks/recovery.py` do the external steps; docs/recovery.md describes the procedures.
"""
