"""The instance provider interface, its values, its errors, and choosing a provider by name.

An *instance* is a place where workers run, watched by one ``tessera agent``: a local process
group, a Docker container, an EC2 VM or a Nomad job. Every provider does four things, all
async, all safe to retry:

- ``launch(request)``: start one instance. Idempotent by ``request.instance_id`` (the launch
  token): a retry after a crash returns the instance the first call started, never a second.
- ``wait_ready(instance_id, timeout)``: return once the provider says the instance runs (for
  the local provider: once its agent answers); :class:`NotReadyError` after ``timeout``.
- ``list_owned()``: the instances this controller owns (by tag, label or meta), whatever its
  own state says: that is how orphans are found.
- ``terminate(instance_id, reason)``: end it (a no-op if it is already gone).

Deciding *what* to launch or terminate is not the provider's job: see
:mod:`pipeline.instances.reaping` (pure). The agent's own readiness is its first heartbeat on
``hb.instance.<id>``, which the controller folds with :func:`reaping.observe`.

Errors (all :class:`InstanceError`, a :class:`~pipeline.errors.TesseraError`):

- :class:`ProviderConfigError` (also a :class:`~pipeline.errors.ConfigError`): a provider
  setting is missing or wrong; names the env var and the fix.
- :class:`ProviderUnavailableError`: the provider's API (Docker engine, EC2, Nomad) cannot be
  reached or refused us; names the address or operation.
- :class:`LaunchError`: an instance could not be started; names it and the cause.
- :class:`NotReadyError`: not ready within the ready timeout; names the setting to raise.
- :class:`InstanceNotFoundError`: no instance of ours has that id.
- :class:`CapacityError`: no room (an agent at its limit for a kind, no free container port).
- :class:`WorkerPending`: not a failure but "not yet": the worker waits for an instance that
  is starting (or was just launched for it); the controller tries again on its next pass,
  without counting a failure.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pipeline.errors import ConfigError, InstanceError
from pipeline.nats.subjects import token as subject_token

if TYPE_CHECKING:
    from pipeline.config.instances import InstanceConfig


class ProviderConfigError(InstanceError, ConfigError):
    """A provider setting is missing or has a value the provider cannot use."""


class ProviderUnavailableError(InstanceError):
    """The provider's API cannot be reached, or refused a request."""


class LaunchError(InstanceError):
    """An instance could not be started."""


class NotReadyError(InstanceError):
    """An instance did not become ready in time."""


class InstanceNotFoundError(InstanceError):
    """No instance owned by this controller has that id."""


class CapacityError(InstanceError):
    """No room for what was asked (an agent at its limit, no free port for a container)."""


InstanceStatus = Literal["pending", "ready", "stopping", "stopped"]
"""``pending``: starting; ``ready``: runs; ``stopping``; ``stopped``: ended, not yet removed."""


@dataclass(frozen=True)
class LaunchRequest:
    """What to launch.

    ``instance_id`` names the instance everywhere (agent subject ``ctl.agent.<id>``, tags,
    labels, meta) and is the launch token: launching the same id twice gives one instance.
    """

    instance_id: str
    capacity: Mapping[str, int] = field(default_factory=dict)
    """Workers of each kind the instance's agent accepts."""
    kind: str | None = None
    """The worker kind this instance is launched for, if one (EC2 may use spot for grabbers)."""

    def __post_init__(self) -> None:
        subject_token(self.instance_id)  # ValueError naming the id if it cannot be a subject token

    @property
    def token(self) -> str:
        """The idempotency token of this launch (the instance id)."""
        return self.instance_id


@dataclass(frozen=True)
class InstanceInfo:
    """An instance as its provider sees it."""

    instance_id: str
    provider: str
    external_id: str
    """The provider's own id: a pid, container id, EC2 instance id or Nomad job id."""
    status: InstanceStatus
    launched_at: float
    """Unix seconds."""
    address: str = ""
    """Where the agent's HTTP status is served (``host:port``), when known."""
    capacity: Mapping[str, int] = field(default_factory=dict)
    spot: bool = False


@runtime_checkable
class InstanceProvider(Protocol):
    """What the controller needs of whoever launches instances."""

    name: str

    async def launch(self, request: LaunchRequest) -> InstanceInfo:
        """Start the instance (or return the one this token already started)."""
        ...

    # The timeout is a parameter, not the caller's asyncio.timeout(): NotReadyError names the
    # instance, the timeout and the setting to raise, which a bare TimeoutError could not.
    async def wait_ready(self, instance_id: str, timeout: float) -> InstanceInfo:  # noqa: ASYNC109
        """Wait until the instance runs; :class:`NotReadyError` after ``timeout`` s."""
        ...

    async def list_owned(self) -> list[InstanceInfo]:
        """Every live instance this controller owns, by the provider's tags/labels/meta."""
        ...

    async def terminate(self, instance_id: str, reason: str) -> None:
        """End the instance; nothing happens if it is already gone."""
        ...

    async def close(self) -> None:
        """Release clients (and, for the local provider, stop its agents). Safe twice."""
        ...


SHORT_NAMES: dict[str, str] = {
    "local": "pipeline.instances.local:LocalInstanceProvider",
    "docker": "pipeline.instances.docker:DockerProvider",
    "ec2": "pipeline.instances.ec2:Ec2Provider",
    "nomad": "pipeline.instances.nomad:NomadProvider",
    "agents": "pipeline.instances.external:RegisteredAgents",
}
"""``--instance-provider`` short names and the classes they stand for."""


def new_instance_id(prefix: str = "inst") -> str:
    """A fresh instance id (also the launch token): ``<prefix>-<12 hex digits>``."""
    return subject_token(f"{prefix}-{uuid.uuid4().hex[:12]}")


def _bad(value: str, why: str) -> ProviderConfigError:
    choices = ", ".join(SHORT_NAMES)
    return ProviderConfigError(
        f"JIT_INSTANCE_PROVIDER_CLASS_PATH={value!r}: {why}; "
        f"use one of {choices} or package.module:Class"
    )


def resolve_provider(value: str) -> type:
    """The provider class ``value`` names: a short name, ``pkg.mod:Class`` or ``pkg.mod.Class``."""
    path = SHORT_NAMES.get(value.strip().lower(), value.strip())
    if ":" in path:
        module_name, _, class_name = path.partition(":")
    elif "." in path:
        module_name, _, class_name = path.rpartition(".")
    else:
        raise _bad(value, "not a provider name")
    if not module_name or not class_name:
        raise _bad(value, "not a class path")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _bad(value, f"cannot import {module_name} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise _bad(value, f"{module_name} has no class {class_name}")
    if not callable(getattr(cls, "from_config", None)):
        raise _bad(value, f"{cls.__name__} has no from_config(config, nats_url=...) classmethod")
    return cls


def load_provider(
    name_or_dotted_path: str, config: InstanceConfig, *, nats_url: str | None = None
) -> InstanceProvider:
    """Build the provider ``name_or_dotted_path`` names from ``config``.

    ``nats_url`` is the controller's NATS; agents get ``config.instance_nats_url`` if set, as
    instances may reach NATS by another address. A class of the user's own needs a
    ``from_config(config, *, nats_url)`` classmethod returning an :class:`InstanceProvider`.
    """
    cls = resolve_provider(name_or_dotted_path)
    url = config.instance_nats_url or nats_url
    if not url:
        raise ProviderConfigError(
            "no NATS URL for the agents on instances: set JIT_INSTANCE_NATS_URL or NATS_URL"
        )
    provider = cls.from_config(config, nats_url=url)  # type: ignore[attr-defined]
    if not isinstance(provider, InstanceProvider):
        raise _bad(name_or_dotted_path, f"{cls.__name__}.from_config did not return a provider")
    return provider
