"""The pure core of emergency response: no Prefect, no drivers, no clock of its own.

- `severity`: P0/P1/P2 as the runbook classifies them, and their response times.
- `triggers`: the auto-rollback trigger rules and their exact evaluation over window samples.
- `incident`: the incident record and the entries of its timeline.
- `journal`: the append-only incident journal over the `ObjectStore` Protocol.
- `report`: the incident report (markdown) rendered from the journal.
- `templates`: the runbook's four communication templates.
- `escalation`: who to page next for an unacknowledged incident.
- `plan`: the automated response sequence and the 15-minute manual process, with budgets.

Everything takes the time as an argument (`now`), so tests pin it.
"""
