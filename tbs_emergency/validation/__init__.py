"""Recovery validation, drills and post-incident review: the pure core (no Prefect, no drivers).

- `stats`: percentiles and latency summaries.
- `declarations`: the functional-check declaration model (HTTP and SQL steps with expectations)
  and the runbook's default checks; evaluating one answer against its expectations.
- `verdict`: check results, the pass/fail rules with thresholds from configuration, the verdict.
- `drills`: drill records, the history layout in object storage, RTO/RPO and their trend.
- `contacts`: contact verification findings (stale, unreachable, incomplete contacts).
- `followups`: the 24 h / 72 h / 1 week post-incident review checklists and their state.
- `review`: the quarterly review checklist.
- `report`: the post-incident report sections the runbook requires, over the domain's report.

This package imports nothing at import time: `tbs_emergency.config` imports `declarations`.
"""
