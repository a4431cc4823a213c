"""The sandbox's TBS dataset: deterministic, identical in HeavyDB and MySQL.

Tables (same columns and values in both databases):

- `trades` (trade_id BIGINT key, strategy_id, account_id, symbol, side BUY/SELL, quantity,
  price DECIMAL(18,4), executed_at, updated_at): `rows` rows with trade_id 1..rows, executed over
  the 90 days before 2025-01-24 10:00 UTC (the runbook's date). Rows the app stand-ins ingest
  later have trade_id >= 10**15 (`LIVE_ID_BASE`), so the seeded range stays comparable.
- `strategy_results` (strategy_id, run_date key; pnl DECIMAL(18,2), sharpe, trades_count):
  24 strategies x 150 days.
- `users` (user_id key, username, password_hash, role, active): the sandbox's accounts, with the
  passwords in `SANDBOX_USERS` (documented in docs/sandbox.md). Passwords are stored as
  `pbkdf2_sha256$<iterations>$<salt>$<hex>`.

Everything comes from a seeded RNG: two runs give the same rows. MySQL is loaded with
`LOAD DATA LOCAL INFILE` (multi-row INSERTs if the server refuses local infile); HeavyDB through
heavyai's Arrow load path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import tempfile
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

SEED = 20250124
LIVE_ID_BASE = 10**15
ENV_ID_BASE = {"blue": 1 * LIVE_ID_BASE, "green": 2 * LIVE_ID_BASE}
SEED_END = dt.datetime(2025, 1, 24, 10, 0, 0)
TRADE_DAYS = 90
STRATEGIES = 24
RESULT_DAYS = 150
ACCOUNTS = range(1000, 1200)
SYMBOLS = (
    "AAPL", "MSFT", "AMZN", "GOOGL", "META", "NVDA", "TSLA", "JPM", "V", "MA",
    "UNH", "HD", "PG", "XOM", "CVX", "KO", "PEP", "COST", "WMT", "DIS",
    "NFLX", "ADBE", "CRM", "ORCL", "INTC", "AMD", "QCOM", "TXN", "IBM", "CSCO",
    "BAC", "WFC", "GS", "MS", "C", "BA", "CAT", "GE", "MMM", "NKE",
)  # fmt: skip
PBKDF2_ITERATIONS = 1000  # deliberately low: a sandbox login must cost nothing

# (username, role, password, active)
SANDBOX_USERS: tuple[tuple[str, str, str, bool], ...] = (
    ("admin", "admin", "sandbox-admin", True),
    ("oncall", "operator", "sandbox-oncall", True),
    ("security", "security", "sandbox-security", True),
    *((f"analyst{i:02d}", "analyst", "sandbox-analyst", True) for i in range(1, 6)),
    *((f"trader{i:02d}", "trader", "sandbox-trader", True) for i in range(1, 31)),
    ("former01", "trader", "sandbox-former", False),
    ("former02", "analyst", "sandbox-former", False),
)

TABLES = ("trades", "strategy_results", "users")
TRADE_COLUMNS = (
    "trade_id", "strategy_id", "account_id", "symbol", "side", "quantity", "price",
    "executed_at", "updated_at",
)  # fmt: skip
RESULT_COLUMNS = ("strategy_id", "run_date", "pnl", "sharpe", "trades_count")
USER_COLUMNS = ("user_id", "username", "password_hash", "role", "active")

MYSQL_DDL = {
    "trades": """
CREATE TABLE IF NOT EXISTS trades (
  trade_id BIGINT NOT NULL PRIMARY KEY,
  strategy_id INT NOT NULL,
  account_id INT NOT NULL,
  symbol VARCHAR(16) NOT NULL,
  side VARCHAR(4) NOT NULL,
  quantity INT NOT NULL,
  price DECIMAL(18,4) NOT NULL,
  executed_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  KEY idx_trades_updated_at (updated_at),
  KEY idx_trades_strategy (strategy_id)
) ENGINE=InnoDB""",
    "strategy_results": """
CREATE TABLE IF NOT EXISTS strategy_results (
  strategy_id INT NOT NULL,
  run_date DATE NOT NULL,
  pnl DECIMAL(18,2) NOT NULL,
  sharpe DOUBLE NOT NULL,
  trades_count INT NOT NULL,
  PRIMARY KEY (strategy_id, run_date)
) ENGINE=InnoDB""",
    "users": """
CREATE TABLE IF NOT EXISTS users (
  user_id INT NOT NULL PRIMARY KEY,
  username VARCHAR(64) NOT NULL UNIQUE,
  password_hash VARCHAR(255) NOT NULL,
  role VARCHAR(32) NOT NULL,
  active BOOLEAN NOT NULL DEFAULT TRUE
) ENGINE=InnoDB""",
}

# HeavyDB has no primary keys; the key columns are NOT NULL and the integrity config names them.
HEAVYDB_DDL = {
    "trades": """
CREATE TABLE trades (
  trade_id BIGINT NOT NULL,
  strategy_id INTEGER NOT NULL,
  account_id INTEGER NOT NULL,
  symbol TEXT ENCODING DICT(32),
  side TEXT ENCODING DICT(32),
  quantity INTEGER,
  price DECIMAL(18,4),
  executed_at TIMESTAMP(0),
  updated_at TIMESTAMP(0))""",
    "strategy_results": """
CREATE TABLE strategy_results (
  strategy_id INTEGER NOT NULL,
  run_date DATE NOT NULL,
  pnl DECIMAL(18,2),
  sharpe DOUBLE,
  trades_count INTEGER)""",
    "users": """
CREATE TABLE users (
  user_id INTEGER NOT NULL,
  username TEXT ENCODING DICT(32),
  password_hash TEXT ENCODING DICT(32),
  role TEXT ENCODING DICT(32),
  active BOOLEAN)""",
}

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# Passwords
# ------------------------------------------------------------------------------------------------


def hash_password(password: str, salt: str) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ITERATIONS)
    return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${salt}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, hexdigest = stored.split("$", 3)
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iterations))
    return hmac.compare_digest(digest.hex(), hexdigest)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def trades_frame(rows: int, seed: int = SEED) -> Any:
    """The seeded trades as a DataFrame (price as Decimal with 4 places, naive UTC times)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    span_s = TRADE_DAYS * 86400
    offsets = np.sort(rng.integers(0, span_s, size=rows))
    start = SEED_END - dt.timedelta(seconds=span_s)
    executed = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s")
    # 5% of the trades were amended later (updated_at after executed_at).
    amended = rng.random(rows) < 0.05
    delay = np.where(amended, rng.integers(60, 3 * 86400, size=rows), 0)
    updated = executed + pd.to_timedelta(delay, unit="s")
    updated = updated.where(updated <= pd.Timestamp(SEED_END), pd.Timestamp(SEED_END))
    symbol_idx = rng.integers(0, len(SYMBOLS), size=rows)
    # Price per symbol around a base level, in ten-thousandths so it is exact as DECIMAL(18,4).
    base = rng.uniform(20, 800, size=len(SYMBOLS))
    price_e4 = np.round(base[symbol_idx] * rng.lognormal(0, 0.05, size=rows) * 10_000)
    return pd.DataFrame(
        {
            "trade_id": np.arange(1, rows + 1, dtype="int64"),
            "strategy_id": rng.integers(1, STRATEGIES + 1, size=rows).astype("int32"),
            "account_id": rng.integers(ACCOUNTS.start, ACCOUNTS.stop, size=rows).astype("int32"),
            "symbol": np.asarray(SYMBOLS, dtype=object)[symbol_idx],
            "side": np.where(rng.random(rows) < 0.5, "BUY", "SELL").astype(object),
            "quantity": (rng.integers(1, 500, size=rows) * 10).astype("int32"),
            "price": [Decimal(int(p)).scaleb(-4) for p in price_e4],
            "executed_at": executed.astype("datetime64[s]"),
            "updated_at": updated.astype("datetime64[s]"),
        }
    )


def strategy_results_frame(seed: int = SEED) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed + 1)
    first = SEED_END.date() - dt.timedelta(days=RESULT_DAYS)
    strategy = np.repeat(np.arange(1, STRATEGIES + 1, dtype="int32"), RESULT_DAYS)
    day = np.tile(np.arange(RESULT_DAYS), STRATEGIES)
    n = len(strategy)
    pnl_cents = np.round(rng.normal(1500, 25_000, size=n) * 100)
    sharpe = np.round(rng.normal(1.1, 0.6, size=n), 6)
    return pd.DataFrame(
        {
            "strategy_id": strategy,
            "run_date": [first + dt.timedelta(days=int(d)) for d in day],
            "pnl": [Decimal(int(c)).scaleb(-2) for c in pnl_cents],
            "sharpe": sharpe.astype("float64"),
            "trades_count": rng.integers(0, 400, size=n).astype("int32"),
        }
    )


def users_frame() -> Any:
    import pandas as pd

    records = [
        {
            "user_id": i,
            "username": name,
            "password_hash": hash_password(
                password, hashlib.sha256(name.encode()).hexdigest()[:16]
            ),
            "role": role,
            "active": active,
        }
        for i, (name, role, password, active) in enumerate(SANDBOX_USERS, start=1)
    ]
    return pd.DataFrame.from_records(records, columns=list(USER_COLUMNS))


def frames(rows: int, seed: int = SEED) -> dict[str, Any]:
    return {
        "trades": trades_frame(rows, seed),
        "strategy_results": strategy_results_frame(seed),
        "users": users_frame(),
    }


def live_trades(env: str, now: dt.datetime, count: int, rng: Any) -> list[tuple[Any, ...]]:
    """A batch of new trades as the app stand-in ingests them (unique ids per env and time)."""
    base = ENV_ID_BASE[env] + int(now.timestamp() * 1000) * 100
    stamp = now.replace(microsecond=0, tzinfo=None)
    out = []
    for i in range(min(count, 100)):
        symbol = SYMBOLS[rng.randrange(len(SYMBOLS))]
        out.append(
            (
                base + i,
                rng.randint(1, STRATEGIES),
                rng.randrange(ACCOUNTS.start, ACCOUNTS.stop),
                symbol,
                "BUY" if rng.random() < 0.5 else "SELL",
                rng.randint(1, 499) * 10,
                Decimal(rng.randint(200_000, 8_000_000)).scaleb(-4),
                stamp,
                stamp,
            )
        )
    return out


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def mysql_tables_present(con: Any) -> set[str]:
    with con.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        )
        return {str(r[0]) for r in cur.fetchall()}


def seed_mysql(con: Any, data: dict[str, Any], log: Log = print) -> dict[str, int]:
    """Create and fill every table that does not exist yet; return rows loaded per table.

    `con` is a pymysql connection on the archive database, opened with local_infile=True.
    """
    present = mysql_tables_present(con)
    loaded: dict[str, int] = {}
    for table in TABLES:
        if table in present:
            continue
        frame = data[table]
        with con.cursor() as cur:
            cur.execute(MYSQL_DDL[table])
        _mysql_load(con, table, frame)
        con.commit()
        loaded[table] = len(frame)
        log(f"  mysql: seeded {table} ({len(frame)} rows)")
    return loaded


def _mysql_load(con: Any, table: str, frame: Any) -> None:
    columns = list(frame.columns)
    out = frame.copy()
    for name in columns:
        if out[name].dtype == bool:
            out[name] = out[name].astype("int8")  # MySQL reads 'True' as 0
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        path = Path(f.name)
        out.to_csv(f, sep="\t", header=False, index=False, lineterminator="\n")
    try:
        with con.cursor() as cur:
            try:
                cur.execute(
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` "
                    "FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' "
                    f"({', '.join(columns)})",
                    (str(path),),
                )
            except Exception:
                # The server or client refused local infile: multi-row INSERTs instead.
                con.rollback()
                placeholders = ", ".join(["%s"] * len(columns))
                rows = [tuple(_py(v) for v in rec) for rec in frame.itertuples(False, None)]
                for i in range(0, len(rows), 5000):
                    cur.executemany(
                        f"INSERT INTO `{table}` ({', '.join(columns)}) VALUES ({placeholders})",
                        rows[i : i + 5000],
                    )
    finally:
        path.unlink(missing_ok=True)


def _py(v: Any) -> Any:
    """numpy / pandas scalars to plain Python values."""
    if hasattr(v, "to_pydatetime"):
        return v.to_pydatetime()
    if hasattr(v, "item") and not isinstance(v, Decimal):
        return v.item()
    return v


def heavydb_tables_present(cursor_con: Any, names: Sequence[str] = TABLES) -> set[str]:
    """Which of `names` exist in HeavyDB (probed with a cheap query each)."""
    present = set()
    for name in names:
        try:
            cur = cursor_con.cursor()
            cur.execute(f"SELECT COUNT(*) FROM {name} WHERE 1 = 0")
            cur.fetchall()
            present.add(name)
        except Exception:
            continue
    return present


def seed_heavydb(
    host: str,
    port: int,
    password: str,
    data: dict[str, Any],
    *,
    user: str = "admin",
    dbname: str = "heavyai",
    log: Log = print,
) -> dict[str, int]:
    """Create and fill every HeavyDB table that does not exist yet (Arrow load path)."""
    import heavyai

    con = heavyai.connect(user=user, password=password, host=host, port=port, dbname=dbname)
    try:
        present = heavydb_tables_present(con)
        loaded: dict[str, int] = {}
        for table in TABLES:
            if table in present:
                continue
            con.execute(HEAVYDB_DDL[table])
            con.load_table_arrow(table, arrow_table(table, data[table]))
            loaded[table] = len(data[table])
            log(f"  heavydb: seeded {table} ({len(data[table])} rows)")
        return loaded
    finally:
        con.close()


def arrow_table(table: str, frame: Any) -> Any:
    """An Arrow table with the exact types of the HeavyDB DDL (no inference surprises).

    `frame` is anything indexable by column name giving a sequence: a DataFrame or a dict of
    lists."""
    import pyarrow as pa

    schemas = {
        "trades": [
            ("trade_id", pa.int64()),
            ("strategy_id", pa.int32()),
            ("account_id", pa.int32()),
            ("symbol", pa.string()),
            ("side", pa.string()),
            ("quantity", pa.int32()),
            ("price", pa.decimal128(18, 4)),
            ("executed_at", pa.timestamp("s")),
            ("updated_at", pa.timestamp("s")),
        ],
        "strategy_results": [
            ("strategy_id", pa.int32()),
            ("run_date", pa.date32()),
            ("pnl", pa.decimal128(18, 2)),
            ("sharpe", pa.float64()),
            ("trades_count", pa.int32()),
        ],
        "users": [
            ("user_id", pa.int32()),
            ("username", pa.string()),
            ("password_hash", pa.string()),
            ("role", pa.string()),
            ("active", pa.bool_()),
        ],
    }
    schema = pa.schema(schemas[table])
    arrays = [pa.array(list(frame[name]), type=typ) for name, typ in schemas[table]]
    return pa.Table.from_arrays(arrays, schema=schema)


_arrow_table = arrow_table  # the earlier private name, still used by tests
