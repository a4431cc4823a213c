"""System state preservation for forensics (runbook: `preserve-system-state.sh`).

Collects, concurrently: database process lists, the MySQL binlog position, HeavyDB sessions and
users, the Redis session list (ids replaced by digests), the load balancer's state and access
log, the apps' health and login audit, and a Prometheus snapshot of the last hour; writes each
as one object under `<security.evidence_prefix>/<incident>/` with S3 Object Lock (retention
from configuration), then `manifest.json` (sha256 and size of each, what could not be collected
and why), locked too; then reads everything back against the manifest.

A source that cannot be read does not stop the others: the manifest lists it as missing.
Memory dumps and disk snapshots are not taken (docs/security.md).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.security_common import SecurityParams, SecurityReport, SecurityRun, artifact_key, why
from tasks.common import settings_for
from tasks.security import collect_evidence, store_evidence, verify_evidence, write_manifest
from tbs_emergency.domain.severity import Severity
from tbs_emergency.security.evidence import SOURCES, EvidenceManifest, MissingEvidence


class EvidenceParams(SecurityParams):
    pass


def _result(state: Any) -> tuple[Any, str | None]:
    if state.is_completed():
        return state.result(), None
    try:
        state.result()
    except Exception as exc:
        return None, why(exc)
    return None, state.message or state.name


def preserve_in(run: SecurityRun) -> tuple[EvidenceManifest | None, dict[str, dict[str, Any]]]:
    """Collect, store locked, write the manifest, verify: (manifest, payloads by source)."""
    inc = run.incident_id
    if run.p.dry_run or inc is None:
        sec = settings_for(run.cfg).security
        run.report.lines += [
            f"[planned] collect {s} -> {sec.evidence_prefix}/<incident>/{s}.json (Object Lock"
            f" {sec.evidence_lock_mode})"
            for s in SOURCES
        ]
        return None, {}
    futures = {s: collect_evidence.submit(run.cfg, s) for s in SOURCES}
    payloads: dict[str, dict[str, Any]] = {}
    missing: list[MissingEvidence] = []
    stored = {}
    for source, fut in futures.items():
        fut.wait()
        payload, err = _result(fut.state)
        if err is not None:
            missing.append(MissingEvidence(name=source, reason=err))
            continue
        payloads[source] = payload
        stored[source] = store_evidence.submit(run.cfg, inc, source, payload)
    items = []
    for source, fut in stored.items():
        fut.wait()
        item, err = _result(fut.state)
        if err is not None:
            missing.append(MissingEvidence(name=source, reason=f"not stored: {err}"))
        else:
            items.append(item)
    manifest: EvidenceManifest | None = None
    try:
        manifest = write_manifest(run.cfg, inc, items, missing)
    except Exception as exc:
        run.problem(f"evidence manifest not written: {why(exc)}")
    problems: list[str] = []
    if manifest is not None:
        try:
            problems = verify_evidence(run.cfg, inc)
        except Exception as exc:
            problems = [f"cannot verify: {why(exc)}"]
        for p in problems:
            run.problem(f"evidence: {p}")
        create_markdown_artifact(
            key=artifact_key("security-evidence", inc),
            markdown=manifest.markdown(),
            description=f"Evidence manifest of {inc}",
        )
    for m in missing:
        run.problem(f"evidence not collected: {m.name}: {m.reason}")
    run.report.lines.append(
        f"evidence: {len(items)} object(s) locked under {manifest.prefix if manifest else '?'}"
        f", {len(missing)} missing"
    )
    run.entry(
        "action",
        f"system state preserved: {len(items)} object(s), {len(missing)} missing",
        system="s3",
        result="ok" if manifest is not None and not missing and not problems else "failed",
        data={
            "manifest": manifest.model_dump(mode="json") if manifest else None,
            "verify_problems": problems,
        },
    )
    run.report.detail["evidence"] = {
        "prefix": manifest.prefix if manifest else None,
        "objects": len(items),
        "missing": [m.name for m in missing],
    }
    return manifest, payloads


@flow(name="security_preserve_evidence", log_prints=False, persist_result=False)
def preserve_evidence(params: EvidenceParams | None = None) -> SecurityReport:
    """Preserve the system state of the incident (a new one if none is given)."""
    p = params or EvidenceParams()
    run = SecurityRun(p, "preserve system state")
    env = settings_for(run.cfg).security.affected_environment
    run.open(Severity.P0, "security: system state preserved", env, salt="evidence")
    preserve_in(run)
    return run.finish("security-preserve-evidence")
