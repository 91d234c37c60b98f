"""The controller's side of the agent protocol: commands to ``ctl.agent.<instance_id>`` and
their replies, with NATS failures translated into instance errors.

- :func:`start_worker_on` sends :class:`StartWorker` with the worker's whole spec; a refusal
  with code ``full`` is a :class:`CapacityError` (place the worker elsewhere), any other
  refusal an :class:`InstanceError`.
- :func:`stop_worker_on` sends :class:`StopWorker`; stopping what does not run is fine.
- No agent listening, or no answer in time, is an :class:`InstanceError` naming the instance:
  the reaping rules will find it lost if it stays silent.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from pipeline.errors import InstanceError, MessageError
from pipeline.instances.base import CapacityError
from pipeline.messages.codec import decode_reply, encode
from pipeline.messages.control import CommandReply, StartWorker, StopWorker
from pipeline.messages.workers import WorkerSpec
from pipeline.nats import subjects


async def command(
    nc: Client, instance_id: str, message: StartWorker | StopWorker, *, wait: float = 5.0
) -> CommandReply:
    """Send one command to an agent and return its reply."""
    subject = subjects.agent_control(instance_id)
    try:
        msg = await nc.request(subject, encode(message), timeout=wait)
    except NoRespondersError as exc:
        raise InstanceError(
            f"no agent listens on {subject}: is instance {instance_id} up?"
        ) from exc
    except NatsTimeoutError as exc:
        raise InstanceError(
            f"the agent of instance {instance_id} did not answer within {wait:g} s"
        ) from exc
    try:
        return decode_reply(msg.data, msg.subject)
    except MessageError as exc:
        raise InstanceError(
            f"the agent of instance {instance_id} answered nonsense: {exc}"
        ) from exc


async def start_worker_on(
    nc: Client, instance_id: str, spec: WorkerSpec, *, wait: float = 5.0
) -> None:
    """Ask the agent of ``instance_id`` to run ``spec`` (a no-op if it runs it already)."""
    reply = await command(nc, instance_id, StartWorker(spec=spec), wait=wait)
    if reply.ok:
        return
    if reply.code == "full":
        raise CapacityError(reply.error)
    raise InstanceError(f"instance {instance_id} refused {spec.worker_id}: {reply.error}")


async def stop_worker_on(
    nc: Client, instance_id: str, worker_id: str, reason: str, *, wait: float = 15.0
) -> None:
    """Ask the agent of ``instance_id`` to stop ``worker_id`` (``wait`` covers the grace)."""
    reply = await command(
        nc, instance_id, StopWorker(worker_id=worker_id, reason=reason), wait=wait
    )
    if not reply.ok:
        raise InstanceError(f"instance {instance_id} did not stop {worker_id}: {reply.error}")
