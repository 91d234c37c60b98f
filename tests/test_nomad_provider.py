"""The Nomad provider against a fake Nomad (:mod:`tests.fakes.nomad_api`).

The real Nomad binary cannot be installed here: it is in none of the package registries this
project's machines reach (and from 1.7 on it is not open-source), and nothing else can be
downloaded. So the most faithful stand-in there is: a fake built from Nomad's documented HTTP
API, served on loopback, that the provider talks to with httpx exactly as to Nomad. The fake
registers the jobs as ``tessera deploy nomad --namespace media`` renders them from
``deploy/nomad`` (parsed with python-hcl2: their namespace, parameterized meta and scaling
blocks), so a dispatch whose meta the job file does not allow, or one into another namespace,
fails here as it would on Nomad. The tests check the exact requests of a launch, a scale and a
stop, and the token, namespace and region. (What the job files run is checked against Tessera
itself in ``tests/test_nomad_jobs.py``.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pipeline.cli.deploy import render_job
from pipeline.config import instances as instance_settings
from pipeline.errors import InstanceError
from pipeline.instances.base import (
    LaunchError,
    LaunchRequest,
    ProviderConfigError,
    ProviderUnavailableError,
    load_provider,
)
from pipeline.instances.nomad import NomadProvider
from tests.fakes.nomad_api import FakeNomad, job_from_hcl

JOBS = Path(__file__).resolve().parent.parent / "deploy" / "nomad"
TOKEN = "6d0a9f6c-2d5a-4a2f-9d1e-000000000001"
QUERY = "namespace=media&region=eu"


@pytest_asyncio.fixture
async def nomad(tmp_path: Path) -> AsyncIterator[FakeNomad]:
    fake = FakeNomad(token=TOKEN, namespaces=("default", "media"))
    for name in ("instance", "grabber", "stitcher", "jit"):
        rendered = tmp_path / f"{name}.nomad.hcl"
        source = (JOBS / rendered.name).read_text()
        rendered.write_text(render_job(source, {"namespace": "media"}))
        job = job_from_hcl(rendered)
        assert job.namespace == "media"
        fake.register(job)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def provider(nomad: FakeNomad, **env: str) -> NomadProvider:
    base = {
        "NOMAD_ADDR": nomad.addr,
        "NOMAD_TOKEN": TOKEN,
        "NOMAD_NAMESPACE": "media",
        "NOMAD_REGION": "eu",
    }
    config = instance_settings.load(env={**base, **env})
    built = load_provider("nomad", config, nats_url="nats://unused:4222")
    assert isinstance(built, NomadProvider)
    built.poll_interval = 0.02
    return built


async def test_launch_ready_and_stop_make_exactly_these_requests(nomad: FakeNomad) -> None:
    api = provider(nomad)
    try:
        info = await api.launch(LaunchRequest("inst-1", {"jit": 2, "grabber": 4}, kind="jit"))
        job_id = info.external_id
        assert job_id.startswith("tessera-instance/dispatch-") and info.status == "pending"
        listing = "GET /v1/jobs?meta=true&namespace=media&prefix=tessera-instance/&region=eu"
        assert [" ".join(r) for r in nomad.requests()] == [
            listing,
            f"POST /v1/job/tessera-instance/dispatch?idempotency_token=inst-1&{QUERY}",
        ]
        child = nomad.jobs[("media", job_id)]
        assert child.meta == {
            "tessera_instance_id": "inst-1",
            "tessera_owner": "tessera",
            "tessera_kind": "jit",
            "tessera_capacity_jit": "2",
            "tessera_capacity_grabber": "4",
            "tessera_capacity_stitcher": "0",
        }

        # A retry (say, after the controller crashed) finds it and dispatches nothing.
        retry = provider(nomad)
        again = await retry.launch(LaunchRequest("inst-1", {"jit": 2}))
        await retry.close()
        assert again.external_id == job_id and again.capacity == {"jit": 2, "grabber": 4}
        assert [" ".join(r) for r in nomad.requests()] == [listing]

        escaped = job_id.replace("/", "%2F")

        async def schedule() -> None:
            await asyncio.sleep(0.1)
            nomad.set_allocs(job_id, "running", namespace="media")

        scheduler = asyncio.create_task(schedule())
        ready = await api.wait_ready("inst-1", 5)
        await scheduler
        assert ready.status == "ready" and ready.external_id == job_id
        calls = [" ".join(r) for r in nomad.requests()]
        assert calls[0] == listing
        assert set(calls[1:]) == {f"GET /v1/job/{escaped}/allocations?{QUERY}"}
        assert [i.instance_id for i in await api.list_owned()] == ["inst-1"]
        nomad.requests()

        await api.terminate("inst-1", "idle")
        assert [" ".join(r) for r in nomad.requests()] == [
            listing,
            f"DELETE /v1/job/{escaped}?{QUERY}",
        ]
        assert await api.list_owned() == []
        await api.terminate("inst-1", "idle")  # gone: a no-op
        assert all(c.token == TOKEN for c in nomad.calls)
    finally:
        await api.close()
        await api.close()


async def test_scale_a_worker_pool(nomad: FakeNomad) -> None:
    api = provider(nomad)
    try:
        await api.scale("tessera-grabber", "grabber", 5, "70 grabbers wanted, 16 per agent")
        (call,) = nomad.calls
        assert (call.method, call.raw_path) == ("POST", "/v1/job/tessera-grabber/scale")
        assert call.query == {"namespace": "media", "region": "eu"}
        assert call.body == {
            "Count": 5,
            "Target": {"Group": "grabber"},
            "Message": "70 grabbers wanted, 16 per agent",
        }
        assert (await api.scale_status("tessera-grabber"))["grabber"]["Desired"] == 5
        with pytest.raises(InstanceError, match="outside the scaling policy 0-20"):
            await api.scale("tessera-grabber", "grabber", 21, "too many")
        with pytest.raises(ProviderConfigError, match="no job 'tessera-nothing'"):
            await api.scale("tessera-nothing", "x", 1, "?")
    finally:
        await api.close()


async def test_owners_and_failures(nomad: FakeNomad) -> None:
    ours, theirs = provider(nomad), provider(nomad, TESSERA_OWNER_ID="staging")
    try:
        mine = await ours.launch(LaunchRequest("inst-a", {"jit": 1}))
        await theirs.launch(LaunchRequest("inst-b", {"jit": 1}))
        assert [i.instance_id for i in await ours.list_owned()] == ["inst-a"]
        assert [i.instance_id for i in await theirs.list_owned()] == ["inst-b"]
        nomad.set_allocs(mine.external_id, "failed", namespace="media")
        nomad.jobs[("media", mine.external_id)].status = "pending"  # Nomad not caught up yet
        with pytest.raises(LaunchError, match="ended while starting \\(failed\\)"):
            await ours.wait_ready("inst-a", 5)
    finally:
        await ours.close()
        await theirs.close()


async def test_errors_name_the_fix(nomad: FakeNomad) -> None:
    wrong = provider(nomad, NOMAD_TOKEN="not-the-token")
    with pytest.raises(ProviderConfigError, match="NOMAD_TOKEN"):
        await wrong.list_owned()
    await wrong.close()
    missing = provider(nomad, TESSERA_NOMAD_INSTANCE_JOB="tessera-elsewhere")
    with pytest.raises(ProviderConfigError, match="nomad job run deploy/nomad/instance.nomad.hcl"):
        await missing.launch(LaunchRequest("inst-c", {"jit": 1}))
    await missing.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
    nowhere = NomadProvider(addr=refused)
    with pytest.raises(ProviderUnavailableError, match="is NOMAD_ADDR right"):
        await nowhere.list_owned()
    await nowhere.close()
