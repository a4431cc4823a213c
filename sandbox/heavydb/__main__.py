"""``python -m sandbox.heavydb``: run the HeavyDB-compatible sandbox server.

Prints ``listening on HOST:PORT`` once it accepts connections; SIGTERM/SIGINT stop it
cleanly (connections closed, DuckDB checkpointed and closed).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
import threading
import types
from pathlib import Path
from types import FrameType

DB_FILE = "heavydb_sandbox.duckdb"


def _thrift_without_client() -> None:
    """Let ``heavydb.thrift``/``heavydb.common`` load without ``heavydb/__init__``.

    The client package's ``__init__`` imports sqlalchemy and pandas (seconds of start-up);
    the server only needs the generated Thrift modules.  Only done in the server process.
    """
    if "heavydb" in sys.modules:
        return
    spec = importlib.util.find_spec("heavydb")
    if spec is None or spec.submodule_search_locations is None:
        return
    pkg = types.ModuleType("heavydb")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    pkg.__file__ = spec.origin
    pkg.__package__ = "heavydb"
    sys.modules["heavydb"] = pkg


class _NoPandas:
    """Import hook: ``import pandas`` fails (pyarrow then treats pandas as absent)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not loaded in the HeavyDB sandbox server process")
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sandbox.heavydb", description=__doc__)
    p.add_argument("--port", type=int, default=6274, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--admin-password", default="HyperInteractive")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)

    _thrift_without_client()
    # pyarrow imports pandas the first time it converts a Python list; the server never
    # needs pandas and importing it costs seconds, so keep it out of this process.
    sys.meta_path.insert(0, _NoPandas())
    from .catalog import SandboxDB
    from .handler import Handler
    from .server import SandboxServer

    args.data_dir.mkdir(parents=True, exist_ok=True)
    db = SandboxDB(str(args.data_dir / DB_FILE), args.admin_password)
    handler = Handler(db, read_only=args.read_only)
    server = SandboxServer(handler, args.host, args.port)

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {server.host}:{server.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.shutdown()
        db.close()
    return 0


if __name__ == "__main__":
    code = main()
    # DuckDB is closed and checkpointed by now; skip the interpreter's slow module teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
