"""Start a HeavyDB sandbox server in a subprocess (tests and the sandbox launcher).

with start_server(tmp_path) as srv:
    con = heavydb.connect(user="admin", password="HyperInteractive",
                          host=srv.host, port=srv.port, dbname="heavyai")
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

DEFAULT_ADMIN_PASSWORD = "HyperInteractive"


class RunningServer:
    """A sandbox server process: ``host``, ``port``, ``pid``; ``stop()`` ends it."""

    def __init__(self, proc: subprocess.Popen[str], host: str, port: int, data_dir: Path) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.data_dir = data_dir

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def uri(self) -> str:
        return f"heavydb://admin:{DEFAULT_ADMIN_PASSWORD}@{self.host}:{self.port}/heavyai?protocol=binary"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, SIGKILL if it does not exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.proc.returncode

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(
    data_dir: Path,
    *,
    port: int | None = None,
    read_only: bool = False,
    admin_password: str = DEFAULT_ADMIN_PASSWORD,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
) -> RunningServer:
    """Launch ``python -m sandbox.heavydb`` and wait until it accepts connections.

    ``port=None`` lets the server pick a free loopback port (it reports the one it bound).
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "sandbox.heavydb",
        "--host",
        host,
        "--port",
        str(port if port is not None else 0),
        "--data-dir",
        str(data_dir),
        "--admin-password",
        admin_password,
    ]
    if read_only:
        cmd.append("--read-only")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    if env.get("PYTHONDONTWRITEBYTECODE") and not env.get("PYTHONPYCACHEPREFIX"):
        # Without bytecode caches every start recompiles pyarrow/sqlglot/thrift (seconds);
        # keep the caches in a private directory instead of the shared virtualenv.
        env.pop("PYTHONDONTWRITEBYTECODE")
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "heavydb-sandbox-pycache")
    stderr_path = data_dir / "heavydb_sandbox.stderr.log"
    err = open(stderr_path, "a")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=str(root)
    )
    err.close()
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    line = ""
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if sel.select(timeout=0.1):
                line = proc.stdout.readline()
                if line.startswith("listening on "):
                    hostport = line[len("listening on ") :].strip()
                    h, _, p = hostport.rpartition(":")
                    return RunningServer(proc, h, int(p), data_dir)
                if not line:
                    break
    finally:
        sel.close()
    proc.kill()
    proc.wait()
    detail = stderr_path.read_text()[-4000:] if stderr_path.exists() else ""
    raise RuntimeError(f"HeavyDB sandbox server did not start (last output {line!r}):\n{detail}")
