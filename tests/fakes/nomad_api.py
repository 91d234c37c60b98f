"""A fake Nomad: the part of Nomad's HTTP API (https://developer.hashicorp.com/nomad/api-docs)
that Tessera's Nomad provider uses, served by Starlette under uvicorn on loopback, recording
every request (with its raw, still percent-escaped path).

It is built from the documentation, not from Nomad, and it schedules nothing: a dispatched job
gets one ``pending`` allocation that a test moves along with :meth:`FakeNomad.set_allocs`.
What it does check, as Nomad does: the ACL token (``X-Nomad-Token``), the namespace, that a
dispatch targets a parameterized job and gives exactly its required meta and no meta it does
not allow, the ``idempotency_token`` of a dispatch, and that a scale stays within the group's
scaling block.

Endpoints: ``GET /v1/jobs``, ``POST /v1/job/:job_id/dispatch``,
``GET /v1/job/:job_id/allocations``, ``POST|GET /v1/job/:job_id/scale``,
``DELETE /v1/job/:job_id``.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcl2 import SerializationOptions, load
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.runtime.httpserver import HttpServer


@dataclass
class Call:
    """One request as the fake received it."""

    method: str
    raw_path: str
    query: dict[str, str]
    body: Any = None
    token: str | None = None


@dataclass
class Job:
    """A registered job, as much of it as the fake needs."""

    id: str
    type: str = "service"
    namespace: str = "default"
    parameterized: dict[str, Any] | None = None
    meta: dict[str, str] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Group name → {"Count": n, "Scaling": {"Min", "Max"} or None}."""
    parent: str = ""
    status: str = "pending"
    stop: bool = False
    token: str = ""
    submit_time: int = 0
    allocs: list[dict[str, Any]] = field(default_factory=list)


def job_from_hcl(path: Path) -> Job:
    """The job a ``*.nomad.hcl`` file declares (what ``nomad job run`` would register)."""
    options = SerializationOptions(
        with_comments=False,
        explicit_blocks=False,
        preserve_heredocs=False,
        strip_string_quotes=True,
    )
    with path.open() as f:
        doc = load(f, serialization_options=options)
    ((name, body),) = doc["job"][0].items()
    # Its namespace, a literal or one of the file's variables (with its default, as `nomad job
    # run` without -var would take it).
    defaults = {k: v.get("default") for e in doc.get("variable", []) for k, v in e.items()}
    namespace = str(body.get("namespace", "default"))
    if namespace.startswith("${var.") and namespace.endswith("}"):
        namespace = str(defaults[namespace[len("${var.") : -1]])
    params = (body.get("parameterized") or [None])[0]
    groups = {}
    for entry in body.get("group", []):
        for gname, group in entry.items():
            scaling = (group.get("scaling") or [None])[0]
            groups[gname] = {
                "Count": group.get("count", 1),
                "Scaling": {"Min": scaling.get("min"), "Max": scaling["max"]} if scaling else None,
            }
    return Job(
        id=name,
        type=body.get("type", "service"),
        namespace=namespace,
        parameterized=params,
        meta=dict((body.get("meta") or [{}])[0]),
        groups=groups,
        status="running",
    )


def _error(status: int, text: str) -> PlainTextResponse:
    # Nomad answers errors as plain text bodies.
    return PlainTextResponse(text, status_code=status)


class FakeNomad:
    """The fake API: ``await start()``, use :attr:`addr`, ``await stop()``."""

    def __init__(self, *, token: str | None = None, namespaces: tuple[str, ...] = ("default",)):
        self.token = token
        self.namespaces = set(namespaces)
        self.jobs: dict[tuple[str, str], Job] = {}
        self.calls: list[Call] = []
        self.index = 10
        job = "/v1/job/{job_id:path}"
        self.app = Starlette(
            routes=[
                Route("/v1/jobs", self._list),
                Route(f"{job}/dispatch", self._dispatch, methods=["POST"]),
                Route(f"{job}/allocations", self._allocations),
                Route(f"{job}/scale", self._scale, methods=["GET", "POST"]),
                Route(job, self._deregister, methods=["DELETE"]),
            ]
        )
        self.server = HttpServer(self.app, host="127.0.0.1", port=0, shutdown_timeout=1)

    @property
    def addr(self) -> str:
        """NOMAD_ADDR of the fake."""
        return f"http://127.0.0.1:{self.server.port}"

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def register(self, job: Job) -> Job:
        """What ``nomad job run`` would do."""
        self.jobs[(job.namespace, job.id)] = job
        return job

    def requests(self) -> list[tuple[str, str]]:
        """``(method, raw path?query)`` of every request so far; then forget them."""
        out = []
        for c in self.calls:
            query = "&".join(f"{k}={v}" for k, v in sorted(c.query.items()))
            out.append((c.method, c.raw_path + (f"?{query}" if query else "")))
        self.calls.clear()
        return out

    def set_allocs(self, job_id: str, *statuses: str, namespace: str = "default") -> None:
        """Give a job allocations in these client states (the scheduler's work)."""
        job = self.jobs[(namespace, job_id)]
        job.allocs = [
            {"ID": str(uuid.uuid4()), "JobID": job_id, "ClientStatus": s, "TaskGroup": "agent"}
            for s in statuses
        ]
        if "running" in statuses:
            job.status = "running"
        elif statuses and all(s in ("complete", "failed", "lost") for s in statuses):
            job.status = "dead"

    # --- plumbing --------------------------------------------------------------------------

    async def _enter(self, request: Request) -> tuple[str, Response | None]:
        raw = await request.body()
        call = Call(
            method=request.method,
            raw_path=request.scope["raw_path"].decode(),
            query=dict(request.query_params),
            body=json.loads(raw) if raw else None,
            token=request.headers.get("x-nomad-token"),
        )
        self.calls.append(call)
        if self.token is not None and call.token != self.token:
            return "", _error(403, "Permission denied")
        namespace = request.query_params.get("namespace", "default")
        if namespace not in self.namespaces:
            return namespace, _error(404, f"namespace {namespace!r} not found")
        return namespace, None

    def _job(self, namespace: str, request: Request) -> Job | None:
        return self.jobs.get((namespace, request.path_params["job_id"]))

    def _stub(self, job: Job, meta: bool) -> dict[str, Any]:
        stub: dict[str, Any] = {
            "ID": job.id,
            "ParentID": job.parent,
            "Name": job.id,
            "Namespace": job.namespace,
            "Type": job.type,
            "Priority": 50,
            "Status": job.status,
            "Stop": job.stop,
            "ParameterizedJob": job.parameterized is not None,
            "SubmitTime": job.submit_time,
            "CreateIndex": self.index,
            "ModifyIndex": self.index,
            "JobModifyIndex": self.index,
        }
        if meta:
            stub["Meta"] = dict(job.meta)
        return stub

    def _write_reply(self, **more: Any) -> dict[str, Any]:
        self.index += 1
        reply = {
            "EvalID": str(uuid.uuid4()),
            "EvalCreateIndex": self.index,
            "JobModifyIndex": self.index,
        }
        reply.update(more)
        return reply

    # --- endpoints -------------------------------------------------------------------------

    async def _list(self, request: Request) -> Response:
        namespace, refused = await self._enter(request)
        if refused:
            return refused
        prefix = request.query_params.get("prefix", "")
        meta = request.query_params.get("meta") == "true"
        found = [
            self._stub(job, meta)
            for (ns, jid), job in sorted(self.jobs.items())
            if ns == namespace and jid.startswith(prefix)
        ]
        return JSONResponse(found)

    async def _dispatch(self, request: Request) -> Response:
        namespace, refused = await self._enter(request)
        if refused:
            return refused
        parent = self._job(namespace, request)
        if parent is None:
            return _error(404, "job not found")
        if parent.parameterized is None:
            return _error(400, "Specified job is not a parameterized job")
        body = self.calls[-1].body or {}
        given = dict(body.get("Meta") or {})
        required = set(parent.parameterized.get("meta_required", []))
        allowed = required | set(parent.parameterized.get("meta_optional", []))
        if missing := required - set(given):
            return _error(400, f"Dispatch did not provide required meta keys: {sorted(missing)}")
        if extra := set(given) - allowed:
            return _error(400, f"Dispatch provided unexpected meta keys: {sorted(extra)}")
        if body.get("Payload") and parent.parameterized.get("payload") == "forbidden":
            return _error(400, "Payload is not allowed")
        token = request.query_params.get("idempotency_token", "")
        if token:
            for job in self.jobs.values():
                if job.parent == parent.id and job.token == token and job.status != "dead":
                    return JSONResponse(self._write_reply(DispatchedJobID=job.id, Index=self.index))
        child_id = f"{parent.id}/dispatch-{int(time.time())}-{secrets.token_hex(4)}"
        child = Job(
            id=child_id,
            type=parent.type,
            namespace=namespace,
            meta={**parent.meta, **given},
            groups={k: dict(v) for k, v in parent.groups.items()},
            parent=parent.id,
            token=token,
            submit_time=time.time_ns(),
        )
        self.register(child)
        self.set_allocs(child_id, "pending", namespace=namespace)
        return JSONResponse(
            self._write_reply(DispatchedJobID=child_id, JobCreateIndex=self.index, Index=self.index)
        )

    async def _allocations(self, request: Request) -> Response:
        namespace, refused = await self._enter(request)
        if refused:
            return refused
        job = self._job(namespace, request)
        if job is None:
            return _error(404, "job not found")
        return JSONResponse(job.allocs)

    async def _deregister(self, request: Request) -> Response:
        namespace, refused = await self._enter(request)
        if refused:
            return refused
        job = self._job(namespace, request)
        if job is None:
            return _error(404, "job not found")
        job.stop = True
        job.status = "dead"
        for alloc in job.allocs:
            alloc["ClientStatus"] = "complete"
        if request.query_params.get("purge") == "true":
            del self.jobs[(namespace, job.id)]
        return JSONResponse(self._write_reply())

    async def _scale(self, request: Request) -> Response:
        namespace, refused = await self._enter(request)
        if refused:
            return refused
        job = self._job(namespace, request)
        if job is None:
            return _error(404, "job not found")
        if request.method == "GET":
            groups = {
                name: {
                    "Desired": g["Count"],
                    "Placed": g["Count"],
                    "Running": g["Count"],
                    "Healthy": g["Count"],
                    "Unhealthy": 0,
                    "Events": None,
                }
                for name, g in job.groups.items()
            }
            return JSONResponse({"JobID": job.id, "JobStopped": job.stop, "TaskGroups": groups})
        body = self.calls[-1].body or {}
        group_name = (body.get("Target") or {}).get("Group")
        if group_name not in job.groups:
            return _error(400, f"task group {group_name!r} not found in job")
        if not (body.get("Message") or body.get("Error")):
            return _error(400, "one of Message or Error must be provided")
        group = job.groups[group_name]
        count = body.get("Count")
        scaling = group["Scaling"]
        if count is not None and scaling is not None:
            low = scaling["Min"] if scaling["Min"] is not None else group["Count"]
            if not low <= count <= scaling["Max"]:
                return _error(
                    400, f"group count {count} is outside the scaling policy {low}-{scaling['Max']}"
                )
        if count is not None:
            group["Count"] = count
        return JSONResponse(self._write_reply(Index=self.index, Warnings=""))
