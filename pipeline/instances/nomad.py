"""Instances as Nomad jobs, through Nomad's HTTP API (httpx; no Nomad SDK).

An instance is one dispatch of the parameterized job ``tessera-instance``
(``deploy/nomad/instance.nomad.hcl``): an allocation running ``tessera agent`` whose
``NATS_URL`` comes from Nomad service discovery. The job file stays the operator's: image,
resources and constraints live there, and the controller only dispatches it.

Only documented endpoints are used (https://developer.hashicorp.com/nomad/api-docs/jobs):

- launch: ``POST /v1/job/:job_id/dispatch`` with ``Meta`` (instance id, owner, kind and
  capacities, which the job reads as ``NOMAD_META_*``) and the ``idempotency_token`` query
  parameter set to the instance id, after a look for a live child with that id;
- ready: ``GET /v1/job/:job_id/allocations`` until an allocation's ``ClientStatus`` is running;
- list: ``GET /v1/jobs?prefix=<job>/&meta=true``, keeping children whose ``Meta`` names our
  owner (``TESSERA_OWNER_ID``) and that are not dead;
- terminate: ``DELETE /v1/job/:job_id`` (stop; Nomad's garbage collector purges it later);
- scale (worker pools, see :meth:`NomadProvider.scale`): ``POST /v1/job/:job_id/scale`` with
  ``Count``, ``Target.Group`` and ``Message``; ``GET /v1/job/:job_id/scale`` reads it back.

``NOMAD_ADDR``, ``NOMAD_TOKEN`` (sent as ``X-Nomad-Token``), ``NOMAD_NAMESPACE`` and
``NOMAD_REGION`` (``namespace`` / ``region`` query parameters) are honoured. Job ids in paths
are percent-escaped, as Nomad's own Go client does (dispatched ids contain ``/``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

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

log = logging.getLogger("tessera.instances.nomad")

META_INSTANCE = "tessera_instance_id"
META_OWNER = "tessera_owner"
META_KIND = "tessera_kind"
META_CAPACITY = "tessera_capacity_"
"""Prefix of the capacity meta keys: ``tessera_capacity_<kind>``."""

_STATUS: dict[str, InstanceStatus] = {"pending": "pending", "running": "ready"}
_TERMINAL = ("complete", "failed", "lost")


def dispatch_meta(request: LaunchRequest, owner: str) -> dict[str, str]:
    """The ``Meta`` of the dispatch for ``request`` (every capacity, so the job needs no
    defaults; kinds absent from the request get 0)."""
    meta = {META_INSTANCE: request.instance_id, META_OWNER: owner}
    if request.kind:
        meta[META_KIND] = request.kind
    for kind in ("jit", "grabber", "stitcher", *sorted(request.capacity)):
        meta[f"{META_CAPACITY}{kind}"] = str(request.capacity.get(kind, 0))
    return meta


def job_path(job_id: str, *rest: str) -> str:
    """``/v1/job/<escaped id>[/rest...]``."""
    return "/".join(("/v1/job", quote(job_id, safe=""), *rest))


class NomadProvider:
    """Dispatches one Nomad job per instance. Build it with :meth:`from_config`."""

    name = "nomad"

    def __init__(
        self,
        *,
        addr: str = "http://127.0.0.1:4646",
        token: str | None = None,
        namespace: str | None = None,
        region: str | None = None,
        job: str = "tessera-instance",
        owner: str = "tessera",
        poll_interval: float = 1.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.addr = addr.rstrip("/")
        self.namespace = namespace
        self.region = region
        self.job = job
        self.owner = owner
        self.poll_interval = poll_interval
        self._clock = clock
        headers = {"X-Nomad-Token": token} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.addr, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_config(cls, config: InstanceConfig, *, nats_url: str) -> NomadProvider:
        """The provider the settings describe (``nats_url`` is the job file's business:
        agents find NATS through Nomad service discovery)."""
        return cls(
            addr=config.nomad_addr,
            token=config.nomad_token,
            namespace=config.nomad_namespace,
            region=config.nomad_region,
            job=config.nomad_instance_job,
            owner=config.owner_id,
        )

    # --- HTTP ------------------------------------------------------------------------------

    def _params(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        params = dict(extra or {})
        if self.namespace:
            params["namespace"] = self.namespace
        if self.region:
            params["region"] = self.region
        return params

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        missing_ok: bool = False,
    ) -> Any:
        """One API call; None for a 404 when ``missing_ok``; errors name the call and the fix."""
        try:
            response = await self._http.request(
                method, path, params=self._params(params), json=body
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"cannot reach Nomad at {self.addr}: {exc or type(exc).__name__}: "
                "is NOMAD_ADDR right?"
            ) from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 403:
            raise ProviderConfigError(
                f"Nomad refused {method} {path} (403): NOMAD_TOKEN needs the read-job, "
                "submit-job, dispatch-job and scale-job capabilities in its namespace"
            )
        if response.status_code >= 400:
            text = response.text.strip().replace("\n", " ")[:200]
            raise InstanceError(f"Nomad {method} {path} answered {response.status_code}: {text}")
        return response.json() if response.content else None

    # --- the provider ----------------------------------------------------------------------

    async def _children(self) -> list[dict[str, Any]]:
        found = await self._request(
            "GET", "/v1/jobs", params={"prefix": f"{self.job}/", "meta": "true"}
        )
        out = []
        for job in found or []:
            meta = job.get("Meta") or {}
            if meta.get(META_OWNER) != self.owner or not meta.get(META_INSTANCE):
                continue
            if job.get("Status") == "dead" or job.get("Stop"):
                continue
            out.append(job)
        return out

    def _info(self, job: Mapping[str, Any]) -> InstanceInfo:
        meta = job.get("Meta") or {}
        submitted = job.get("SubmitTime")
        capacity = {
            key.removeprefix(META_CAPACITY): int(value)
            for key, value in meta.items()
            if key.startswith(META_CAPACITY) and str(value).isdigit() and int(value) > 0
        }
        return InstanceInfo(
            instance_id=str(meta[META_INSTANCE]),
            provider=self.name,
            external_id=str(job["ID"]),
            status=_STATUS.get(str(job.get("Status")), "pending"),
            launched_at=submitted / 1e9 if isinstance(submitted, int) else self._clock(),
            capacity=capacity,
        )

    async def _find(self, instance_id: str) -> list[dict[str, Any]]:
        return [
            job
            for job in await self._children()
            if job["Meta"][META_INSTANCE] == instance_id or job["ID"] == instance_id
        ]

    async def launch(self, request: LaunchRequest) -> InstanceInfo:
        """Dispatch the instance job, unless a live child for this id exists."""
        existing = await self._find(request.instance_id)
        if existing:
            return self._info(existing[0])
        reply = await self._request(
            "POST",
            job_path(self.job, "dispatch"),
            params={"idempotency_token": request.instance_id},
            body={"Meta": dispatch_meta(request, self.owner)},
            missing_ok=True,
        )
        if reply is None:
            raise ProviderConfigError(
                f"Nomad at {self.addr} has no job {self.job!r} to dispatch: run "
                "`nomad job run deploy/nomad/instance.nomad.hcl` or set TESSERA_NOMAD_INSTANCE_JOB"
            )
        job_id = reply.get("DispatchedJobID")
        if not job_id:
            raise LaunchError(f"Nomad dispatch of {self.job} for {request.instance_id}: no job id")
        log.info("instance launched", extra={"instance": request.instance_id, "job": job_id})
        return InstanceInfo(
            instance_id=request.instance_id,
            provider=self.name,
            external_id=str(job_id),
            status="pending",
            launched_at=self._clock(),
            capacity=dict(request.capacity),
        )

    async def wait_ready(self, instance_id: str, timeout: float) -> InstanceInfo:  # noqa: ASYNC109
        """Wait until an allocation of the instance's job runs."""
        found = await self._find(instance_id)
        if not found:
            raise InstanceNotFoundError(f"no live Nomad job of ours for instance {instance_id}")
        info = self._info(found[0])

        async def check() -> InstanceInfo | None:
            allocs = await self._request(
                "GET", job_path(info.external_id, "allocations"), missing_ok=True
            )
            if allocs is None:
                raise InstanceNotFoundError(f"Nomad job {info.external_id} is gone")
            states = [str(a.get("ClientStatus")) for a in allocs]
            if "running" in states:
                return InstanceInfo(
                    instance_id=info.instance_id,
                    provider=info.provider,
                    external_id=info.external_id,
                    status="ready",
                    launched_at=info.launched_at,
                    capacity=info.capacity,
                )
            if states and all(s in _TERMINAL for s in states):
                raise LaunchError(
                    f"Nomad job {info.external_id} ended while starting ({', '.join(states)}): "
                    f"see `nomad job status {info.external_id}`"
                )
            return None

        return await poll_until(
            check, timeout=timeout, interval=self.poll_interval, what=f"Nomad job {instance_id}"
        )

    async def list_owned(self) -> list[InstanceInfo]:
        """Live dispatched children whose meta names our owner."""
        return sorted((self._info(j) for j in await self._children()), key=lambda i: i.instance_id)

    async def terminate(self, instance_id: str, reason: str) -> None:
        """Stop the instance's job (``instance_id`` or its Nomad job id); gone is fine."""
        for job in await self._find(instance_id):
            await self._request("DELETE", job_path(str(job["ID"])), missing_ok=True)
            log.info(
                "instance terminated",
                extra={"instance": instance_id, "job": job["ID"], "reason": reason},
            )

    async def scale(self, job_id: str, group: str, count: int, message: str) -> None:
        """Set the count of ``group`` in ``job_id`` (a worker pool such as ``tessera-jit``)."""
        if count < 0:
            raise ValueError(f"cannot scale {job_id}/{group} to {count}: counts are 0 or more")
        reply = await self._request(
            "POST",
            job_path(job_id, "scale"),
            body={"Count": count, "Target": {"Group": group}, "Message": message},
            missing_ok=True,
        )
        if reply is None:
            raise ProviderConfigError(
                f"Nomad at {self.addr} has no job {job_id!r} to scale: run its job file from "
                "deploy/nomad"
            )
        log.info("scaled", extra={"job": job_id, "group": group, "count": count})

    async def scale_status(self, job_id: str) -> dict[str, dict[str, int]]:
        """Per group of ``job_id``: Desired, Placed, Running, Healthy, Unhealthy counts."""
        reply = await self._request("GET", job_path(job_id, "scale"), missing_ok=True)
        if reply is None:
            raise InstanceNotFoundError(f"Nomad has no job {job_id!r}")
        groups = reply.get("TaskGroups") or {}
        return {
            name: {k: int(v) for k, v in counts.items() if isinstance(v, int)}
            for name, counts in groups.items()
        }

    async def close(self) -> None:
        """Close the HTTP client. Safe twice."""
        await self._http.aclose()
