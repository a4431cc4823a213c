"""Security incident response, compromised accounts and lockdown (runbook: "Security Emergency
Procedures" and "Access Control Emergency Procedures"); see docs/security.md.

Plain Python, no Prefect: the flows in `flows/security_*.py` compose these through the tasks in
`tasks/security.py`.

- `steps`: reversible steps (record the previous state, change, lift in reverse order) and the
  engine that applies and lifts them; `records` keeps what they recorded.
- `systems`: the concrete steps (load balancer, Redis login flag, MySQL privileges and account
  locks, HeavyDB access and logins, the application's users) and the plans of isolation,
  lockdown and account suspension.
- `rotation`: credential rotation, all or nothing.
- `evidence`: evidence payloads, the sha256 manifest, verification.
- `assessment`, `privileges`, `hardening`: findings, privilege review, hardening checks.
"""
