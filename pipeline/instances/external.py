"""Instances nobody launches: the agents that registered themselves (``--instance-provider
agents``).

A cluster of machines that an operator (or Nomad, as a system job) runs ``tessera agent`` on:
each agent beats ``hb.instance.<id>`` with its capacity and the controller's
:class:`~pipeline.instances.pool.InstancePool` places workers on them, as on any instance. This
provider owns none of them: it lists nothing, terminates nothing (an agent that goes silent is
forgotten and its workers are started elsewhere), and cannot launch one, so a worker that finds
no agent with room fails with :class:`CapacityError` saying to start another agent (the
controller tries again, backing off, and places it once one beats).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pipeline.instances.base import CapacityError, InstanceInfo, LaunchRequest, NotReadyError

if TYPE_CHECKING:
    from pipeline.config.instances import InstanceConfig

log = logging.getLogger("tessera.instances.agents")


class RegisteredAgents:
    """The provider of agents that run by themselves (see the module docstring)."""

    name = "agents"
    launches = False
    """The pool asks this before launching: this provider never does."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url

    @classmethod
    def from_config(cls, config: InstanceConfig, *, nats_url: str) -> RegisteredAgents:
        """The provider for ``--instance-provider agents`` (nothing to configure)."""
        del config
        return cls(nats_url)

    async def launch(self, request: LaunchRequest) -> InstanceInfo:
        raise CapacityError(
            f"no agent has room for {request.kind or 'this'} work: start another "
            "`tessera agent` (with this cluster's NATS_URL) or stop some work"
        )

    async def wait_ready(self, instance_id: str, timeout: float) -> InstanceInfo:  # noqa: ASYNC109
        raise NotReadyError(f"instance {instance_id} is an agent of its own: nothing to wait for")

    async def list_owned(self) -> list[InstanceInfo]:
        return []

    async def terminate(self, instance_id: str, reason: str) -> None:
        # Not ours to end: the pool has already forgotten it and moved its work.
        log.info("agent left to itself", extra={"instance": instance_id, "reason": reason})

    async def close(self) -> None:
        return None
