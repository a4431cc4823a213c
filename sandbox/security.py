"""The sandbox's service accounts for credential rotation (docs/security.md).

`provision(config)` creates, idempotently, the service accounts the sandbox's `tbs.toml` lists in
`security.service_accounts` (`tbs_svc` on MariaDB, SELECT on the archive, and on the HeavyDB
sandbox server, ACCESS to its database), each with a fresh random password, and stores that
password in the Prefect Secret block the configuration names (the Prefect API of this process:
`PREFECT_API_URL`). `tbs-emergency sandbox up` runs it when the world has its Prefect server
(sandbox.world); by hand, for another Prefect server:

    PREFECT_API_URL=... python -m sandbox.security provision [--config tbs.toml]

An account that exists already is left with the password its block holds (its password is set
again from the block, so the two agree; the block is not rewritten). Errors name the account and
never contain a password.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any

from tbs_emergency.config import Settings, load_settings


class ProvisionError(RuntimeError):
    """An account could not be provisioned; the message names it and holds no password."""


def _block_value(name: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError:
        return None
    return value if isinstance(value, str) else str(value)


def _save_block(name: str, value: str) -> None:
    from prefect.blocks.system import Secret

    Secret(value=value).save(name, overwrite=True)


def _mysql_root(settings: Settings, env: str) -> Any:
    import pymysql

    cfg = settings.environment(env).mysql
    admin = settings.database_emergency.mysql_admin
    return pymysql.connect(
        host=cfg.host,
        port=cfg.port,
        user=admin.user if admin else "root",
        password=admin.password.get_secret_value() if admin and admin.password else "",
        autocommit=True,
    )


def provision(settings: Settings, log: Any = print, engines: list[str] | None = None) -> list[str]:
    """Create the configured service accounts (of `engines`, default all) and their Secret
    blocks; their names. Raises ProvisionError."""
    from tbs_emergency.connectors._common import redact_text

    done = []
    for acct in settings.security.service_accounts:
        if engines is not None and acct.engine not in engines:
            continue
        block = acct.password.block
        label = f"{acct.engine} service account {acct.user}"
        if block is None:
            raise ProvisionError(f"{label}: its password is not in a Prefect Secret block")
        password: str | None = None
        try:
            existing = _block_value(block)
            password = existing or secrets.token_urlsafe(24)
            _provision_one(settings, acct, password)
            if existing is None:
                _save_block(block, password)
        except Exception as exc:
            why = redact_text(f"{type(exc).__name__}: {exc}", [password])
            raise ProvisionError(f"{label}: {why}") from None
        log(f"{label}: ready (password in block {block})")
        done.append(acct.user)
    return done


def _provision_one(settings: Settings, acct: Any, password: str) -> None:
    from tbs_emergency.connectors.heavydb import HeavyDBDatabase

    env = settings.environment(acct.environment)
    if acct.engine == "mysql":
        con = _mysql_root(settings, acct.environment)
        try:
            with con.cursor() as cur:
                for host in acct.hosts or ["127.0.0.1", "localhost"]:
                    cur.execute(
                        "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                        (acct.user, host, password),
                    )
                    cur.execute(
                        "ALTER USER %s@%s IDENTIFIED BY %s ACCOUNT UNLOCK",
                        (acct.user, host, password),
                    )
                    cur.execute(
                        f"GRANT SELECT ON `{env.mysql.database}`.* TO %s@%s",
                        (acct.user, host),
                    )
        finally:
            con.close()
    else:
        db = HeavyDBDatabase(env.heavydb, "heavydb")
        try:
            literal = "'" + password.replace("'", "''") + "'"
            if not any(u.name == acct.user for u in db.users()):
                db.query(f"CREATE USER {acct.user} (password = {literal}, is_super = 'false')")
            else:
                db.set_password(acct.user, password)
                db.set_login(acct.user, True)
            db.query(f"GRANT ACCESS ON DATABASE {env.heavydb.database} TO {acct.user}")
        finally:
            db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["provision"])
    parser.add_argument("--config", default=None)
    parser.add_argument(
        "--engine",
        action="append",
        choices=["mysql", "heavydb"],
        help="only the accounts of this engine (repeat; default: every account)",
    )
    args = parser.parse_args()
    try:
        provision(load_settings(args.config), engines=args.engine)
    except ProvisionError as exc:
        print(f"provision failed: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
