"""Instances as AWS EC2 VMs (boto3), each booting ``tessera agent`` from its user data.

- **Launch** runs one instance of the configured AMI, type, security group, subnet, instance
  profile and key pair, tagged ``<managed tag key>=<value>`` (ownership), ``tessera-instance-id``
  (our id), ``Name`` and the extra tags, on the instance and its volumes. The user data writes
  the agent's environment (``NATS_URL``, ``TESSERA_INSTANCE_ID``, capacities) to
  ``/etc/tessera/agent.env`` and starts ``tessera agent`` as a systemd unit.
- **Idempotency** twice over: the launch first looks for a live instance tagged with the id
  (a retry after a crash finds the first one), and ``RunInstances`` carries the id as its
  ``ClientToken``, so two racing calls also give one instance (EC2 returns the first).
- **Spot**: with ``JIT_AWS_SPOT_GRABBERS`` an instance launched for grabbers is a one-time spot
  instance (the original ran grabbers on spot: a lost grabber is restarted elsewhere).
- **Ownership**: ``list_owned`` lists live instances with the managed tag; the controller's
  reaping terminates those it does not know (orphans).

boto3 is synchronous: every call runs in a worker thread. AWS errors become
:class:`~pipeline.instances.base.InstanceError` subclasses naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline.config.instances import capacity_env
from pipeline.errors import InstanceError
from pipeline.instances.base import (
    InstanceInfo,
    InstanceNotFoundError,
    InstanceStatus,
    LaunchError,
    LaunchRequest,
    ProviderConfigError,
    ProviderUnavailableError,
)
from pipeline.instances.polling import poll_until

if TYPE_CHECKING:
    from pipeline.config.instances import InstanceConfig

log = logging.getLogger("tessera.instances.ec2")

ID_TAG = "tessera-instance-id"
"""Tag holding Tessera's instance id (the launch token)."""
KIND_TAG = "tessera-kind"
"""Tag naming the worker kind an instance was launched for, if any."""

LIVE_STATES = ("pending", "running", "stopping", "stopped")
_STATUS: dict[str, InstanceStatus] = {
    "pending": "pending",
    "running": "ready",
    "stopping": "stopping",
    "shutting-down": "stopping",
    "stopped": "stopped",
}

# AWS error codes that mean "a setting is wrong", and the setting.
_SETTING_ERRORS = {
    "InvalidAMIID": "JIT_AWS_AMI",
    "InvalidGroup": "JIT_AWS_SECURITY_GROUP",
    "InvalidSubnetID": "JIT_AWS_SUBNET",
    "InvalidKeyPair": "JIT_AWS_KEY_NAME",
    "InvalidInstanceType": "JIT_AWS_INSTANCE_TYPE",
}


def user_data(env: Mapping[str, str], *, unit: str = "tessera-agent") -> str:
    """The boot script of an instance: write the agent's environment file, start the agent.

    Values are written to a systemd ``EnvironmentFile`` (double-quoted, backslash-escaped);
    one containing a line break is refused, as it could end the file early.
    """
    lines = []
    for key, value in sorted(env.items()):
        if "\n" in value or "\r" in value or not key.replace("_", "").isalnum():
            raise ProviderConfigError(f"agent setting {key} cannot go into user data: {value!r}")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{escaped}"')
    body = "\n".join(lines)
    return (
        "#!/bin/bash\n"
        "# Tessera agent (written by Tessera's EC2 provider).\n"
        "set -euo pipefail\n"
        "install -d -m 0755 /etc/tessera\n"
        "umask 077\n"
        "cat > /etc/tessera/agent.env <<'TESSERA_AGENT_ENV'\n"
        f"{body}\n"
        "TESSERA_AGENT_ENV\n"
        f"exec systemd-run --unit={shlex.quote(unit)} "
        "--property=EnvironmentFile=/etc/tessera/agent.env "
        "--property=Restart=on-failure --property=KillMode=mixed "
        '--property=TimeoutStopSec=30 "$(command -v tessera)" agent\n'
    )


class Ec2Provider:
    """Launches instances on EC2. Build it with :meth:`from_config`."""

    name = "ec2"

    def __init__(
        self,
        *,
        nats_url: str,
        ami: str,
        security_group: str,
        region: str | None = None,
        instance_type: str = "c5n.xlarge",
        instance_profile: str | None = None,
        key_name: str | None = "JIT-Key-Pair",
        subnet: str | None = None,
        tag_key: str = "Managing-JIT-Orchestrator-ID",
        tag_value: str | None = None,
        extra_tags: Iterable[tuple[str, str]] = (),
        spot_grabbers: bool = False,
        endpoint_url: str | None = None,
        agent_env: Mapping[str, str] | None = None,
        agent_port: int = 8081,
        poll_interval: float = 2.0,
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nats_url = nats_url
        self.ami = ami
        self.security_group = security_group
        self.instance_type = instance_type
        self.instance_profile = instance_profile
        self.key_name = key_name
        self.subnet = subnet
        self.tag_key = tag_key
        self.tag_value = tag_value or str(uuid.uuid4())
        self.extra_tags = tuple(extra_tags)
        self.spot_grabbers = spot_grabbers
        self.agent_env = dict(agent_env or {})
        self.agent_port = agent_port
        self.poll_interval = poll_interval
        self._clock = clock
        self._client = client if client is not None else _client(region, endpoint_url)
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: InstanceConfig, *, nats_url: str) -> Ec2Provider:
        """The provider the settings describe; ProviderConfigError naming a missing one."""
        if not config.aws_ami:
            raise ProviderConfigError("the ec2 provider needs an AMI: set JIT_AWS_AMI (--aws-ami)")
        if not config.aws_security_group:
            raise ProviderConfigError(
                "the ec2 provider needs a security group: set JIT_AWS_SECURITY_GROUP "
                "(--aws-security-group)"
            )
        return cls(
            nats_url=nats_url,
            ami=config.aws_ami,
            security_group=config.aws_security_group,
            region=config.aws_region,
            instance_type=config.aws_instance_type,
            instance_profile=config.aws_instance_profile,
            key_name=config.aws_key_name,
            subnet=config.aws_subnet,
            tag_key=config.aws_managed_tag_key,
            tag_value=config.aws_managed_tag_value,
            extra_tags=config.aws_extra_tags,
            spot_grabbers=config.aws_spot_grabbers,
            endpoint_url=config.aws_endpoint_url,
            agent_port=config.agent_port,
        )

    # --- calls -----------------------------------------------------------------------------

    async def _call(self, operation: str, **params: Any) -> Any:
        """One EC2 API call in a thread, its errors translated."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        method = getattr(self._client, operation)
        try:
            return await asyncio.to_thread(method, **params)
        except NoCredentialsError as exc:
            raise ProviderUnavailableError(
                "no AWS credentials for the ec2 provider: set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give the controller a role"
            ) from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            message = str(error.get("Message", exc))
            for prefix, env in _SETTING_ERRORS.items():
                if code.startswith(prefix):
                    raise ProviderConfigError(
                        f"EC2 {operation}: {message} ({code}): check {env}"
                    ) from exc
            if "iamInstanceProfile" in message or "instance profile" in message.lower():
                raise ProviderConfigError(
                    f"EC2 {operation}: {message} ({code}): check JIT_AWS_INSTANCE_PROFILE"
                ) from exc
            raise InstanceError(f"EC2 {operation} failed: {message} ({code})") from exc
        except BotoCoreError as exc:
            raise ProviderUnavailableError(f"EC2 {operation} failed: {exc}") from exc

    async def _describe(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        instances: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(1000):  # pages of up to 1000 instances: a bound, never reached
            params: dict[str, Any] = {"Filters": filters, "MaxResults": 1000}
            if token:
                params["NextToken"] = token
            page = await self._call("describe_instances", **params)
            for reservation in page.get("Reservations", []):
                instances.extend(reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                break
        return instances

    def _owned_filters(self, *states: str) -> list[dict[str, Any]]:
        return [
            {"Name": f"tag:{self.tag_key}", "Values": [self.tag_value]},
            {"Name": "instance-state-name", "Values": list(states or LIVE_STATES)},
        ]

    def _info(self, instance: Mapping[str, Any]) -> InstanceInfo:
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        launched = instance.get("LaunchTime")
        ip = instance.get("PrivateIpAddress") or ""
        return InstanceInfo(
            instance_id=tags.get(ID_TAG) or str(instance["InstanceId"]),
            provider=self.name,
            external_id=str(instance["InstanceId"]),
            status=_STATUS.get(instance.get("State", {}).get("Name", ""), "stopped"),
            launched_at=launched.timestamp() if launched is not None else self._clock(),
            address=f"{ip}:{self.agent_port}" if ip else "",
            spot=instance.get("InstanceLifecycle") == "spot",
        )

    async def _find(self, instance_id: str) -> list[dict[str, Any]]:
        """Live instances of ours for ``instance_id`` (our id or an EC2 id)."""
        filters = self._owned_filters()
        by_tag = await self._describe(
            [*filters, {"Name": f"tag:{ID_TAG}", "Values": [instance_id]}]
        )
        if by_tag or not instance_id.startswith("i-"):
            return by_tag
        return await self._describe([*filters, {"Name": "instance-id", "Values": [instance_id]}])

    # --- the provider ----------------------------------------------------------------------

    def tags(self, request: LaunchRequest) -> list[dict[str, str]]:
        """The tags of an instance launched for ``request``."""
        tags = {
            "Name": f"tessera-{request.instance_id}",
            self.tag_key: self.tag_value,
            ID_TAG: request.instance_id,
        }
        if request.kind:
            tags[KIND_TAG] = request.kind
        for key, value in self.extra_tags:
            tags.setdefault(key, value)
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def run_params(self, request: LaunchRequest) -> dict[str, Any]:
        """The ``RunInstances`` parameters for ``request`` (pure: tests read them)."""
        if len(request.instance_id) > 64:
            raise LaunchError(
                f"instance id {request.instance_id!r} is longer than EC2's 64-character "
                "ClientToken: use a shorter id"
            )
        env = {**self.agent_env, **capacity_env(request.capacity)}
        env["NATS_URL"] = self.nats_url
        env["TESSERA_INSTANCE_ID"] = request.instance_id
        env["JIT_INSTANCE_AGENT_PORT"] = str(self.agent_port)
        tags = self.tags(request)
        params: dict[str, Any] = {
            "ImageId": self.ami,
            "InstanceType": self.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": request.instance_id,
            "SecurityGroupIds": [self.security_group],
            "UserData": user_data(env),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        if self.subnet:
            params["SubnetId"] = self.subnet
        if self.key_name:
            params["KeyName"] = self.key_name
        if self.instance_profile:
            key = "Arn" if self.instance_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {key: self.instance_profile}
        if self.spot_grabbers and request.kind == "grabber":
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        return params

    async def launch(self, request: LaunchRequest) -> InstanceInfo:
        """Run the instance, unless one tagged with this id lives (then return it)."""
        params = self.run_params(request)
        async with self._lock:
            existing = await self._find(request.instance_id)
            if existing:
                return self._info(existing[0])
            reply = await self._call("run_instances", **params)
        instances = reply.get("Instances") or []
        if not instances:
            raise LaunchError(f"EC2 RunInstances for {request.instance_id} returned no instance")
        info = self._info(instances[0])
        return InstanceInfo(
            instance_id=request.instance_id,
            provider=info.provider,
            external_id=info.external_id,
            status=info.status,
            launched_at=info.launched_at,
            address=info.address,
            capacity=dict(request.capacity),
            spot=info.spot,
        )

    async def wait_ready(self, instance_id: str, timeout: float) -> InstanceInfo:  # noqa: ASYNC109
        """Wait until EC2 says the instance runs; LaunchError if it ends first."""

        async def check() -> InstanceInfo | None:
            found = await self._describe(
                [
                    {"Name": f"tag:{self.tag_key}", "Values": [self.tag_value]},
                    {"Name": f"tag:{ID_TAG}", "Values": [instance_id]},
                ]
            )
            if not found:
                raise InstanceNotFoundError(f"no EC2 instance of ours is tagged {instance_id}")
            live = [i for i in found if i.get("State", {}).get("Name") in LIVE_STATES]
            if not live:
                reason = found[0].get("StateReason", {}).get("Message", "no reason given")
                raise LaunchError(f"EC2 instance for {instance_id} ended while starting: {reason}")
            info = self._info(live[0])
            return info if info.status == "ready" else None

        return await poll_until(
            check, timeout=timeout, interval=self.poll_interval, what=f"EC2 instance {instance_id}"
        )

    async def list_owned(self) -> list[InstanceInfo]:
        """Live instances with our managed tag."""
        found = await self._describe(self._owned_filters())
        return sorted((self._info(i) for i in found), key=lambda i: i.instance_id)

    async def terminate(self, instance_id: str, reason: str) -> None:
        """Terminate the instance(s) of ``instance_id`` (ours or an EC2 id); gone is fine."""
        found = await self._find(instance_id)
        ids = [str(i["InstanceId"]) for i in found]
        if ids:
            await self._call("terminate_instances", InstanceIds=ids)
            log.info("instance terminated", extra={"instance": instance_id, "reason": reason})

    async def close(self) -> None:
        """Nothing to release (boto3 clients need no closing). Safe twice."""


def _client(region: str | None, endpoint_url: str | None) -> Any:
    import boto3
    from botocore.exceptions import NoRegionError

    try:
        session = boto3.session.Session(region_name=region)
        return session.client("ec2", endpoint_url=endpoint_url)
    except NoRegionError as exc:
        raise ProviderConfigError(
            "no AWS region for the ec2 provider: set JIT_AWS_REGION (--aws-region) or AWS_REGION"
        ) from exc
