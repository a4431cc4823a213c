"""Data integrity verification (runbook: `comprehensive-integrity-check.sh`).

For every configured table (`[[integrity.tables]]`) in every environment (databases shared by
several environments once):

1. row counts in HeavyDB and in MySQL;
2. a pseudo-random sample of `sample_size` keys (default `integrity.sample_size`, 1000 as the
   runbook's `--sample-size=1000`) compared column by column, normalised (UTC seconds,
   decimals at their scale, text);
3. with `full`: the checksum bisection diff of the whole table, computed inside each database,
   one mapped task per key-range chunk, naming every missing, extra and different key;
4. great-expectations suites on the sampled rows (keys not null and unique, values within the
   other store's range) and on the row counts (parity).

It changes nothing and always finishes: a store that cannot be reached, or a table whose schemas
cannot be compared, is reported for that table ("could not check") and the others go on. The
result is a `SweepReport` (structured: missing/extra/different keys per table, reused by the
environment data sync); a table artifact holds the per-table results and a markdown artifact
the great-expectations results.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from tasks.common import settings_for
from tasks.integrity import (
    describe_table,
    diff_chunk,
    profile_table,
    sample_table,
    store_name,
    table_config,
    validate_expectations,
)
from tbs_emergency.config import Settings
from tbs_emergency.errors import ConfigError, TbsError
from tbs_emergency.integrity import DiffOptions, SchemaMismatch, SweepReport, TableResult
from tbs_emergency.integrity.diff import plan_chunks
from tbs_emergency.integrity.expectations import ExpectationOutcome
from tbs_emergency.integrity.plan import build_plan, with_text_groups
from tbs_emergency.integrity.sample import compare_samples, new_seed, selection
from tbs_emergency.integrity.source import Segment


class IntegritySweepParams(BaseModel):
    """What to check. Empty lists mean everything configured."""

    tables: list[str] = Field(default_factory=list)
    sample_size: int | None = Field(None, ge=1, description="default: integrity.sample_size")
    full: bool = Field(False, description="checksum bisection diff of every row")
    environments: list[str] = Field(default_factory=list)
    config_path: str | None = None
    expectations: bool = True
    seed: int | None = Field(None, description="sample seed (default: random, reported)")
    chunk_rows: int = Field(2_000_000, ge=1, description="rows per mapped diff task")
    max_chunks: int = Field(16, ge=1)
    query_timeout_s: float = Field(900.0, gt=0, description="per query, for full scans")


def environment_groups(settings: Settings, wanted: list[str]) -> list[tuple[str, str]]:
    """(environment to connect through, label) per distinct pair of databases."""
    names = wanted or sorted(settings.environments)
    for n in names:
        settings.environment(n)  # ConfigError for an unknown name
    groups: dict[tuple[str, str], list[str]] = {}
    for n in names:
        env = settings.environment(n)
        groups.setdefault((env.heavydb.identity, env.mysql.identity), []).append(n)
    return [(envs[0], ",".join(envs)) for envs in groups.values()]


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "; ".join(exc.problems)
    if isinstance(exc, TbsError | SchemaMismatch):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def check_table(
    params: IntegritySweepParams, settings: Settings, env: str, label: str, table: str
) -> TableResult:
    """Counts, sample, optional full diff and expectations for one table of one environment."""
    log = get_run_logger()
    started = time.perf_counter()
    cfg = table_config(settings, table)
    result = TableResult(
        table=table,
        environment=label,
        heavydb=store_name(settings, "heavydb", env),
        mysql=store_name(settings, "mysql", env),
        critical=cfg.critical,
        mode="full" if params.full else "sample",
    )
    cp, timeout = params.config_path, params.query_timeout_s
    try:
        fh = describe_table.submit(cp, env, "heavydb", table)
        fm = describe_table.submit(cp, env, "mysql", table)
        plan, notes = build_plan(
            table, cfg.key, cfg.columns, fh.result(), fm.result(), ("heavydb", "mysql")
        )
        result.notes += notes
        ph = profile_table.submit(
            cp, env, "heavydb", table, plan, True, params.expectations, timeout
        )
        pm = profile_table.submit(
            cp, env, "mysql", table, plan, False, params.expectations, timeout
        )
        prof_h, prof_m = ph.result(), pm.result()
        plan = with_text_groups(plan, prof_h)
        result.heavydb_rows, result.mysql_rows = prof_h.rows, prof_m.rows
        result.null_key_rows = {
            result.heavydb: prof_h.null_key_rows,
            result.mysql: prof_m.null_key_rows,
        }
        rows = max(prof_h.rows or 0, prof_m.rows or 0)

        size = params.sample_size or settings.integrity.sample_size
        seed = params.seed if params.seed is not None else new_seed()
        mult, below = selection(size, seed, rows)
        sh = sample_table.submit(cp, env, "heavydb", table, plan, mult, below, size, timeout)
        sm = sample_table.submit(cp, env, "mysql", table, plan, mult, below, size, timeout)
        sample = compare_samples(
            plan, result.heavydb, result.mysql, sh.result(), sm.result(), size, seed
        )
        result.sample, result.sample_seed, result.sampled = sample.diff, seed, sample.compared

        if params.full:
            result.full = full_diff(params, env, table, plan, prof_h, prof_m, rows)

        if params.expectations:
            result.expectations = validate_expectations.submit(
                table,
                plan,
                {"heavydb": sample.left_rows, "mysql": sample.right_rows},
                {"heavydb": prof_m, "mysql": prof_h},  # each store against the other's range
                {"heavydb": result.heavydb_rows, "mysql": result.mysql_rows},
            ).result()
    except Exception as exc:
        result.error = _error_text(exc)
        log.error("%s [%s]: could not check: %s", table, label, result.error)
    result.seconds = round(time.perf_counter() - started, 3)
    log.info("%s [%s]: %s %s", table, label, result.status, "; ".join(result.problems()))
    return result


def full_diff(
    params: IntegritySweepParams,
    env: str,
    table: str,
    plan: Any,
    prof_h: Any,
    prof_m: Any,
    rows: int,
) -> Any:
    bounds = [(p.key_min, p.key_max) for p in (prof_h, prof_m) if p.key_min is not None]
    if not bounds:
        from tbs_emergency.integrity.diff import TableDiff

        return TableDiff(plan, "heavydb", "mysql", rows_left=0, rows_right=0)
    root = Segment((), min(b[0] for b in bounds), max(b[1] for b in bounds))
    chunks = plan_chunks(root, rows, params.chunk_rows, params.max_chunks)
    expected = -(-rows // len(chunks))
    futures = diff_chunk.map(
        unmapped(params.config_path),
        unmapped(env),
        unmapped(table),
        unmapped(plan),
        chunks,
        unmapped(expected),
        unmapped(DiffOptions()),
        unmapped(params.query_timeout_s),
    )
    merged = None
    failures = []
    for chunk, fut in zip(chunks, futures, strict=True):
        try:
            part = fut.result()
        except Exception as exc:
            failures.append(f"chunk {chunk}: {_error_text(exc)}")
            continue
        merged = part if merged is None else merged.merge(part)
    if failures:
        raise TbsError("full diff incomplete: " + "; ".join(failures))
    return merged


def _artifacts(report: SweepReport) -> None:
    rows = []
    for t in report.tables:
        d = t.findings
        rows.append(
            {
                "environment": t.environment,
                "table": t.table,
                "status": t.status,
                "mode": t.mode,
                "heavydb_rows": t.heavydb_rows,
                "mysql_rows": t.mysql_rows,
                "missing_in_heavydb": len(d.only_right) if d else None,
                "missing_in_mysql": len(d.only_left) if d else None,
                "different": len(d.different) if d else None,
                "sampled_keys": t.sampled,
                "problems": "; ".join(t.problems()) or t.error or "",
            }
        )
    create_table_artifact(
        key="integrity-sweep",
        table=rows,
        description=f"Integrity sweep ({report.mode}): HeavyDB against MySQL, per table",
    )
    lines = ["# great-expectations results", ""]
    for t in report.tables:
        lines.append(f"## {t.table} [{t.environment}]")
        if not t.expectations:
            lines.append(f"_not run_{': ' + t.error if t.error else ''}")
        for e in t.expectations:
            lines.append(_outcome_line(e))
            for f in e.failed:
                examples = ", ".join(f.get("examples") or [])
                lines.append(
                    f"    - FAILED {f['expectation']}: {f.get('unexpected_count')} unexpected"
                    + (f" (e.g. {examples})" if examples else "")
                )
        lines.append("")
    create_markdown_artifact(
        key="integrity-expectations",
        markdown="\n".join(lines),
        description="great-expectations suites on the sampled rows and the row counts",
    )


def _outcome_line(e: ExpectationOutcome) -> str:
    state = "passed" if e.success else "FAILED"
    extra = f" (error: {e.error})" if e.error else ""
    return f"- `{e.suite}` on {e.data}: {state}, {e.evaluated} expectations{extra}"


@flow(
    name="integrity_sweep",
    log_prints=False,
    task_runner=ThreadPoolTaskRunner(max_workers=4),
)
def integrity_sweep(params: IntegritySweepParams | None = None) -> SweepReport:
    """Compare HeavyDB with MySQL for every configured table; change nothing.

    Needs `[[integrity.tables]]` in the configuration. Returns a SweepReport: per table the row
    counts, the keys missing on either side and the rows that differ, the great-expectations
    outcomes, and an error where a table could not be checked.
    """
    params = params or IntegritySweepParams()
    started = time.perf_counter()
    settings = settings_for(params.config_path)
    configured = [t.name for t in settings.integrity.tables]
    unknown = [t for t in params.tables if t not in configured]
    if unknown:
        known = ", ".join(configured) or "none configured"
        raise ConfigError([f"integrity.tables: no table {t!r} (known: {known})" for t in unknown])
    tables = params.tables or configured
    results = [
        check_table(params, settings, env, label, table)
        for env, label in environment_groups(settings, params.environments)
        for table in tables
    ]
    report = SweepReport(
        results,
        mode="full" if params.full else "sample",
        sample_size=params.sample_size or settings.integrity.sample_size,
        seconds=round(time.perf_counter() - started, 3),
    )
    _artifacts(report)
    return report
