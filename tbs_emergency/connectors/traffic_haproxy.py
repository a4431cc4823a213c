"""Traffic through HAProxy's runtime API (`traffic.kind = "haproxy"`).

One backend (`traffic.backend`, default `tbs`) holds one server per environment
(`traffic.servers`, default `{blue = "blue", green = "green"}`). The environment with traffic is
the server that is in service (running, not in maintenance or drain, weight above zero);
switching puts the target `ready` with weight 100 first, then the other in `maint` (never a
moment with no server in service), and reads the state back.

Runtime API: `traffic.runtime_api` is `host:port` (a `stats socket ipv4@host:port level admin`)
or the path of a unix socket. One command per connection, as HAProxy's non-interactive mode
expects; every call is bounded by `traffic.timeout_s`.
"""

from __future__ import annotations

import socket
from typing import cast

from tbs_emergency.config import TrafficConfig
from tbs_emergency.connectors._common import probe
from tbs_emergency.connectors.base import EnvName, Probe
from tbs_emergency.connectors.traffic import UnsupportedSecurityOps
from tbs_emergency.errors import ConnectorError, Refused, TimedOut, Unreachable

ENVIRONMENTS: tuple[EnvName, ...] = ("blue", "green")
# srv_admin_state bits that take a server out of service: forced/inherited/resolution maint and
# forced/inherited drain. CMAINT (0x04) only records that the configuration said "disabled"; it
# stays set after `state ready`, so it does not count.
OUT_OF_SERVICE = 0x01 | 0x02 | 0x08 | 0x10 | 0x20


class HAProxyTraffic(UnsupportedSecurityOps):
    """Security operations (drain, deny, allowlists, rate limits, access log) raise a
    ConnectorError saying this adapter cannot do them."""

    kind = "haproxy"

    def __init__(self, config: TrafficConfig, name: str = "traffic") -> None:
        if not config.runtime_api:
            raise ConnectorError(name, "configure", "traffic.runtime_api is not set")
        self.config = config
        self.name = name
        self.backend = config.backend
        self.servers = {env: config.servers.get(env, env) for env in ENVIRONMENTS}

    # -- the runtime API -----------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        addr = self.config.runtime_api or ""
        timeout = self.config.timeout_s
        try:
            if ":" in addr and not addr.startswith("/"):
                host, port = addr.rsplit(":", 1)
                return socket.create_connection((host, int(port)), timeout=timeout)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(addr)
            return s
        except TimeoutError:
            raise TimedOut(self.name, "connect", f"runtime API {addr}: no answer") from None
        except OSError as exc:
            raise Unreachable(self.name, "connect", f"runtime API {addr}: {exc}") from None

    def command(self, cmd: str) -> str:
        """Send one runtime API command; its answer."""
        with self._connect() as s:
            try:
                s.sendall(cmd.encode() + b"\n")
                chunks = []
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
            except TimeoutError:
                raise TimedOut(self.name, cmd.split()[0], "no answer in time") from None
        answer = b"".join(chunks).decode(errors="replace")
        lowered = answer.lower()
        if "unknown command" in lowered or "permission denied" in lowered or "no such" in lowered:
            raise Refused(self.name, cmd, answer.strip()[:200])
        return answer

    def server_states(self) -> dict[str, dict[str, int]]:
        """Per server of the backend: op_state, admin_state, weight."""
        out: dict[str, dict[str, int]] = {}
        text = self.command(f"show servers state {self.backend}")
        header: list[str] = []
        for line in text.splitlines():
            if line.startswith("#"):
                header = line.lstrip("# ").split()
                continue
            parts = line.split()
            if not header or len(parts) < len(header) // 2:
                continue
            row = dict(zip(header, parts, strict=False))
            if row.get("be_name") != self.backend:
                continue
            out[row["srv_name"]] = {
                "op_state": int(row.get("srv_op_state", 0)),
                "admin_state": int(row.get("srv_admin_state", 0)),
                "weight": int(row.get("srv_uweight", 0)),
            }
        if not out:
            raise ConnectorError(self.name, "read state", f"backend {self.backend!r} not found")
        return out

    # -- the Traffic protocol ------------------------------------------------------------------

    def _in_service(self) -> list[EnvName]:
        states = self.server_states()
        live = []
        for env, srv in self.servers.items():
            st = states.get(srv)
            if (
                st
                and st["op_state"] != 0
                and not st["admin_state"] & OUT_OF_SERVICE
                and st["weight"] > 0
            ):
                live.append(env)
        return live

    def active(self) -> EnvName:
        live = self._in_service()
        if len(live) != 1:
            raise ConnectorError(
                self.name,
                "read active environment",
                f"{len(live)} environments in service in backend {self.backend}: {live}",
            )
        return cast(EnvName, live[0])

    def switch_to(self, env: EnvName) -> EnvName:
        if env not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {env!r}")
        other = "green" if env == "blue" else "blue"
        b, target, old = self.backend, self.servers[env], self.servers[other]
        self.command(f"set server {b}/{target} state ready")
        self.command(f"set server {b}/{target} weight 100")
        self.command(f"set server {b}/{old} state maint")
        now = self.active()
        if now != env:
            raise ConnectorError(self.name, f"switch traffic to {env}", f"{now} is active after")
        return now

    def ping(self) -> Probe:
        return probe(self.name, lambda: f"HAProxy runtime API, active: {self.active()}")

    def close(self) -> None:
        pass
