"""Traffic through an AWS Application Load Balancer (`traffic.kind = "alb"`), with boto3.

The listener (`traffic.listener_arn`) forwards to one target group per environment
(`traffic.target_groups = {blue = arn, green = arn}`) with weights. The environment with
traffic is the one whose target group has all the weight; switching rewrites the listener's
default action to a weighted forward (target 100, other 0) and reads it back. Credentials come
from the environment or instance role as boto3 finds them (never from this configuration);
`traffic.endpoint_url` points at a test endpoint (moto) when set.
"""

from __future__ import annotations

from typing import Any, cast

from tbs_emergency.config import TrafficConfig
from tbs_emergency.connectors._common import probe
from tbs_emergency.connectors.base import EnvName, Probe
from tbs_emergency.connectors.traffic import UnsupportedSecurityOps
from tbs_emergency.errors import ConnectorError, Refused, Unreachable

ENVIRONMENTS: tuple[EnvName, ...] = ("blue", "green")


class AlbTraffic(UnsupportedSecurityOps):
    """Security operations (drain, deny, allowlists, rate limits, access log) raise a
    ConnectorError saying this adapter cannot do them."""

    kind = "alb"

    def __init__(self, config: TrafficConfig, name: str = "traffic", client: Any = None) -> None:
        if not config.listener_arn or not config.target_groups:
            raise ConnectorError(name, "configure", "alb needs listener_arn and target_groups")
        self.config = config
        self.name = name
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "elbv2",
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url,
                config=Config(
                    connect_timeout=self.config.timeout_s,
                    read_timeout=self.config.timeout_s,
                    retries={"max_attempts": 2},
                ),
            )
        return self._client

    def _call(self, operation: str, fn: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            msg = exc.response.get("Error", {}).get("Message")
            raise Refused(self.name, operation, f"{code}: {msg}") from None
        except BotoCoreError as exc:
            raise Unreachable(self.name, operation, type(exc).__name__) from None

    def weights(self) -> dict[EnvName, int]:
        arn_to_env = {arn: env for env, arn in self.config.target_groups.items()}
        resp = self._call(
            "describe listener",
            lambda: self.client().describe_listeners(ListenerArns=[self.config.listener_arn]),
        )
        actions = resp["Listeners"][0]["DefaultActions"]
        out: dict[EnvName, int] = {"blue": 0, "green": 0}
        for a in actions:
            if a.get("Type") != "forward":
                continue
            groups = (a.get("ForwardConfig") or {}).get("TargetGroups") or []
            if not groups and a.get("TargetGroupArn"):
                groups = [{"TargetGroupArn": a["TargetGroupArn"], "Weight": 1}]
            for g in groups:
                env = arn_to_env.get(g["TargetGroupArn"])
                if env in out:
                    out[cast(EnvName, env)] += int(g.get("Weight", 1))
        return out

    def active(self) -> EnvName:
        w = self.weights()
        live = [e for e in ENVIRONMENTS if w[e] > 0]
        if len(live) != 1:
            raise ConnectorError(self.name, "read active environment", f"weights {w}")
        return live[0]

    def switch_to(self, env: EnvName) -> EnvName:
        if env not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {env!r}")
        groups = [
            {"TargetGroupArn": arn, "Weight": 100 if e == env else 0}
            for e, arn in self.config.target_groups.items()
        ]
        self._call(
            f"switch traffic to {env}",
            lambda: self.client().modify_listener(
                ListenerArn=self.config.listener_arn,
                DefaultActions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": groups}}],
            ),
        )
        now = self.active()
        if now != env:
            raise ConnectorError(self.name, f"switch traffic to {env}", f"{now} active after")
        return now

    def ping(self) -> Probe:
        return probe(self.name, lambda: f"ALB listener, active: {self.active()}")

    def close(self) -> None:
        pass
