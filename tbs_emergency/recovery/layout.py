"""Where backups and recovery records live in object storage (keys relative to the prefix).

backups/<id>/manifest.json                         written last; its presence makes the backup
backups/<id>/mysql/<database>/<table>/<n>.tsv.lz4  one object per key-range chunk
backups/<id>/heavydb/<database>/<table>.dump.<c>   one HeavyDB DUMP archive per table
heavydb-epochs/<stamp>-<token>.json                table epochs recorded at a time
flashback/<id>/journal.json                        what a flashback planned and did
recoveries/<id>/report.json                        a recovery's reconciliation report
"""

from __future__ import annotations

from tbs_emergency.recovery.ids import validate_id

BACKUPS = "backups/"
EPOCHS = "heavydb-epochs/"
FLASHBACK = "flashback/"
RECOVERIES = "recoveries/"
MANIFEST = "manifest.json"


def _part(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or any(ord(c) < 32 for c in name):
        raise ValueError(f"{name!r} cannot be part of an object key")
    return name


def backup_prefix(backup_id: str) -> str:
    return f"{BACKUPS}{validate_id(backup_id)}/"


def manifest_key(backup_id: str) -> str:
    return backup_prefix(backup_id) + MANIFEST


def mysql_chunk_key(backup_id: str, database: str, table: str, index: int) -> str:
    return f"{backup_prefix(backup_id)}mysql/{_part(database)}/{_part(table)}/{index:05d}.tsv.lz4"


def heavydb_dump_key(backup_id: str, database: str, table: str, compression: str) -> str:
    ext = {"gzip": "gz", "lz4": "lz4", "none": "raw"}[compression]
    return f"{backup_prefix(backup_id)}heavydb/{_part(database)}/{_part(table)}.dump.{ext}"


def epochs_key(stamp_id: str) -> str:
    return f"{EPOCHS}{validate_id(stamp_id, 'epoch record id')}.json"


def flashback_journal_key(run_id: str) -> str:
    return f"{FLASHBACK}{validate_id(run_id, 'flashback id')}/journal.json"


def recovery_report_key(run_id: str) -> str:
    return f"{RECOVERIES}{validate_id(run_id, 'recovery id')}/report.json"


def backup_id_of(key: str) -> str | None:
    """The backup id a key under backups/ belongs to, else None."""
    if not key.startswith(BACKUPS):
        return None
    rest = key[len(BACKUPS) :]
    return rest.split("/", 1)[0] or None


def reconcile_key(run_id: str) -> str:
    return f"{RECOVERIES}{validate_id(run_id, 'recovery id')}/reconcile.json"
