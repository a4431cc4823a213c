"""The ALB traffic adapter against moto (weighted target groups on a listener), through boto3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tbs_emergency.config import TrafficConfig
from tbs_emergency.connectors.traffic_alb import AlbTraffic
from tbs_emergency.errors import ConnectorError

pytestmark = pytest.mark.integration


@pytest.fixture
def alb(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, TrafficConfig]]:
    moto = pytest.importorskip("moto")
    import boto3

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    with moto.mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)["Subnet"][
                "SubnetId"
            ]
            for i, az in enumerate(("us-east-1a", "us-east-1b"))
        ]
        elb = boto3.client("elbv2", region_name="us-east-1")
        lb = elb.create_load_balancer(Name="tbs", Subnets=subnets)["LoadBalancers"][0]
        tgs = {
            env: elb.create_target_group(Name=f"tbs-{env}", Protocol="HTTP", Port=80, VpcId=vpc)[
                "TargetGroups"
            ][0]["TargetGroupArn"]
            for env in ("blue", "green")
        }
        listener = elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tgs["green"]}],
        )["Listeners"][0]["ListenerArn"]
        cfg = TrafficConfig(kind="alb", listener_arn=listener, target_groups=tgs)
        yield elb, cfg


def test_switch_weights_between_target_groups(alb: tuple[Any, TrafficConfig]) -> None:
    elb, cfg = alb
    t = AlbTraffic(cfg, client=elb)
    assert t.active() == "green"
    assert t.switch_to("blue") == "blue"
    assert t.weights() == {"blue": 100, "green": 0}
    assert t.switch_to("blue") == "blue"
    assert t.switch_to("green") == "green" and t.ping().reachable


def test_unknown_listener_is_refused(alb: tuple[Any, TrafficConfig]) -> None:
    elb, cfg = alb
    bad = cfg.model_copy(update={"listener_arn": cfg.listener_arn + "x"})
    with pytest.raises(ConnectorError):
        AlbTraffic(bad, client=elb).active()
