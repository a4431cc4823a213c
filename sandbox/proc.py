"""Starting and stopping the sandbox's processes.

Every sandbox service is a child process started in its own session (so it outlives the command
that started it and can be stopped as a group), listening on loopback on a free port, logging to
a file under the sandbox directory. `Service` records what is needed to find and stop it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A sandbox service could not be started or did not become ready."""


@dataclass
class Service:
    name: str
    pid: int
    host: str
    port: int
    url: str
    log: str
    extra: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Service:
        return cls(**data)  # type: ignore[arg-type]


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left."""
    if not pid_alive(pid):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
    if pid_alive(pid):
        raise ServiceError(f"process {pid} did not stop")


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv detached in its own session, stdout and stderr appended to log_path (as
    `user`, with its primary group and no other, when given: a server that refuses root)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
                **(
                    {"user": user, "group": primary_group(user), "extra_groups": []} if user else {}
                ),
            )
        except FileNotFoundError as exc:
            raise ServiceError(f"{name}: cannot start {argv[0]!r}: {exc.strerror}") from None


def primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def wait_ready(
    name: str,
    proc: subprocess.Popen[bytes] | None,
    check: Callable[[], bool],
    log_path: Path,
    timeout: float = 30.0,
) -> None:
    """Wait until check() is true; fail early, with the log's tail, if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {proc.returncode} while starting; log tail:\n"
                + log_tail(log_path)
            )
        time.sleep(0.1)
    raise ServiceError(f"{name} not ready after {timeout:.0f}s; log tail:\n" + log_tail(log_path))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_listening(
    name: str,
    argv: Sequence[str],
    port: int,
    log_path: Path,
    *,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30.0,
    ready: Callable[[], bool] | None = None,
    extra: dict[str, str] | None = None,
    user: str | None = None,
) -> Service:
    """Spawn a server and return it once its port accepts connections (and ready() holds)."""
    proc = spawn(name, argv, log_path, env=env, cwd=cwd, user=user)

    def check() -> bool:
        return port_open(LOOPBACK, port) and (ready is None or ready())

    try:
        wait_ready(name, proc, check, log_path, timeout)
    except ServiceError:
        stop_pid(proc.pid)
        raise
    return Service(
        name=name,
        pid=proc.pid,
        host=LOOPBACK,
        port=port,
        url=url or f"http://{LOOPBACK}:{port}",
        log=str(log_path),
        extra=extra or {},
    )


def save_services(path: Path, services: Mapping[str, Service]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({n: s.to_json() for n, s in services.items()}, indent=2))
    tmp.replace(path)


def load_services(path: Path) -> dict[str, Service]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {n: Service.from_json(s) for n, s in data.items()}
