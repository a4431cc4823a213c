"""Evidence preservation (runbook: `preserve-system-state.sh`): what is collected, the sha256
manifest, and its verification.

Each source is one JSON object under `<security.evidence_prefix>/<incident>/` in the evidence
bucket, written with S3 Object Lock (retention from configuration); `manifest.json` (name, key,
size, sha256, version id of every object, plus the sources that could not be collected and why)
is written last, locked too. Secrets never enter evidence: session ids are replaced by a digest,
statements that set passwords are masked, connection settings are not collected.

Not collected (no portable way from here): memory dumps and disk snapshots; docs/security.md
says what to do by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from tbs_emergency.connectors.base import DbSession

SOURCES = (
    "mysql-processlist",
    "mysql-binlog-position",
    "heavydb-sessions",
    "redis-sessions",
    "lb-state",
    "lb-access-log",
    "app-health",
    "app-login-audit",
    "prometheus-last-hour",
)
MANIFEST = "manifest.json"

_SECRET_IN_SQL = re.compile(
    r"(IDENTIFIED\s+(?:BY|VIA\s+\S+\s+(?:USING|AS))\s+(?:PASSWORD\s+)?|PASSWORD\s*\(\s*|"
    r"password\s*=\s*)('(?:[^'\\]|''|\\.)*'|\"(?:[^\"\\]|\\.)*\")",
    re.I,
)


def mask_statement(sql: str | None) -> str | None:
    """The statement with any password literal replaced by '***'."""
    if sql is None:
        return None
    return _SECRET_IN_SQL.sub(lambda m: m.group(1) + "'***'", sql)


def session_rows(sessions: list[DbSession]) -> list[dict[str, Any]]:
    return [
        {
            "id": s.id,
            "user": s.user,
            "host": s.host,
            "database": s.database,
            "idle_s": s.idle_s,
            "busy_s": s.busy_s,
            "in_transaction": s.in_transaction,
            "statement": mask_statement(s.statement),
            "internal": s.internal,
        }
        for s in sessions
    ]


class EvidenceItem(BaseModel):
    name: str
    key: str
    size: int
    sha256: str
    version_id: str | None = None
    collected_at: datetime
    systems: list[str] = Field(default_factory=list)


class MissingEvidence(BaseModel):
    name: str
    reason: str


class EvidenceManifest(BaseModel):
    incident_id: str
    created_at: datetime
    bucket: str
    prefix: str
    lock_mode: str
    retain_until: datetime
    items: list[EvidenceItem] = Field(default_factory=list)
    missing: list[MissingEvidence] = Field(default_factory=list)
    not_collectable: list[str] = Field(
        default_factory=lambda: [
            "memory dumps and disk snapshots (runbook --memory-dump --disk-snapshot): take them"
            " with the hosting platform's tools (docs/security.md)"
        ]
    )

    def markdown(self) -> str:
        out = [
            f"# Evidence of {self.incident_id}",
            "",
            f"s3://{self.bucket}/{self.prefix}/ — Object Lock {self.lock_mode} until"
            f" {self.retain_until:%Y-%m-%d %H:%M}Z",
            "",
            "| object | size | sha256 |",
            "|---|---|---|",
        ]
        out += [f"| {i.name} | {i.size} | `{i.sha256}` |" for i in self.items]
        out += [f"- **not collected:** {m.name}: {m.reason}" for m in self.missing]
        out += [f"- not collectable here: {x}" for x in self.not_collectable]
        return "\n".join(out) + "\n"


def evidence_prefix(prefix: str, incident_id: str) -> str:
    return f"{prefix.strip('/')}/{incident_id}"


def evidence_key(prefix: str, incident_id: str, name: str) -> str:
    return f"{evidence_prefix(prefix, incident_id)}/{name}"


def encode(payload: Any) -> bytes:
    """Evidence bytes: stable JSON (sorted keys) so the sha256 of a payload is reproducible."""
    return json.dumps(payload, indent=1, sort_keys=True, default=str).encode()


def retain_until(days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + timedelta(days=days)


def verify_manifest(manifest: EvidenceManifest, fetch: Callable[[str], bytes]) -> list[str]:
    """Problems found reading every object back and comparing its sha256 and size."""
    import hashlib

    problems = []
    for item in manifest.items:
        try:
            data = fetch(item.key)
        except Exception as exc:
            problems.append(f"{item.name}: cannot be read: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != item.sha256 or len(data) != item.size:
            problems.append(
                f"{item.name}: sha256 {digest} / {len(data)} bytes, manifest says"
                f" {item.sha256} / {item.size}"
            )
    return problems
