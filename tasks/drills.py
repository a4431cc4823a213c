"""Drill tasks: the history in object storage, the trend chart, acknowledgements, channel
probes, and the backup and scratch-restore steps of the recovery drill.

The chart is a PNG drawn with matplotlib (Agg backend, imported inside the task: matplotlib
costs seconds to import and nothing on the emergency path needs it).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import task

from tasks.common import settings_for
from tasks.incident import connectors_for
from tbs_emergency.validation.drills import (
    ACKS,
    DrillRecord,
    TrendPoint,
    ack_key,
    load_history,
    save,
)


def render_chart(
    points: Sequence[TrendPoint],
    rto_manual_s: float,
    rto_automated_s: float,
    rpo_target_s: float | None,
    title: str,
) -> bytes:
    """RTO (top) and RPO (bottom) of recent drills against the runbook's targets, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax_rto, ax_rpo) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, dpi=90)
    try:
        xs = list(range(len(points)))
        labels = [f"{p.at:%m-%d %H:%M}\n{p.drill}" for p in points]
        markers = {"rollback": "o", "recovery": "s"}
        for drill in sorted({p.drill for p in points}):
            sel = [(i, p) for i, p in enumerate(points) if p.drill == drill]
            rto = [(i, p.rto_s) for i, p in sel if p.rto_s is not None]
            rpo = [(i, p.rpo_s) for i, p in sel if p.rpo_s is not None]
            if rto:
                ax_rto.plot(
                    [i for i, _ in rto],
                    [v for _, v in rto],
                    marker=markers.get(drill, "^"),
                    label=f"{drill} RTO",
                )
            if rpo:
                ax_rpo.plot(
                    [i for i, _ in rpo],
                    [v for _, v in rpo],
                    marker=markers.get(drill, "^"),
                    label=f"{drill} RPO",
                )
        ax_rto.axhline(
            rto_manual_s,
            color="tab:red",
            linestyle="--",
            linewidth=1,
            label=f"manual target {rto_manual_s:g} s",
        )
        ax_rto.axhline(
            rto_automated_s,
            color="tab:orange",
            linestyle=":",
            linewidth=1,
            label=f"automated target {rto_automated_s:g} s",
        )
        ax_rto.set_ylabel("RTO (s)")
        ax_rto.set_title(title)
        if rpo_target_s is not None:
            ax_rpo.axhline(
                rpo_target_s,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label=f"RPO target {rpo_target_s:g} s",
            )
        else:
            ax_rpo.text(
                0.01,
                0.9,
                "no RPO target in the runbook (drills.rpo_target_s)",
                transform=ax_rpo.transAxes,
                fontsize=8,
                color="gray",
            )
        ax_rpo.set_ylabel("RPO (s)")
        for ax in (ax_rto, ax_rpo):
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
            ax.set_ylim(bottom=0)
        if points:
            ax_rpo.set_xticks(xs, labels, fontsize=7)
        else:
            ax_rto.text(
                0.5,
                0.5,
                "no drill has measured RTO/RPO yet",
                ha="center",
                transform=ax_rto.transAxes,
            )
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@task(name="drill-history", retries=2, retry_delay_seconds=[1, 3], timeout_seconds=120)
def drill_history(config_path: str | None) -> tuple[list[DrillRecord], list[str]]:
    """Every drill record in the history (oldest first) and the ones that could not be read."""
    problems: list[str] = []
    records = load_history(connectors_for(config_path).store(), problems=problems)
    return records, problems


@task(name="drill-chart", retries=0, timeout_seconds=120)
def drill_chart(config_path: str | None, points: list[TrendPoint], title: str) -> bytes:
    d = settings_for(config_path).drills
    return render_chart(points, d.rto_manual_s, d.rto_automated_s, d.rpo_target_s, title)


@task(name="store-drill-object", retries=2, retry_delay_seconds=[1, 3], timeout_seconds=120)
def store_object(config_path: str | None, key: str, data: bytes, content_type: str) -> str:
    connectors_for(config_path).store().put(key, data, {"content-type": content_type})
    return key


@task(name="store-drill-record", retries=2, retry_delay_seconds=[1, 3], timeout_seconds=120)
def store_record(config_path: str | None, record: DrillRecord) -> str:
    """The history entry: its own timestamped key, never overwriting another run."""
    return save(connectors_for(config_path).store(), record)


def presigned_url(config_path: str | None, key: str, expires_s: int = 7 * 86400) -> str | None:
    """A time-limited link to a stored object, when the store can sign one (S3 can)."""
    store = connectors_for(config_path).store()
    try:
        return str(
            store.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": store.config.bucket, "Key": store.full_key(key)},
                ExpiresIn=expires_s,
            )
        )
    except Exception:
        return None


# -- acknowledgements (communication drill) ---------------------------------------------------


def record_ack(store: Any, drill_run_id: str, contact: str, by: str, note: str = "") -> str:
    """What `tbs-emergency drill ack` writes: one object per contact (the first one counts)."""
    key = ack_key(drill_run_id, contact)
    doc = {"contact": contact, "by": by, "note": note, "at": datetime.now(UTC).isoformat()}
    store.put(key, json.dumps(doc).encode(), {"content-type": "application/json"})
    return key


@task(name="read-drill-acks", retries=2, retry_delay_seconds=1, timeout_seconds=60)
def read_acks(config_path: str | None, drill_run_id: str) -> dict[str, dict[str, Any]]:
    """contact -> acknowledgement, for one drill run."""
    store = connectors_for(config_path).store()
    out: dict[str, dict[str, Any]] = {}
    for obj in store.list(f"{ACKS}/{drill_run_id}/"):
        try:
            doc = json.loads(store.get(obj.key))
        except Exception:
            continue
        if isinstance(doc, dict) and doc.get("contact"):
            out.setdefault(str(doc["contact"]), doc)
    return out


# -- channels -------------------------------------------------------------------------------------


@task(name="probe-channel", retries=1, retry_delay_seconds=2, timeout_seconds=60)
def probe_channel(config_path: str | None, channel: str) -> tuple[bool, str]:
    """Can the channel be reached (without sending anything)?"""
    from tasks.notify import notifier

    cfg = settings_for(config_path).channels[channel]
    if cfg.block:
        return True, f"Prefect block {cfg.block!r}: not probed (sent through Prefect)"
    try:
        p = notifier(config_path, channel).ping()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return bool(p.reachable), str(p.detail)


# -- recovery drill ------------------------------------------------------------------------------


@task(name="newest-backup", retries=2, retry_delay_seconds=[1, 3], timeout_seconds=300)
def newest_backup(config_path: str | None) -> dict[str, Any] | None:
    """The newest backup that exists (its manifest reads back intact), or None."""
    from tbs_emergency.recovery.catalog import scan

    complete = scan(connectors_for(config_path).store()).complete
    if not complete:
        return None
    m = complete[-1]
    return {
        "backup_id": m.backup_id,
        "environment": m.environment,
        "taken_at": m.taken_at,
        "binlog": str(m.mysql.binlog) if m.mysql and m.mysql.binlog else None,
        "mysql_tables": [t.name for t in m.mysql.tables] if m.mysql else [],
        "heavydb_tables": [t.name for t in m.heavydb.tables] if m.heavydb else [],
        "summary": m.summary(),
    }


@task(name="drop-scratch-restore", retries=1, retry_delay_seconds=2, timeout_seconds=600)
def drop_scratch_restore(
    config_path: str | None, env: str, mysql_database: str | None, heavydb_tables: list[str]
) -> list[str]:
    """Drop what the recovery drill restored (only names it made: `*_drill_*`); problems."""
    from tasks.backup import heavydb_recovery, mysql_recovery

    settings = settings_for(config_path)
    live_db = settings.environment(env).mysql.database
    problems: list[str] = []
    if mysql_database:
        if "_drill_" not in mysql_database or mysql_database == live_db:
            problems.append(f"refused to drop MySQL database {mysql_database}: not a drill target")
        else:
            try:
                mysql_recovery(config_path, env).drop_database(mysql_database)
            except Exception as exc:
                problems.append(f"MySQL database {mysql_database} left behind: {exc}")
    for table in heavydb_tables:
        if "_drill_" not in table:
            problems.append(f"refused to drop HeavyDB table {table}: not a drill target")
            continue
        try:
            heavydb_recovery(config_path, env).drop_table(table)
        except Exception as exc:
            problems.append(f"HeavyDB table {table} left behind: {exc}")
    return problems
