"""The EC2 provider against moto's EC2 server (``moto.server.ThreadedMotoServer`` on loopback):
boto3 talks HTTP to it exactly as to AWS, with ``JIT_AWS_ENDPOINT_URL`` pointing at it.

What moto does not do is noted where it matters: it does not deduplicate ``ClientToken``, so
the crash-retry test relies on the provider's own look-up by tag (AWS would also return the
first instance for the repeated token, which the test checks the provider sends).
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipeline.config import instances as instance_settings
from pipeline.instances.base import LaunchRequest, ProviderConfigError, load_provider
from pipeline.instances.ec2 import ID_TAG, Ec2Provider
from pipeline.instances.reaping import Policy, Reap, decide, launched, observe
from pipeline.messages.heartbeats import InstanceHeartbeat

REGION = "eu-west-1"
TAG_KEY = "Managing-JIT-Orchestrator-ID"


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, str]]:
    """moto's server on a free loopback port, and one of its stock AMIs (the same after every
    reset; listing them takes most of a second, so it is done once)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        ec2 = boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        ami = str(ec2.describe_images()["Images"][0]["ImageId"])
        ec2.close()
        yield url, ami
    finally:
        server.stop()


@pytest.fixture
def aws(moto: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A fresh moto account with a VPC, subnet, security group, key pair and profile."""
    moto_url, ami = moto
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    kw = {"region_name": REGION, "endpoint_url": moto_url}
    ec2 = boto3.client("ec2", **kw)
    iam = boto3.client("iam", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="jit", Description="jit", VpcId=vpc)["GroupId"]
    ec2.create_key_pair(KeyName="JIT-Key-Pair")
    iam.create_instance_profile(InstanceProfileName="jit-agent")
    yield {"ec2": ec2, "url": moto_url, "subnet": subnet, "sg": sg, "ami": ami}
    ec2.close()
    iam.close()


def config_env(aws: dict[str, Any], **more: str) -> dict[str, str]:
    env = {
        "JIT_AWS_AMI": aws["ami"],
        "JIT_AWS_SECURITY_GROUP": aws["sg"],
        "JIT_AWS_REGION": REGION,
        "JIT_AWS_ENDPOINT_URL": aws["url"],
        "JIT_AWS_MANAGED_TAG_VALUE": "controller-1",
    }
    env.update(more)
    return env


def provider_for(env: dict[str, str]) -> Ec2Provider:
    config = instance_settings.load(env=env)
    provider = load_provider("ec2", config, nats_url="nats://nats.internal:4222")
    assert isinstance(provider, Ec2Provider)
    provider.poll_interval = 0.05
    return provider


def instances(ec2: Any, *filters: dict[str, Any]) -> list[dict[str, Any]]:
    pages = ec2.describe_instances(Filters=list(filters))["Reservations"]
    return [i for r in pages for i in r["Instances"]]


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


async def test_launch_with_every_option(aws: dict[str, Any]) -> None:
    env = config_env(
        aws,
        JIT_AWS_INSTANCE_TYPE="c5n.2xlarge",
        JIT_AWS_INSTANCE_PROFILE="jit-agent",
        JIT_AWS_KEY_NAME="JIT-Key-Pair",
        JIT_AWS_SUBNET=aws["subnet"],
        JIT_AWS_EXTRA_TAGS="team=media,cost-center=jit",
        JIT_AWS_SPOT_GRABBERS="1",
    )
    provider = provider_for(env)
    request = LaunchRequest("inst-abc", {"grabber": 8, "stitcher": 1}, kind="grabber")
    assert provider.run_params(request)["ClientToken"] == "inst-abc"
    info = await provider.launch(request)
    assert info.instance_id == "inst-abc" and info.external_id.startswith("i-") and info.spot

    (instance,) = instances(aws["ec2"], {"Name": f"tag:{ID_TAG}", "Values": ["inst-abc"]})
    assert instance["InstanceId"] == info.external_id
    assert instance["ImageId"] == aws["ami"]
    assert instance["InstanceType"] == "c5n.2xlarge"
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [aws["sg"]]
    assert instance["SubnetId"] == aws["subnet"]
    assert instance["KeyName"] == "JIT-Key-Pair"
    assert instance["IamInstanceProfile"]["Arn"].endswith("/jit-agent")
    assert instance["InstanceLifecycle"] == "spot"
    assert tags_of(instance) == {
        "Name": "tessera-inst-abc",
        TAG_KEY: "controller-1",
        ID_TAG: "inst-abc",
        "tessera-kind": "grabber",
        "team": "media",
        "cost-center": "jit",
    }
    volumes = aws["ec2"].describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [info.external_id]}]
    )["Volumes"]
    assert volumes and all(tags_of(v)[TAG_KEY] == "controller-1" for v in volumes)

    attribute = aws["ec2"].describe_instance_attribute(
        InstanceId=info.external_id, Attribute="userData"
    )
    script = base64.b64decode(attribute["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash\n")
    for line in (
        'NATS_URL="nats://nats.internal:4222"',
        'TESSERA_INSTANCE_ID="inst-abc"',
        'TESSERA_CAPACITY_GRABBER="8"',
        'TESSERA_CAPACITY_STITCHER="1"',
        'TESSERA_CAPACITY_JIT="0"',
    ):
        assert line in script.splitlines()
    assert '"$(command -v tessera)" agent' in script

    ready = await provider.wait_ready("inst-abc", 10)
    assert ready.status == "ready" and ready.external_id == info.external_id
    # Not for grabbers: on demand.
    other = await provider.launch(LaunchRequest("inst-def", {"jit": 2}, kind="jit"))
    assert not other.spot
    assert [i.instance_id for i in await provider.list_owned()] == ["inst-abc", "inst-def"]


async def test_a_retried_launch_after_a_crash_gives_one_instance(aws: dict[str, Any]) -> None:
    request = LaunchRequest("inst-retry", {"jit": 2})
    first = await provider_for(config_env(aws)).launch(request)
    # The controller crashed before recording the launch; a new one retries the same token.
    second = await provider_for(config_env(aws)).launch(request)
    assert second.external_id == first.external_id
    found = instances(aws["ec2"], {"Name": f"tag:{ID_TAG}", "Values": ["inst-retry"]})
    assert len(found) == 1


async def test_an_orphan_with_our_tag_is_terminated(aws: dict[str, Any]) -> None:
    ec2 = aws["ec2"]

    def run(tags: dict[str, str]) -> str:
        spec = [
            {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
        ]
        reply = ec2.run_instances(
            ImageId=aws["ami"], MinCount=1, MaxCount=1, TagSpecifications=spec
        )
        return str(reply["Instances"][0]["InstanceId"])

    orphan = run({TAG_KEY: "controller-1"})  # ours, but no record of it anywhere
    stranger = run({TAG_KEY: "controller-2"})  # another controller's
    untagged = run({"team": "media"})
    provider = provider_for(config_env(aws))
    kept = await provider.launch(LaunchRequest("inst-kept", {"jit": 1}))
    owned = await provider.list_owned()
    assert {i.external_id for i in owned} == {orphan, kept.external_id}

    now = time.time() + 3600  # long after every launch
    known = {
        "inst-kept": observe(
            launched("inst-kept", {"jit": 1}, now - 60), beat("inst-kept", now), now
        )
    }
    decision = decide(owned, known, now, Policy())
    assert decision.terminate == (Reap(orphan, "orphaned"),)
    for reap in decision.terminate:
        await provider.terminate(reap.instance_id, reap.reason)
    states = {i["InstanceId"]: i["State"]["Name"] for i in instances(ec2)}
    assert states[orphan] in ("shutting-down", "terminated")
    assert {states[stranger], states[untagged], states[kept.external_id]} <= {"pending", "running"}
    assert [i.instance_id for i in await provider.list_owned()] == ["inst-kept"]


def beat(iid: str, at: float, *, busy: bool = False, idle_for: float = 0.0) -> InstanceHeartbeat:
    return InstanceHeartbeat(
        at=at,
        instance_id=iid,
        capacity={"jit": 2},
        used={"jit": 1} if busy else {},
        workers=("jit-s1",) if busy else (),
        started_at=at - 10,
        idle_since=None if busy else at - idle_for,
    )


async def test_idle_and_up_time_reaping_on_a_short_clock(aws: dict[str, Any]) -> None:
    provider = provider_for(config_env(aws))
    policy = Policy(max_idle=5.0, max_up=50.0, ready_timeout=20.0, heartbeat_timeout=3.0)
    t0 = 1_000_000.0
    views = {}
    for iid in ("inst-idle", "inst-busy"):
        await provider.launch(LaunchRequest(iid, {"jit": 2}))
        views[iid] = launched(iid, {"jit": 2}, t0)

    async def tick(now: float, idle_for: float) -> list[Reap]:
        """One controller pass at ``now``: beats arrive, then the reaping decision."""
        for iid in views:
            busy = iid == "inst-busy"
            views[iid] = observe(views[iid], beat(iid, now, busy=busy, idle_for=idle_for), now)
        return list(decide(await provider.list_owned(), views, now, policy).terminate)

    assert await tick(t0 + 4, idle_for=4) == []
    assert await tick(t0 + 10, idle_for=6) == [Reap("inst-idle", "idle")]
    await provider.terminate("inst-idle", "idle")
    del views["inst-idle"]
    assert [i.instance_id for i in await provider.list_owned()] == ["inst-busy"]
    assert await tick(t0 + 49, idle_for=0) == []
    assert await tick(t0 + 51, idle_for=0) == [Reap("inst-busy", "max-up-time")]
    await provider.terminate("inst-busy", "max-up-time")
    assert await provider.list_owned() == []


async def test_missing_settings_and_region_name_the_fix(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = config_env(aws)
    del env["JIT_AWS_REGION"]
    with pytest.raises(ProviderConfigError, match="JIT_AWS_REGION"):
        provider_for(env)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)  # the orchestrator's own region
    provider = provider_for(env)
    await provider.launch(LaunchRequest("inst-r", {"jit": 1}))
    bad = provider_for(config_env(aws, JIT_AWS_INSTANCE_PROFILE="no-such-profile"))
    with pytest.raises(ProviderConfigError, match="JIT_AWS_INSTANCE_PROFILE"):
        await bad.launch(LaunchRequest("inst-p", {"jit": 1}))
