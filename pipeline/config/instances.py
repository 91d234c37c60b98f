"""Instance settings: which provider launches instances, how agents run on them, and how long
instances may live. One typed object, :class:`InstanceConfig`, built once from defaults <
environment < flags, declared with :func:`pipeline.config.settings.setting` exactly like
:class:`pipeline.config.settings.Config` (the CLI merges both sets of flags).

Names follow the original JIT system where it had one (``JIT_INSTANCE_PROVIDER_CLASS_PATH``,
``JIT_INSTANCE_AGENT_PORT``, ``JIT_CONTAINER_PORT_MIN``, ``DOCKER_REGISTRY_*``)
and the tools' own otherwise (``NOMAD_ADDR``, ``NOMAD_TOKEN``, ...). Settings the original had
no name for use ``JIT_AWS_*`` (EC2) or ``TESSERA_*``. Capacity per instance and kind is
``TESSERA_CAPACITY_<KIND>``: ``JIT_CAPACITY`` is the gateway's cap on sessions overall.

``--dev`` is the original's shortcut for working on one machine with Docker: it turns on
``--remove-running`` and ``--prune`` and runs the local image ``tessera:dev`` (unless an image
was given); ``--verbose`` and ``--turn`` (settings of :class:`pipeline.config.settings.Config`) come
with it too (see :data:`DEV_ALSO`): containers then get ``JIT_TURN=1``.

Errors: :class:`~pipeline.errors.ConfigError` naming the env var or flag, the value and what
would be accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import settings as config_mod
from pipeline.config.settings import (
    _bool,
    _host,
    _optional_str,
    _port,
    _positive_float,
    setting,
)
from pipeline.errors import ConfigError

SHORT_NAMES = ("local", "docker", "ec2", "nomad")
"""Providers Tessera ships, by the short name ``--instance-provider`` accepts."""

DEV_IMAGE = "tessera:dev"
"""The local image ``--dev`` runs (built with ``docker build -t tessera:dev .``)."""

DEV_ALSO = ("verbose", "turn")
"""Settings of :class:`~pipeline.config.settings.Config` that ``--dev`` also turns on (the CLI's
job)."""

_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*([:.][A-Za-z_][\w]*)$")


def _provider(text: str) -> str:
    value = text.strip()
    if value.lower() in SHORT_NAMES:
        return value.lower()
    if not _DOTTED.match(value) or ("." not in value and ":" not in value):
        raise ValueError(
            f"must be one of {', '.join(SHORT_NAMES)} or a class path like package.module:Class"
        )
    return value


def _capacity(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number of at least 0 (0: never on this instance)")
    return value


def _tags(text: str) -> tuple[tuple[str, str], ...]:
    """``K1=V1,K2=V2`` as pairs; an empty text is no tags."""
    pairs: list[tuple[str, str]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item!r} is not KEY=VALUE: write K1=V1,K2=V2")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


@dataclass(frozen=True)
class InstanceConfig:
    """Every instance setting. Build it with :func:`load` or :func:`from_namespace`."""

    provider: str = setting(
        "local",
        env="JIT_INSTANCE_PROVIDER_CLASS_PATH",
        flag="--instance-provider",
        parse=_provider,
        help="who launches instances: local, docker, ec2, nomad, or package.module:Class",
        group="instances",
    )
    instance_nats_url: str | None = setting(
        None,
        env="JIT_INSTANCE_NATS_URL",
        flag="--instance-nats-url",
        parse=_optional_str,
        help="NATS URL the agents on instances connect to (default: the controller's NATS_URL)",
        group="instances",
    )
    owner_id: str = setting(
        "tessera",
        env="TESSERA_OWNER_ID",
        flag="--owner-id",
        parse=_host,
        help="label/meta value marking the Docker containers and Nomad jobs this controller owns",
        group="instances",
    )
    ready_timeout: float = setting(
        120.0,
        env="JIT_INSTANCE_READY_TIMEOUT",
        flag="--instance-ready-timeout",
        parse=_positive_float,
        help="seconds a new instance may take until its agent is ready; then it is replaced",
        group="instances",
    )
    max_idle_time: float = setting(
        600.0,
        env="JIT_INSTANCE_MAX_IDLE_TIME",
        flag="--instance-max-idle-time",
        parse=_positive_float,
        help="seconds an instance may run no worker before it is terminated",
        group="instances",
    )
    max_up_time: float = setting(
        14400.0,
        env="JIT_INSTANCE_MAX_UP_TIME",
        flag="--instance-max-up-time",
        parse=_positive_float,
        help="seconds an instance may live at most before it is terminated",
        group="instances",
    )
    instance_poll_interval: float = setting(
        5.0,
        env="JIT_INSTANCE_POLL_INTERVAL",
        flag="--instance-poll-interval",
        parse=_positive_float,
        help="seconds between the controller's looks at instances and their agents",
        group="instances",
    )
    heartbeat_timeout: float = setting(
        15.0,
        env="TESSERA_INSTANCE_HEARTBEAT_TIMEOUT",
        flag="--instance-heartbeat-timeout",
        parse=_positive_float,
        help="seconds without an agent heartbeat before its instance is replaced",
        group="instances",
    )
    # --- the agent on each instance --------------------------------------------------------
    instance_id: str | None = setting(
        None,
        env="TESSERA_INSTANCE_ID",
        flag="--instance-id",
        parse=_optional_str,
        help="this agent's instance id (set by the provider; default: the host name)",
        group="agent",
    )
    agent_host: str = setting(
        "0.0.0.0",
        env="JIT_INSTANCE_AGENT_HOST",
        flag="--agent-host",
        parse=_host,
        help="address the agent's HTTP status server binds",
        group="agent",
    )
    agent_port: int = setting(
        8081,
        env="JIT_INSTANCE_AGENT_PORT",
        flag="--agent-port",
        parse=_port,
        help="port of the agent's HTTP status server (0: a free port)",
        group="agent",
    )
    capacity_jit: int = setting(
        4,
        env="TESSERA_CAPACITY_JIT",
        flag="--capacity-jit",
        parse=_capacity,
        help="JIT sessions one instance runs at once",
        group="capacity",
    )
    capacity_grabber: int = setting(
        16,
        env="TESSERA_CAPACITY_GRABBER",
        flag="--capacity-grabber",
        parse=_capacity,
        help="grabbers one instance runs at once",
        group="capacity",
    )
    capacity_stitcher: int = setting(
        2,
        env="TESSERA_CAPACITY_STITCHER",
        flag="--capacity-stitcher",
        parse=_capacity,
        help="stitchers one instance runs at once (each encodes a mosaic: heavy)",
        group="capacity",
    )
    # --- Docker ----------------------------------------------------------------------------
    docker_host: str | None = setting(
        None,
        env="DOCKER_HOST",
        flag="--docker-host",
        parse=_optional_str,
        help="Docker engine to use (default unix:///var/run/docker.sock)",
        group="docker",
    )
    image: str | None = setting(
        None,
        env="JIT_CONTAINER_IMAGE",
        flag="--image",
        parse=_optional_str,
        help="image of the instance containers (default tessera:latest; tessera:dev with --dev)",
        group="docker",
    )
    network: str = setting(
        "host",
        env="JIT_CONTAINER_NETWORK",
        flag="--container-network",
        parse=_host,
        help="Docker network of instance containers (host: WebRTC ports reachable directly)",
        group="docker",
    )
    dev: bool = setting(
        False,
        env="JIT_DEV",
        flag="--dev",
        parse=_bool,
        help="working on one machine: verbose, remove-running, prune, turn and tessera:dev",
        group="docker",
    )
    prune: bool = setting(
        False,
        env="JIT_CONTAINER_PRUNE",
        flag="--prune",
        parse=_bool,
        help="at start, remove stopped containers that carry the jit label",
        group="docker",
    )
    remove_running: bool = setting(
        False,
        env="JIT_CONTAINER_REMOVE_RUNNING",
        flag="--remove-running",
        parse=_bool,
        help="at start, remove running containers that carry the jit label",
        group="docker",
    )
    keep_containers: bool = setting(
        False,
        env="JIT_CONTAINER_KEEP",
        flag="--keep-containers",
        parse=_bool,
        help="keep stopped instance containers (for their logs) instead of removing them",
        group="docker",
    )
    container_port_min: int = setting(
        49152,
        env="JIT_CONTAINER_PORT_MIN",
        flag="--container-port-min",
        parse=_port,
        help="lowest UDP port of the WebRTC range shared by the containers",
        group="docker",
    )
    container_port_max: int = setting(
        65535,
        env="JIT_CONTAINER_PORT_MAX",
        flag="--container-port-max",
        parse=_port,
        help="highest UDP port of the WebRTC range shared by the containers",
        group="docker",
    )
    agent_port_min: int = setting(
        8081,
        env="JIT_CONTAINER_AGENT_PORT_MIN",
        flag="--agent-port-min",
        parse=_port,
        help="lowest agent port of the containers (one port per container)",
        group="docker",
    )
    agent_port_max: int = setting(
        8090,
        env="JIT_CONTAINER_AGENT_PORT_MAX",
        flag="--agent-port-max",
        parse=_port,
        help="highest agent port of the containers (so at most max-min+1 containers)",
        group="docker",
    )
    registry_username: str | None = setting(
        None,
        env="DOCKER_REGISTRY_USERNAME",
        flag=None,
        parse=_optional_str,
        help="user name for pulling the image from its registry",
        group="docker",
    )
    registry_password: str | None = setting(
        None,
        env="DOCKER_REGISTRY_PASSWORD",
        flag=None,
        parse=_optional_str,
        help="password or token for pulling the image (environment only: not in ps output)",
        group="docker",
    )
    # --- AWS EC2 ---------------------------------------------------------------------------
    aws_ami: str | None = setting(
        None,
        env="JIT_AWS_AMI",
        flag="--aws-ami",
        parse=_optional_str,
        help="AMI of the instances, with tessera installed (required for ec2)",
        group="aws",
    )
    aws_region: str | None = setting(
        None,
        env="JIT_AWS_REGION",
        flag="--aws-region",
        parse=_optional_str,
        help="AWS region of the instances",
        group="aws",
        shown="the orchestrator's (AWS_REGION / AWS config)",
    )
    aws_instance_type: str = setting(
        "c5n.xlarge",
        env="JIT_AWS_INSTANCE_TYPE",
        flag="--aws-instance-type",
        parse=_host,
        help="EC2 instance type",
        group="aws",
    )
    aws_instance_profile: str | None = setting(
        None,
        env="JIT_AWS_INSTANCE_PROFILE",
        flag="--aws-instance-profile",
        parse=_optional_str,
        help="IAM instance profile (name or ARN) given to the instances",
        group="aws",
    )
    aws_key_name: str | None = setting(
        "JIT-Key-Pair",
        env="JIT_AWS_KEY_NAME",
        flag="--aws-key-name",
        parse=_optional_str,
        help="EC2 key pair for SSH to the instances (empty: none)",
        group="aws",
    )
    aws_security_group: str | None = setting(
        None,
        env="JIT_AWS_SECURITY_GROUP",
        flag="--aws-security-group",
        parse=_optional_str,
        help="security group id of the instances (required for ec2)",
        group="aws",
    )
    aws_subnet: str | None = setting(
        None,
        env="JIT_AWS_SUBNET",
        flag="--aws-subnet",
        parse=_optional_str,
        help="subnet id of the instances (default: the default VPC's choice)",
        group="aws",
    )
    aws_managed_tag_key: str = setting(
        "Managing-JIT-Orchestrator-ID",
        env="JIT_AWS_MANAGED_TAG_KEY",
        flag="--aws-managed-tag-key",
        parse=_host,
        help="tag key marking the instances this controller owns",
        group="aws",
    )
    aws_managed_tag_value: str | None = setting(
        None,
        env="JIT_AWS_MANAGED_TAG_VALUE",
        flag="--aws-managed-tag-value",
        parse=_optional_str,
        help="tag value marking this controller's instances; set it to keep them across restarts",
        group="aws",
        shown="a UUID made at start",
    )
    aws_extra_tags: tuple[tuple[str, str], ...] = setting(
        (),
        env="JIT_AWS_EXTRA_TAGS",
        flag="--aws-extra-tags",
        parse=_tags,
        help="more tags for the instances and their volumes, as K1=V1,K2=V2",
        group="aws",
        shown="none",
    )
    aws_spot_grabbers: bool = setting(
        False,
        env="JIT_AWS_SPOT_GRABBERS",
        flag="--aws-spot-grabbers",
        parse=_bool,
        help="launch the instances meant for grabbers as spot instances (cheaper, may vanish)",
        group="aws",
    )
    aws_endpoint_url: str | None = setting(
        None,
        env="JIT_AWS_ENDPOINT_URL",
        flag="--aws-endpoint-url",
        parse=_optional_str,
        help="EC2 API endpoint (for tests and AWS-compatible clouds; default: AWS's)",
        group="aws",
    )
    # --- Nomad -----------------------------------------------------------------------------
    nomad_addr: str = setting(
        "http://127.0.0.1:4646",
        env="NOMAD_ADDR",
        flag="--nomad-addr",
        parse=_host,
        help="address of the Nomad HTTP API",
        group="nomad",
    )
    nomad_token: str | None = setting(
        None,
        env="NOMAD_TOKEN",
        flag=None,
        parse=_optional_str,
        help="Nomad ACL token (environment only: not in ps output)",
        group="nomad",
    )
    nomad_namespace: str | None = setting(
        None,
        env="NOMAD_NAMESPACE",
        flag="--nomad-namespace",
        parse=_optional_str,
        help="Nomad namespace of Tessera's jobs",
        group="nomad",
        shown="Nomad's default",
    )
    nomad_region: str | None = setting(
        None,
        env="NOMAD_REGION",
        flag="--nomad-region",
        parse=_optional_str,
        help="Nomad region of Tessera's jobs",
        group="nomad",
        shown="the agent's region",
    )
    nomad_instance_job: str = setting(
        "tessera-instance",
        env="TESSERA_NOMAD_INSTANCE_JOB",
        flag="--nomad-instance-job",
        parse=_host,
        help="parameterized Nomad job dispatched once per instance (deploy/nomad)",
        group="nomad",
    )

    def __post_init__(self) -> None:
        if self.container_port_min > self.container_port_max:
            raise ConfigError(
                f"JIT_CONTAINER_PORT_MIN={self.container_port_min} is above "
                f"JIT_CONTAINER_PORT_MAX={self.container_port_max}: swap them"
            )
        if self.agent_port_min > self.agent_port_max:
            raise ConfigError(
                f"JIT_CONTAINER_AGENT_PORT_MIN={self.agent_port_min} is above "
                f"JIT_CONTAINER_AGENT_PORT_MAX={self.agent_port_max}: swap them"
            )

    @property
    def capacity(self) -> dict[str, int]:
        """Workers of each kind one instance runs at once (kinds with 0 left out)."""
        table = {
            "jit": self.capacity_jit,
            "grabber": self.capacity_grabber,
            "stitcher": self.capacity_stitcher,
        }
        return {kind: n for kind, n in table.items() if n > 0}

    @property
    def container_image(self) -> str:
        """The image instance containers run."""
        return self.image or (DEV_IMAGE if self.dev else "tessera:latest")


def settings() -> tuple[dataclasses.Field[Any], ...]:
    """The declared instance settings, in declaration order."""
    return config_mod.settings(InstanceConfig)


def load(
    env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
) -> InstanceConfig:
    """Build the config: defaults, then ``env`` (default ``os.environ``), then ``flags``.

    ``flags`` maps field names to the raw text given on the command line. ``--dev`` switches
    on ``prune``, ``remove_running`` and ``turn`` (the image follows from ``dev``).
    """
    values = config_mod.parse_values(InstanceConfig, env, flags)
    if values.get("dev"):
        for name in ("prune", "remove_running"):
            values[name] = True
    return InstanceConfig(**values)


def add_arguments(parser: argparse.ArgumentParser, groups: Iterable[str] | None = None) -> None:
    """Add a flag for every instance setting (of ``groups``, default all) to ``parser``."""
    config_mod.add_arguments(parser, groups, cls=InstanceConfig)


def from_namespace(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> InstanceConfig:
    """Build the config from parsed flags (only those given) over the environment."""
    return load(env=env, flags=config_mod.given_flags(ns, InstanceConfig))


def to_env(config: InstanceConfig, groups: Iterable[str] | None = None) -> dict[str, str]:
    """The settings (of ``groups``) as environment variables, for processes we start."""
    return config_mod.to_env(config, groups)


def capacity_env(capacity: Mapping[str, int]) -> dict[str, str]:
    """The environment that gives an agent ``capacity`` (kinds not named get 0)."""
    names = {
        "jit": "TESSERA_CAPACITY_JIT",
        "grabber": "TESSERA_CAPACITY_GRABBER",
        "stitcher": "TESSERA_CAPACITY_STITCHER",
    }
    unknown = sorted(set(capacity) - set(names))
    if unknown:
        raise ConfigError(
            f"no capacity setting for worker kind {unknown[0]!r}: kinds are {', '.join(names)}"
        )
    return {env: str(capacity.get(kind, 0)) for kind, env in names.items()}


def describe() -> list[dict[str, str]]:
    """One row per instance setting (flag, env var, default, help), for docs and `config`."""
    return config_mod.describe(InstanceConfig)


def markdown_table() -> str:
    """The instance settings as a markdown table (docs/deploy.md embeds it)."""
    return config_mod.markdown_table(InstanceConfig)
