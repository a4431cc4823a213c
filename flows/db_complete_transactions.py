"""Transaction completion (runbook: `complete-transactions.sh --timeout=60s --force-if-needed`).

Waits for the transactions open at the start on every chosen MySQL server to finish. At the
timeout it reports each one still open with its age, user and statement; only with `force` does
it end them (the server closes the session and rolls the transaction back) and then checks they
are gone. HeavyDB has no multi-statement transactions; the report says so. The servers are
waited on at the same time, so the whole flow takes about `timeout_s`, not one per server.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow
from pydantic import Field

from flows.db_common import DbParams, DbReport, TargetReport, guarded, publish, targets_for
from tasks.common import settings_for
from tasks.database import complete_transactions_on
from tbs_emergency.dbops.transactions import TransactionReport, format_age


class CompleteTransactionsParams(DbParams):
    # None: database_emergency.transaction_timeout (60 s)
    timeout_s: float | None = Field(None, ge=0)
    force: bool = False
    poll_s: float | None = Field(None, gt=0)


def _target_report(r: TransactionReport) -> TargetReport:
    return TargetReport(
        system=r.target.name,
        ok=r.complete,
        lines=r.lines(),
        actions=r.actions,
        problems=[] if r.complete else [f"{r.target.name}: {line}" for line in r.lines()[1:]],
        detail={
            "still_open": [asdict(t) for t in (r.not_ended if r.forced else r.still_open)],
            "ended": r.ended,
            "waited_s": r.waited_s,
        },
    )


@flow(name="db_complete_transactions", log_prints=False)
def complete_transactions(params: CompleteTransactionsParams | None = None) -> DbReport:
    """Wait for open transactions to finish; report the rest; end them only with force."""
    params = params or CompleteTransactionsParams()
    de = settings_for(params.config_path).database_emergency
    timeout_s = de.transaction_timeout if params.timeout_s is None else params.timeout_s
    poll_s = params.poll_s or de.poll_interval
    # Servers are waited on concurrently. No Prefect timeout: a submitted task runs in a worker
    # thread that a timeout cannot interrupt; the wait is bounded by timeout_s, the rollback
    # grace (ROLLBACK_GRACE_S) and each query's own timeout.
    chosen = targets_for(params, ["mysql", "heavydb"])
    futures = [
        complete_transactions_on.submit(
            params.config_path, target, timeout_s, params.force, poll_s, params.dry_run
        )
        for target in chosen
    ]
    targets = [
        guarded(t.name, lambda f=f: f.result(), _target_report)
        for t, f in zip(chosen, futures, strict=True)
    ]
    report = DbReport(
        procedure=f"complete transactions (timeout {format_age(timeout_s)}"
        + (", force)" if params.force else ")"),
        dry_run=params.dry_run,
        ok=all(t.ok for t in targets),
        targets=targets,
    )
    return publish(report, "db-complete-transactions")
