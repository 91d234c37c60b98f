"""Instance settings: which provider launches instances, how agents run on them, and how long
instances may live. One typed object, :class:`InstanceConfig`, built once from defaults <
environment < flags, declared with :func:`pipeline.config.declare.setting` exactly like
:class:`pipeline.config.settings.Config` (the CLI merges both sets of flags).

Names follow the original JIT system where it had one (``JIT_INSTANCE_PROVIDER_CLASS_PATH``,
``JIT_INSTANCE_AGENT_PORT``, ``JIT_CONTAINER_PORT_MIN``, ``DOCKER_REGISTRY_*``)
and the tools' own otherwise (``NOMAD_ADDR``, ``NOMAD_TOKEN``, ...); new settings use
``JIT_AWS_*`` (EC2) or ``TESSERA_*``. Where the original named a setting differently
(``JIT_AWS_AMI_ID``, ``JIT_INSTANCE_AGENT_STATUS_POLL_*``, ``JIT_IMAGE``, ``-p``, ...), its
names are aliases of ours, so its configuration works as it is (docs/coming-from-jit.md); so
is its provider class path (:func:`original_provider`). Capacity per instance and kind is
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.config import declare, loading, parsers
from pipeline.config import flags as cli_flags
from pipeline.config.declare import setting
from pipeline.errors import ConfigError

SHORT_NAMES = ("local", "docker", "ec2", "nomad", "agents")
"""Providers Tessera ships, by the short name ``--instance-provider`` accepts."""

DEV_IMAGE = "tessera:dev"
"""The local image ``--dev`` runs (built with ``docker build -t tessera:dev .``)."""

DEV_ALSO = ("verbose", "turn")
"""Settings of :class:`~pipeline.config.settings.Config` that ``--dev`` also turns on (the CLI's
job)."""

ORIGINAL_PROVIDERS = {
    "single": "docker",
    "singleinstance": "docker",
    "docker": "docker",
    "aws": "ec2",
    "awsec2": "ec2",
    "ec2": "ec2",
}
"""The original backend's provider classes, by the part of the class name before
``InstanceProvider`` (in any case, ``_`` ignored), and the Tessera provider each one becomes:
its single-instance provider ran Docker containers on the same host, its AWS one EC2 VMs."""

_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*([:.][A-Za-z_][\w]*)$")
_SUFFIX = "instanceprovider"


def original_provider(path: str) -> str | None:
    """The Tessera provider the original backend's class path ``path`` stands for, or None.

    Only the original's form, ``package.module.Class``, is read this way, and only outside
    Tessera's own ``pipeline`` package: a class of your own with a name like the original's is
    still yours when written ``package.module:Class``.
    """
    module, dot, name = path.rpartition(".")
    if ":" in path or not dot or module.split(".")[0] == "pipeline":
        return None
    stem = name.lower().replace("_", "")
    if not stem.endswith(_SUFFIX):
        return None
    return ORIGINAL_PROVIDERS.get(stem.removesuffix(_SUFFIX))


def _provider(text: str) -> str:
    value = text.strip()
    if value.lower() in SHORT_NAMES:
        return value.lower()
    if not _DOTTED.match(value) or ("." not in value and ":" not in value):
        raise ValueError(
            f"must be one of {', '.join(SHORT_NAMES)} or a class path like package.module:Class"
        )
    return original_provider(value) or value


def _capacity(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number of at least 0 (0: never on this instance)")
    return value


def _ceiling(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise ValueError("must be a share above 0 and at most 1 (0.85: fill 85 %)")
    return value


T = TypeVar("T")


def _or_detected(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``parse``, or None for a blank value (the agent then advertises what it detects)."""

    def parse_or_none(text: str) -> T | None:
        return parse(text) if text.strip() else None

    return parse_or_none


@dataclass(frozen=True)
class InstanceConfig:
    """Every instance setting. Build it with :func:`load` or :func:`from_namespace`."""

    provider: str = setting(
        "local",
        env="JIT_INSTANCE_PROVIDER_CLASS_PATH",
        flag="--instance-provider",
        also_flags=("--instance-provider-path",),
        parse=_provider,
        help="who launches instances: local, docker, ec2, nomad, agents (none: agents that "
        "run by themselves register), or package.module:Class",
        group="instances",
    )
    instance_nats_url: str | None = setting(
        None,
        env="JIT_INSTANCE_NATS_URL",
        flag="--instance-nats-url",
        parse=parsers.optional_str,
        help="NATS URL the agents on instances connect to (default: the controller's NATS_URL)",
        group="instances",
    )
    owner_id: str = setting(
        "tessera",
        env="TESSERA_OWNER_ID",
        flag="--owner-id",
        parse=parsers.host,
        help="label/meta value marking the Docker containers and Nomad jobs this controller owns",
        group="instances",
    )
    ready_timeout: float = setting(
        120.0,
        env="JIT_INSTANCE_READY_TIMEOUT",
        flag="--instance-ready-timeout",
        parse=parsers.positive_float,
        help="seconds a new instance may take until its agent is ready; then it is replaced",
        group="instances",
    )
    max_idle_time: float = setting(
        600.0,
        env="JIT_INSTANCE_MAX_IDLE_TIME",
        also_env=("JIT_INSTANCE_AGENT_STATUS_POLL_MAX_IDLE_TIME",),
        flag="--instance-max-idle-time",
        also_flags=("--instance-agent-status-poll-max-idle-time",),
        parse=parsers.positive_float,
        help="seconds an instance may run no worker before it is terminated",
        group="instances",
    )
    max_up_time: float = setting(
        14400.0,
        env="JIT_INSTANCE_MAX_UP_TIME",
        also_env=("JIT_INSTANCE_AGENT_STATUS_POLL_MAX_UP_TIME",),
        flag="--instance-max-up-time",
        also_flags=("--instance-agent-status-poll-max-up-time",),
        parse=parsers.positive_float,
        help="seconds an instance may live at most before it is terminated",
        group="instances",
    )
    instance_poll_interval: float = setting(
        5.0,
        env="JIT_INSTANCE_POLL_INTERVAL",
        also_env=("JIT_INSTANCE_AGENT_STATUS_POLL_INTERVAL",),
        flag="--instance-poll-interval",
        also_flags=("--instance-agent-status-poll-interval",),
        parse=parsers.positive_float,
        help="seconds between the controller's looks at instances and their agents",
        group="instances",
    )
    heartbeat_timeout: float = setting(
        15.0,
        env="TESSERA_INSTANCE_HEARTBEAT_TIMEOUT",
        flag="--instance-heartbeat-timeout",
        parse=parsers.positive_float,
        help="seconds without an agent heartbeat before its instance is replaced",
        group="instances",
    )
    placement_ceiling: float = setting(
        0.85,
        env="TESSERA_PLACEMENT_CEILING",
        flag="--placement-ceiling",
        parse=_ceiling,
        help="share of an agent's advertised cores and memory the controller fills with "
        "workers (by their measured cost; the rest is headroom)",
        group="instances",
    )
    # --- the agent on each instance --------------------------------------------------------
    instance_id: str | None = setting(
        None,
        env="TESSERA_INSTANCE_ID",
        flag="--instance-id",
        parse=parsers.optional_str,
        help="this agent's instance id (set by the provider; default: the host name)",
        group="agent",
    )
    agent_host: str = setting(
        "0.0.0.0",
        env="JIT_INSTANCE_AGENT_HOST",
        flag="--agent-host",
        parse=parsers.host,
        help="address the agent's HTTP status server binds",
        group="agent",
    )
    agent_port: int = setting(
        8081,
        env="JIT_INSTANCE_AGENT_PORT",
        flag="--agent-port",
        parse=parsers.port,
        help="port of the agent's HTTP status server (0: a free port)",
        group="agent",
    )
    agent_cores: float | None = setting(
        None,
        env="TESSERA_AGENT_CORES",
        flag="--agent-cores",
        parse=_or_detected(parsers.positive_float),
        help="CPU cores this agent's workers may use, as it advertises them for placement",
        shown="detected (CPU affinity, cgroup cpu.max)",
        group="agent",
    )
    agent_memory_mb: int | None = setting(
        None,
        env="TESSERA_AGENT_MEMORY_MB",
        flag="--agent-memory-mb",
        parse=_or_detected(parsers.positive_int),
        help="memory (MiB) this agent's workers may use, as it advertises it for placement",
        shown="detected (/proc/meminfo, cgroup memory.max)",
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
        parse=parsers.optional_str,
        help="Docker engine to use (default unix:///var/run/docker.sock)",
        group="docker",
    )
    image: str | None = setting(
        None,
        env="JIT_CONTAINER_IMAGE",
        also_env=("JIT_IMAGE", "JIT_INSTANCE_AGENT_IMAGE"),
        flag="--image",
        also_flags=("-i",),
        parse=parsers.optional_str,
        help="image of the instance containers, which runs the agent and its workers alike "
        "(default tessera:latest; tessera:dev with --dev)",
        group="docker",
    )
    network: str = setting(
        "host",
        env="JIT_CONTAINER_NETWORK",
        flag="--container-network",
        parse=parsers.host,
        help="Docker network of instance containers (host: WebRTC ports reachable directly)",
        group="docker",
    )
    dev: bool = setting(
        False,
        env="JIT_DEV",
        flag="--dev",
        parse=parsers.boolean,
        help="working on one machine: verbose, remove-running, prune, turn and tessera:dev",
        group="docker",
    )
    prune: bool = setting(
        False,
        env="JIT_CONTAINER_PRUNE",
        flag="--prune",
        also_flags=("-p",),
        parse=parsers.boolean,
        help="at start, remove stopped containers that carry the jit label",
        group="docker",
    )
    remove_running: bool = setting(
        False,
        env="JIT_CONTAINER_REMOVE_RUNNING",
        flag="--remove-running",
        parse=parsers.boolean,
        help="at start, remove running containers that carry the jit label",
        group="docker",
    )
    keep_containers: bool = setting(
        False,
        env="JIT_CONTAINER_KEEP",
        flag="--keep-containers",
        parse=parsers.boolean,
        help="keep stopped instance containers (for their logs) instead of removing them",
        group="docker",
    )
    container_port_min: int = setting(
        49152,
        env="JIT_CONTAINER_PORT_MIN",
        flag="--container-port-min",
        parse=parsers.port,
        help="lowest UDP port of the WebRTC range shared by the containers",
        group="docker",
    )
    container_port_max: int = setting(
        65535,
        env="JIT_CONTAINER_PORT_MAX",
        flag="--container-port-max",
        parse=parsers.port,
        help="highest UDP port of the WebRTC range shared by the containers",
        group="docker",
    )
    agent_port_min: int = setting(
        8081,
        env="JIT_CONTAINER_AGENT_PORT_MIN",
        also_env=("JIT_INSTANCE_AGENT_PORT_MIN",),
        flag="--agent-port-min",
        parse=parsers.port,
        help="lowest agent port of the containers (one port per container)",
        group="docker",
    )
    agent_port_max: int = setting(
        8090,
        env="JIT_CONTAINER_AGENT_PORT_MAX",
        also_env=("JIT_INSTANCE_AGENT_PORT_MAX",),
        flag="--agent-port-max",
        parse=parsers.port,
        help="highest agent port of the containers (so at most max-min+1 containers)",
        group="docker",
    )
    registry_username: str | None = setting(
        None,
        env="DOCKER_REGISTRY_USERNAME",
        flag=None,
        parse=parsers.optional_str,
        help="user name for pulling the image from its registry",
        group="docker",
    )
    registry_password: str | None = setting(
        None,
        env="DOCKER_REGISTRY_PASSWORD",
        flag=None,
        parse=parsers.optional_str,
        help="password or token for pulling the image (environment only: not in ps output)",
        group="docker",
    )
    # --- AWS EC2 ---------------------------------------------------------------------------
    aws_ami: str | None = setting(
        None,
        env="JIT_AWS_AMI",
        also_env=("JIT_AWS_AMI_ID",),
        flag="--aws-ami",
        parse=parsers.optional_str,
        help="AMI of the instances, with tessera installed (required for ec2)",
        group="aws",
    )
    aws_region: str | None = setting(
        None,
        env="JIT_AWS_REGION",
        fallback_env=("AWS_REGION",),
        flag="--aws-region",
        parse=parsers.optional_str,
        help="AWS region of the instances",
        group="aws",
        shown="the controller's (AWS_REGION, else the AWS config)",
    )
    aws_instance_type: str = setting(
        "c5n.xlarge",
        env="JIT_AWS_INSTANCE_TYPE",
        flag="--aws-instance-type",
        parse=parsers.host,
        help="EC2 instance type",
        group="aws",
    )
    aws_instance_profile: str | None = setting(
        None,
        env="JIT_AWS_INSTANCE_PROFILE",
        also_env=("JIT_AWS_AGENT_INSTANCE_PROFILE_NAME",),
        flag="--aws-instance-profile",
        parse=parsers.optional_str,
        help="IAM instance profile (name or ARN) given to the instances",
        group="aws",
    )
    aws_key_name: str | None = setting(
        "JIT-Key-Pair",
        env="JIT_AWS_KEY_NAME",
        also_env=("JIT_AWS_KEY_PAIR_NAME",),
        flag="--aws-key-name",
        parse=parsers.optional_str,
        help="EC2 key pair for SSH to the instances (empty: none)",
        group="aws",
    )
    aws_security_group: str | None = setting(
        None,
        env="JIT_AWS_SECURITY_GROUP",
        also_env=("JIT_AWS_SECURITY_GROUP_ID",),
        flag="--aws-security-group",
        parse=parsers.optional_str,
        help="security group id of the instances (required for ec2)",
        group="aws",
    )
    aws_subnet: str | None = setting(
        None,
        env="JIT_AWS_SUBNET",
        also_env=("JIT_AWS_SUBNET_ID",),
        flag="--aws-subnet",
        parse=parsers.optional_str,
        help="subnet id of the instances (default: the default VPC's choice)",
        group="aws",
    )
    aws_managed_tag_key: str = setting(
        "Managing-JIT-Orchestrator-ID",
        env="JIT_AWS_MANAGED_TAG_KEY",
        flag="--aws-managed-tag-key",
        parse=parsers.host,
        help="tag key marking the instances this controller owns",
        group="aws",
    )
    aws_managed_tag_value: str | None = setting(
        None,
        env="JIT_AWS_MANAGED_TAG_VALUE",
        flag="--aws-managed-tag-value",
        parse=parsers.optional_str,
        help="tag value marking this controller's instances; set it to keep them across restarts",
        group="aws",
        shown="a UUID made at start",
    )
    aws_extra_tags: tuple[tuple[str, str], ...] = setting(
        (),
        env="JIT_AWS_EXTRA_TAGS",
        also_env=("JIT_AWS_RESOURCES_TAGS",),
        flag="--aws-extra-tags",
        parse=parsers.key_values,
        help="more tags for the instances and their volumes, as K1=V1,K2=V2",
        group="aws",
        shown="none",
    )
    aws_spot_grabbers: bool = setting(
        False,
        env="JIT_AWS_SPOT_GRABBERS",
        flag="--aws-spot-grabbers",
        parse=parsers.boolean,
        help="launch the instances meant for grabbers as spot instances (cheaper, may vanish)",
        group="aws",
    )
    aws_endpoint_url: str | None = setting(
        None,
        env="JIT_AWS_ENDPOINT_URL",
        flag="--aws-endpoint-url",
        parse=parsers.optional_str,
        help="EC2 API endpoint (for tests and AWS-compatible clouds; default: AWS's)",
        group="aws",
    )
    # --- Nomad -----------------------------------------------------------------------------
    nomad_addr: str = setting(
        "http://127.0.0.1:4646",
        env="NOMAD_ADDR",
        flag="--nomad-addr",
        parse=parsers.host,
        help="address of the Nomad HTTP API",
        group="nomad",
    )
    nomad_token: str | None = setting(
        None,
        env="NOMAD_TOKEN",
        flag=None,
        parse=parsers.optional_str,
        help="Nomad ACL token (environment only: not in ps output)",
        group="nomad",
    )
    nomad_namespace: str | None = setting(
        None,
        env="NOMAD_NAMESPACE",
        flag="--nomad-namespace",
        parse=parsers.optional_str,
        help="Nomad namespace of Tessera's jobs",
        group="nomad",
        shown="Nomad's default",
    )
    nomad_region: str | None = setting(
        None,
        env="NOMAD_REGION",
        flag="--nomad-region",
        parse=parsers.optional_str,
        help="Nomad region of Tessera's jobs",
        group="nomad",
        shown="the agent's region",
    )
    nomad_instance_job: str = setting(
        "tessera-instance",
        env="TESSERA_NOMAD_INSTANCE_JOB",
        flag="--nomad-instance-job",
        parse=parsers.host,
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
                f"JIT_CONTAINER_AGENT_PORT_MAX={self.agent_port_max} (or their aliases "
                "JIT_INSTANCE_AGENT_PORT_MIN/_MAX): swap them"
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
    return declare.settings(InstanceConfig)


def load(
    env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
) -> InstanceConfig:
    """Build the config: defaults, then ``env`` (default ``os.environ``), then ``flags``.

    ``flags`` maps field names to the raw text given on the command line. ``--dev`` switches
    on ``prune``, ``remove_running`` and ``turn`` (the image follows from ``dev``).
    """
    values = loading.parse_values(InstanceConfig, env, flags)
    if values.get("dev"):
        for name in ("prune", "remove_running"):
            values[name] = True
    return InstanceConfig(**values)


def add_arguments(parser: argparse.ArgumentParser, groups: Iterable[str] | None = None) -> None:
    """Add a flag for every instance setting (of ``groups``, default all) to ``parser``."""
    cli_flags.add_arguments(parser, InstanceConfig, groups)


def from_namespace(ns: argparse.Namespace, env: Mapping[str, str] | None = None) -> InstanceConfig:
    """Build the config from parsed flags (only those given) over the environment."""
    return load(env=env, flags=cli_flags.given_flags(ns, InstanceConfig))


def to_env(config: InstanceConfig, groups: Iterable[str] | None = None) -> dict[str, str]:
    """The settings (of ``groups``) as environment variables, for processes we start."""
    return loading.to_env(config, groups)


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
    return declare.describe(InstanceConfig)


def markdown_table() -> str:
    """The instance settings as a markdown table (docs/deploy.md embeds it)."""
    return declare.markdown_table(InstanceConfig)
