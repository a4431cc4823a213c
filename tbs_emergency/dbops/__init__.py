"""Database emergency procedures, the plain-Python core (no Prefect, no driver).

- `targets`: which servers a procedure acts on (environments sharing a server are one target).
- `records`: the "previous settings" a change will undo, written before anything changes to
  the object store (`state/<kind>/<server>.json`) and to the incident journal.
- `connection_limits`: which sessions to close (oldest idle first), the per-account caps and
  disabled logins that hold the limit, and how lifting restores exactly what was recorded.
- `transactions`: waiting for the transactions open at the start to finish; forcing the rest.
- `archive`: which privileges make the archive schema writable, which to revoke, how to restore.
- `cache`: HeavyDB memory clears, MySQL flushes, service restarts, each followed by a probe.
- `sync`: bringing the target environment's tables to the source's content in key batches.

The procedures run over the Protocols of `tbs_emergency.connectors.base`, so the unit tests use
fakes and the integration tests the real servers; the Prefect layer (`tasks/database.py`,
`flows/db_*.py`) wraps one procedure on one server as one task.
"""
