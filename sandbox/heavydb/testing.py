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


def _pycache_dir() -> Path | None:
    """This user's bytecode cache (the one `sandbox up` uses), or None if it is not safe.

    Not a fixed directory under the system temp dir: anyone on the machine could create that
    first and plant bytecode every server start would then run (and another user's directory
    there just made the cache fail). The cache must outlive a run, so it lives in the home.
    """
    path = Path.home() / ".cache" / "tbs-emergency" / "pycache"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None  # someone else could write into it: run without a cache instead
    return path


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
    wants_cache = env.get("PYTHONDONTWRITEBYTECODE") and not env.get("PYTHONPYCACHEPREFIX")
    if wants_cache and (cache := _pycache_dir()) is not None:
        # Without bytecode caches every start recompiles pyarrow/sqlglot/thrift (seconds);
        # keep the caches in this user's private cache instead of the shared virtualenv.
        env.pop("PYTHONDONTWRITEBYTECODE")
        env["PYTHONPYCACHEPREFIX"] = str(cache)
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
