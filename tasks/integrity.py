"""The integrity sweep's external steps (runbook: "Data Integrity Verification").

Each task reads one table of one store, except `diff_chunk`, the unit of distributed work: one
key range of one table, compared between both stores of an environment (the checksums are
computed inside each database; only differing buckets' rows travel). Every task opens its own
connections and closes them, so tasks can run on different threads or machines.

Nothing here writes: retries are always safe. Time limits: the flow submits these tasks to a
thread pool, where a Prefect `timeout_seconds` cannot interrupt a blocking database call (Prefect
warns about exactly that), so the bound is the socket timeout of every query instead: the
configured `timeout_s` for catalog reads (an unreachable store fails fast) and the sweep's
`query_timeout_s` for scans (a full-table checksum takes longer than a usual query).

great_expectations is imported inside `validate_expectations` only (it costs seconds to import
and must never sit on the rollback path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.common import settings_for
from tbs_emergency.config import IntegrityTable, Settings
from tbs_emergency.integrity import DiffOptions, SQLTableSource, TableDiff, diff_tables
from tbs_emergency.integrity.expectations import (
    ExpectationOutcome,
    ExpectationSpec,
    describe_spec,
    parity_suite,
    sample_records,
    sample_suite,
)
from tbs_emergency.integrity.normalize import ColumnType
from tbs_emergency.integrity.source import Profile, Row, Segment, TablePlan

Store = Literal["heavydb", "mysql"]


def table_config(settings: Settings, table: str) -> IntegrityTable:
    for t in settings.integrity.tables:
        if t.name == table:
            return t
    from tbs_emergency.errors import ConfigError

    known = ", ".join(t.name for t in settings.integrity.tables) or "none configured"
    raise ConfigError([f"integrity.tables: no table {table!r} (known: {known})"])


def physical_name(cfg: IntegrityTable, store: Store) -> str:
    return (cfg.heavydb_name if store == "heavydb" else cfg.mysql_name) or cfg.name


def store_name(settings: Settings, store: Store, env: str) -> str:
    from tbs_emergency.connectors import system_name

    return system_name(settings, store, env)


@contextlib.contextmanager
def open_store(
    config_path: str | None, env: str, store: Store, timeout_s: float | None = None
) -> Iterator[Any]:
    """The store's IntegrityDatabase on a connection of its own (closed afterwards), with the
    per-query timeout raised to `timeout_s` for long scans."""
    settings = settings_for(config_path)
    name = store_name(settings, store, env)
    cfg = getattr(settings.environment(env), store)
    if timeout_s is not None:
        cfg = cfg.model_copy(update={"timeout_s": max(cfg.timeout_s, timeout_s)})
    if store == "mysql":
        from tbs_emergency.connectors.mysql import MySQLDatabase, MySQLIntegrity

        db: Any = MySQLDatabase(cfg, name)
        adapter: Any = MySQLIntegrity(db)
    else:
        from tbs_emergency.connectors.heavydb import HeavyDBDatabase, HeavyDBIntegrity

        db = HeavyDBDatabase(cfg, name)
        adapter = HeavyDBIntegrity(db)
    try:
        yield adapter
    finally:
        db.close()


def source(adapter: Any, cfg: IntegrityTable, store: Store) -> SQLTableSource:
    return SQLTableSource(adapter, physical_name(cfg, store))


# -- one store, one table ------------------------------------------------------------------------


@task(
    name="integrity-describe",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NO_CACHE,
)
def describe_table(
    config_path: str | None, env: str, store: Store, table: str
) -> dict[str, ColumnType]:
    """The table's columns and types in one store (catalog only; configured timeouts)."""
    cfg = table_config(settings_for(config_path), table)
    with open_store(config_path, env, store) as db:
        return source(db, cfg, store).describe()


@task(
    name="integrity-profile",
    retries=1,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
)
def profile_table(
    config_path: str | None,
    env: str,
    store: Store,
    table: str,
    plan: TablePlan,
    text: bool,
    ranges: bool,
    query_timeout_s: float,
) -> Profile:
    """Row count, key range, longest texts (`text`), column minima/maxima (`ranges`): one
    aggregate query, one scan."""
    cfg = table_config(settings_for(config_path), table)
    with open_store(config_path, env, store, query_timeout_s) as db:
        return source(db, cfg, store).profile(plan, count=True, text=text, ranges=ranges)


@task(
    name="integrity-sample",
    retries=1,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
)
def sample_table(
    config_path: str | None,
    env: str,
    store: Store,
    table: str,
    plan: TablePlan,
    multiplier: int,
    below: int,
    size: int,
    query_timeout_s: float,
) -> list[Row]:
    """The store's `size` lowest-ranked rows (see integrity.sample): one query."""
    cfg = table_config(settings_for(config_path), table)
    with open_store(config_path, env, store, query_timeout_s) as db:
        return source(db, cfg, store).sample(plan, multiplier, below, size)


# -- both stores, one key range ------------------------------------------------------------------


@task(
    name="integrity-diff-chunk",
    retries=2,
    retry_delay_seconds=[2, 10],
    cache_policy=NO_CACHE,
)
def diff_chunk(
    config_path: str | None,
    env: str,
    table: str,
    plan: TablePlan,
    chunk: Segment,
    expected_rows: int | None,
    options: DiffOptions,
    query_timeout_s: float,
) -> TableDiff:
    """Checksum bisection diff of one key range between HeavyDB (left) and MySQL (right)."""
    cfg = table_config(settings_for(config_path), table)
    with (
        open_store(config_path, env, "heavydb", query_timeout_s) as heavy,
        open_store(config_path, env, "mysql", query_timeout_s) as my,
    ):
        result = diff_tables(
            source(heavy, cfg, "heavydb"),
            source(my, cfg, "mysql"),
            plan,
            options,
            segment=chunk,
            expected_rows=expected_rows,
        )
    get_run_logger().info(
        "%s %s: %d buckets compared, %d rows read, %d queries, %.1fs",
        table,
        chunk,
        result.segments,
        result.rows_compared,
        result.queries,
        result.seconds,
    )
    return result


# -- great-expectations --------------------------------------------------------------------------


def _expectation(spec: ExpectationSpec) -> Any:
    import great_expectations as gx

    return getattr(gx.expectations, spec.type)(**spec.kwargs)


def _failed(
    plan: TablePlan | None, specs: list[ExpectationSpec], result: Any
) -> list[dict[str, Any]]:
    out = []
    for spec, r in zip(specs, result.results, strict=False):
        if r.success:
            continue
        detail = r.result or {}
        out.append(
            {
                "expectation": describe_spec(plan, spec) if plan else spec.type,
                "type": spec.type,
                "unexpected_count": detail.get("unexpected_count"),
                "examples": [str(v) for v in (detail.get("partial_unexpected_list") or [])[:5]],
                "exception": (r.exception_info or {}).get("exception_message")
                if isinstance(r.exception_info, dict)
                else None,
            }
        )
    return out


@task(name="integrity-expectations", retries=0, cache_policy=NO_CACHE)
def validate_expectations(
    table: str,
    plan: TablePlan,
    samples: dict[str, list[Row]],
    others: dict[str, Profile | None],
    rows: dict[str, int | None],
) -> list[ExpectationOutcome]:
    """Run the table's suites (integrity.expectations) on each store's sampled rows and on the
    row counts, in an ephemeral great-expectations context."""
    import logging

    import great_expectations as gx
    import pandas as pd

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    with contextlib.suppress(Exception):  # progress bars to stderr help nobody in a flow log
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source_ = context.data_sources.add_pandas(name=f"{table}-integrity")
    outcomes: list[ExpectationOutcome] = []

    def run(name: str, data: str, specs: list[ExpectationSpec], frame: Any) -> None:
        try:
            asset = source_.add_dataframe_asset(name=f"{name}-asset")
            batch = asset.add_batch_definition_whole_dataframe(f"{name}-batch")
            suite = context.suites.add(gx.ExpectationSuite(name=name))
            for spec in specs:
                suite.add_expectation(_expectation(spec))
            vd = context.validation_definitions.add(
                gx.ValidationDefinition(data=batch, suite=suite, name=f"{name}-validation")
            )
            result = vd.run(batch_parameters={"dataframe": frame})
            failed = _failed(plan, specs, result)
            outcomes.append(
                ExpectationOutcome(name, data, bool(result.success), len(specs), failed)
            )
        except Exception as exc:  # a broken suite is a finding, not a crashed sweep
            outcomes.append(ExpectationOutcome(name, data, False, len(specs), [], str(exc)))

    columns = [c.name for c in plan.specs]
    for store, sampled in samples.items():
        frame = pd.DataFrame.from_records(sample_records(plan, sampled), columns=columns)
        suite = sample_suite(plan, others.get(store))
        run(f"{table}.sample.{store}", f"{store} sample ({len(sampled)} rows)", suite, frame)
    names = list(rows)
    if len(names) == 2 and all(rows[n] is not None for n in names):
        frame = pd.DataFrame({"left_rows": [rows[names[0]]], "right_rows": [rows[names[1]]]})
        run(f"{table}.parity", f"row counts ({names[0]} / {names[1]})", parity_suite(), frame)
    return outcomes
