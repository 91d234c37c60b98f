"""A fake Docker Engine: the subset of the Engine HTTP API (v1.43, as documented at
https://docs.docker.com/reference/api/engine/) that Tessera's Docker provider uses, served by
Starlette under uvicorn on loopback, recording every request.

It is a fake, not a Docker: containers are records whose state changes on start/stop, nothing
runs. It answers the way the documented API does (status codes, ``{"message": ...}`` errors,
the fields the docker SDK reads), which is what lets the real docker SDK talk to it over
``tcp://127.0.0.1:<port>``.

Endpoints: ``GET /version``; under ``/v{version}``: ``GET /containers/json``,
``GET /containers/{id}/json``, ``POST /containers/create``, ``POST /containers/{id}/start``,
``POST /containers/{id}/stop``, ``DELETE /containers/{id}``, ``POST /containers/prune``,
``GET /images/{name}/json``, ``POST /images/create``.
"""

from __future__ import annotations

import base64
import calendar
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipeline.runtime.httpserver import HttpServer

API_VERSION = "1.43"


@dataclass
class Call:
    """One request as the fake received it."""

    method: str
    path: str
    """Without the ``/v1.43`` prefix."""
    query: dict[str, str]
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def _matches(filters: Mapping[str, list[str]], container: Mapping[str, Any]) -> bool:
    labels = container["Config"]["Labels"]
    for wanted in filters.get("label", []):
        key, sep, value = wanted.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    statuses = filters.get("status")
    return not statuses or container["State"]["Status"] in statuses


class FakeDocker:
    """The fake engine: ``await start()``, use :attr:`base_url`, ``await stop()``."""

    def __init__(
        self,
        images: Iterable[str] = ("tessera:latest",),
        registry: Mapping[str, tuple[str, str] | None] | None = None,
    ) -> None:
        self.images = set(images)
        self.registry = dict(registry or {})
        """Pullable images: name → (user, password) they need, or None for public ones."""
        self.containers: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        prefix = "/v{version}"
        self.app = Starlette(
            routes=[
                Route("/version", self._version),
                Route(f"{prefix}/containers/json", self._list),
                Route(f"{prefix}/containers/create", self._create, methods=["POST"]),
                Route(f"{prefix}/containers/prune", self._prune, methods=["POST"]),
                Route(f"{prefix}/containers/{{ref}}/json", self._inspect),
                Route(f"{prefix}/containers/{{ref}}/start", self._start, methods=["POST"]),
                Route(f"{prefix}/containers/{{ref}}/stop", self._stop, methods=["POST"]),
                Route(f"{prefix}/containers/{{ref}}", self._remove, methods=["DELETE"]),
                Route(f"{prefix}/images/create", self._pull, methods=["POST"]),
                Route(f"{prefix}/images/{{name:path}}/json", self._inspect_image),
            ]
        )
        self.server = HttpServer(self.app, host="127.0.0.1", port=0, shutdown_timeout=1)

    @property
    def base_url(self) -> str:
        """Where the docker SDK should connect."""
        return f"tcp://127.0.0.1:{self.server.port}"

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request so far, oldest first; then forget them."""
        out = [(c.method, c.path) for c in self.calls]
        self.calls.clear()
        return out

    def add(self, name: str, labels: Mapping[str, str], status: str = "running") -> str:
        """A container that existed before the test (made with ``docker run`` by someone)."""
        cid = secrets.token_hex(32)
        self.containers[cid] = {
            "Id": cid,
            "Name": f"/{name}",
            "Created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
            "Image": "busybox:latest",
            "Config": {"Image": "busybox:latest", "Cmd": [], "Env": [], "Labels": dict(labels)},
            "HostConfig": {},
            "State": {"Status": status, "Running": status == "running", "ExitCode": 0},
        }
        return cid

    # --- plumbing --------------------------------------------------------------------------

    async def _record(self, request: Request) -> None:
        path = request.url.path
        version = request.path_params.get("version")
        if version is not None:
            path = path.removeprefix(f"/v{version}")
        raw = await request.body()
        body = json.loads(raw) if raw else None
        headers = {k: v for k, v in request.headers.items() if k.lower() == "x-registry-auth"}
        self.calls.append(Call(request.method, path, dict(request.query_params), body, headers))

    def _find(self, ref: str) -> dict[str, Any] | None:
        for cid, c in self.containers.items():
            if cid == ref or c["Name"] == f"/{ref}" or (len(ref) >= 12 and cid.startswith(ref)):
                return c
        return None

    # --- endpoints -------------------------------------------------------------------------

    async def _version(self, request: Request) -> JSONResponse:
        await self._record(request)
        return JSONResponse(
            {"ApiVersion": API_VERSION, "MinAPIVersion": "1.12", "Version": "24.0.7", "Os": "linux"}
        )

    async def _list(self, request: Request) -> JSONResponse:
        await self._record(request)
        filters = json.loads(request.query_params.get("filters") or "{}")
        every = request.query_params.get("all") in ("1", "true", "True")
        out = []
        for c in self.containers.values():
            if not every and not c["State"]["Running"]:
                continue
            if not _matches(filters, c):
                continue
            created = calendar.timegm(time.strptime(c["Created"][:19], "%Y-%m-%dT%H:%M:%S"))
            out.append(
                {
                    "Id": c["Id"],
                    "Names": [c["Name"]],
                    "Image": c["Image"],
                    "Labels": c["Config"]["Labels"],
                    "State": c["State"]["Status"],
                    "Status": c["State"]["Status"],
                    "Created": created,
                }
            )
        return JSONResponse(out)

    async def _inspect(self, request: Request) -> JSONResponse:
        await self._record(request)
        found = self._find(request.path_params["ref"])
        if found is None:
            return _error(404, f"No such container: {request.path_params['ref']}")
        return JSONResponse(found)

    async def _create(self, request: Request) -> JSONResponse:
        await self._record(request)
        spec = self.calls[-1].body or {}
        name = request.query_params.get("name", "")
        if name and self._find(name) is not None:
            return _error(409, f'Conflict. The container name "/{name}" is already in use.')
        if spec.get("Image") not in self.images:
            return _error(404, f"No such image: {spec.get('Image')}")
        cid = self.add(name or secrets.token_hex(6), spec.get("Labels") or {}, status="created")
        c = self.containers[cid]
        c["Image"] = spec["Image"]
        c["Config"].update(
            {
                "Image": spec["Image"],
                "Entrypoint": spec.get("Entrypoint"),
                "Cmd": spec.get("Cmd"),
                "Env": spec.get("Env") or [],
            }
        )
        c["HostConfig"] = spec.get("HostConfig") or {}
        return JSONResponse({"Id": cid, "Warnings": []}, status_code=201)

    async def _start(self, request: Request) -> Response:
        await self._record(request)
        found = self._find(request.path_params["ref"])
        if found is None:
            return _error(404, f"No such container: {request.path_params['ref']}")
        if found["State"]["Running"]:
            return Response(status_code=304)
        found["State"].update({"Status": "running", "Running": True})
        return Response(status_code=204)

    async def _stop(self, request: Request) -> Response:
        await self._record(request)
        found = self._find(request.path_params["ref"])
        if found is None:
            return _error(404, f"No such container: {request.path_params['ref']}")
        if not found["State"]["Running"]:
            return Response(status_code=304)
        found["State"].update({"Status": "exited", "Running": False, "ExitCode": 0})
        return Response(status_code=204)

    async def _remove(self, request: Request) -> Response:
        await self._record(request)
        found = self._find(request.path_params["ref"])
        if found is None:
            return _error(404, f"No such container: {request.path_params['ref']}")
        force = request.query_params.get("force") in ("1", "true", "True")
        if found["State"]["Running"] and not force:
            return _error(409, "You cannot remove a running container: stop it or force")
        del self.containers[found["Id"]]
        return Response(status_code=204)

    async def _prune(self, request: Request) -> JSONResponse:
        await self._record(request)
        filters = json.loads(request.query_params.get("filters") or "{}")
        gone = [
            cid
            for cid, c in self.containers.items()
            if not c["State"]["Running"] and _matches({"label": filters.get("label", [])}, c)
        ]
        for cid in gone:
            del self.containers[cid]
        return JSONResponse({"ContainersDeleted": gone, "SpaceReclaimed": 0})

    async def _inspect_image(self, request: Request) -> JSONResponse:
        await self._record(request)
        name = request.path_params["name"]
        if name not in self.images:
            return _error(404, f"No such image: {name}")
        return JSONResponse({"Id": "sha256:" + "0" * 64, "RepoTags": [name]})

    async def _pull(self, request: Request) -> Response:
        await self._record(request)
        name = f"{request.query_params['fromImage']}:{request.query_params.get('tag') or 'latest'}"
        if name not in self.registry:
            return _error(404, f"pull access denied for {name}, repository does not exist")
        needed = self.registry[name]
        if needed is not None:
            header = request.headers.get("x-registry-auth", "")
            try:
                given = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
            except ValueError:
                given = {}
            if (given.get("username"), given.get("password")) != needed:
                return _error(500, f"Head https://{name}: unauthorized: authentication required")
        self.images.add(name)
        lines = [
            {"status": f"Pulling from {name}"},
            {"status": f"Downloaded newer image for {name}"},
        ]
        return Response("".join(json.dumps(line) + "\r\n" for line in lines))
