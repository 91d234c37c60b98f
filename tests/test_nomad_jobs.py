"""The Nomad job files in ``deploy/nomad`` parse (python-hcl2) and keep what Tessera needs:

- ``kill_timeout`` longer than Tessera's graceful-stop deadline (``TESSERA_SHUTDOWN_TIMEOUT``,
  the task's own or the default), so Nomad's SIGKILL never cuts a clean stop short;
- explicit ``restart`` policies everywhere and ``reschedule`` where Nomad allows it (not in
  system jobs); ``scaling`` blocks on every service group, with min <= count <= max;
- ``NATS_URL`` from Nomad service discovery (a template over ``nomadService "tessera-nats"``
  rendered into the environment), never written into a job;
- the instance job's parameterized meta matches what the Nomad provider dispatches, and the
  capacity variables are the ones the agent reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hcl2 import SerializationOptions, load

from pipeline.config.instances import capacity_env
from pipeline.config.settings import Config
from pipeline.instances.base import LaunchRequest
from pipeline.instances.nomad import dispatch_meta

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "deploy" / "nomad").glob("*.nomad.hcl"))
PLAIN = SerializationOptions(
    with_comments=False, explicit_blocks=False, preserve_heredocs=False, strip_string_quotes=True
)
DEFAULT_SHUTDOWN = Config().shutdown_timeout


def parse(path: Path) -> tuple[str, dict[str, Any]]:
    with path.open() as f:
        doc = load(f, serialization_options=PLAIN)
    (job,) = doc["job"]
    ((name, body),) = job.items()
    return name, body


def blocks(body: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """Labelled blocks (``group "x" {}``) as (label, body) pairs."""
    return [item for entry in body.get(kind, []) for item in entry.items()]


def block(body: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The one unlabelled block ``kind`` (``restart {}``), or None."""
    found = body.get(kind) or []
    assert len(found) <= 1, f"more than one {kind} block"
    return found[0] if found else None


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(number) * units[unit]
    assert total, f"not a duration: {text!r}"
    return total


def tasks(body: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Every (group, task, group body, task body) of a job."""
    return [
        (g, t, group, task)
        for g, group in blocks(body, "group")
        for t, task in blocks(group, "task")
    ]


def test_the_job_files_are_there() -> None:
    names = {p.name for p in JOBS}
    assert names >= {
        "nats.nomad.hcl",
        "gateway.nomad.hcl",
        "controller.nomad.hcl",
        "agent.nomad.hcl",
        "instance.nomad.hcl",
        "grabber.nomad.hcl",
        "stitcher.nomad.hcl",
        "jit.nomad.hcl",
    }
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for path in JOBS:
        assert f"deploy/nomad/{path.name}" in docs, f"docs/deploy.md does not mention {path.name}"


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_job_keeps_what_tessera_needs(path: Path) -> None:
    name, job = parse(path)
    assert name.startswith("tessera-")
    kind = job.get("type", "service")
    assert kind in ("service", "system", "batch")
    for g, group in blocks(job, "group"):
        where = f"{path.name} group {g}"
        assert block(group, "restart"), f"{where}: no restart policy"
        if kind == "system":
            assert block(group, "reschedule") is None, f"{where}: system jobs cannot reschedule"
            assert block(group, "scaling") is None, f"{where}: system jobs cannot scale"
        else:
            assert block(group, "reschedule") is not None, f"{where}: no reschedule policy"
        if kind == "service":
            scaling = block(group, "scaling")
            assert scaling is not None, f"{where}: no scaling block"
            count = group.get("count", 1)
            assert scaling.get("min", count) <= count <= scaling["max"], where
    for g, t, _, task in tasks(job):
        where = f"{path.name} task {g}/{t}"
        env = block(task, "env") or {}
        deadline = float(env.get("TESSERA_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN))
        assert "kill_timeout" in task, f"{where}: no kill_timeout"
        assert seconds(task["kill_timeout"]) > deadline, (
            f"{where}: kill_timeout {task['kill_timeout']} is not longer than the "
            f"{deadline:g} s Tessera takes to stop"
        )
        config = block(task, "config") or {}
        if config.get("image") != "${var.image}":
            continue  # not a Tessera process (the NATS servers)
        assert "NATS_URL" not in env, f"{where}: NATS_URL must come from service discovery"
        renders = [
            tpl
            for tpl in task.get("template", [])
            if tpl.get("env") is True and "NATS_URL=" in tpl["data"]
        ]
        assert len(renders) == 1, f"{where}: no NATS_URL template rendered into the environment"
        data = renders[0]["data"].replace('\\"', '"')
        assert 'nomadService "tessera-nats"' in data, f"{where}: NATS_URL not from discovery"
        assert config.get("entrypoint") == ["tessera"]
        if config["args"][0] == "agent":
            known = set(capacity_env({}))
            given = {k for k in env if k.startswith("TESSERA_CAPACITY_")}
            assert given == known, f"{where}: capacity variables {given} are not {known}"
            assert env["TESSERA_INSTANCE_ID"], where
            assert env["JIT_INSTANCE_AGENT_PORT"] == "${NOMAD_PORT_status}" or (
                env["JIT_INSTANCE_AGENT_PORT"].isdigit()
            )


def test_nats_is_a_three_node_jetstream_cluster() -> None:
    name, job = parse(ROOT / "deploy" / "nomad" / "nats.nomad.hcl")
    ((_, group),) = blocks(job, "group")
    assert group["count"] == 3
    constraint = block(group, "constraint") or {}
    assert constraint.get("operator") == "distinct_hosts"
    services = {s["name"]: s for s in group["service"]}
    assert set(services) == {"tessera-nats", "tessera-nats-cluster"}
    assert all(s["provider"] == "nomad" for s in services.values())
    ((_, task),) = blocks(group, "task")
    (conf,) = task["template"]
    text = conf["data"].replace('\\"', '"')
    assert "jetstream" in text and "cluster" in text
    assert 'nomadService "tessera-nats-cluster"' in text


def test_instance_job_takes_what_the_provider_dispatches() -> None:
    name, job = parse(ROOT / "deploy" / "nomad" / "instance.nomad.hcl")
    assert name == "tessera-instance" and job["type"] == "batch"
    params = block(job, "parameterized")
    assert params is not None and params["payload"] == "forbidden"
    required = set(params["meta_required"])
    allowed = required | set(params["meta_optional"])
    sent = set(dispatch_meta(LaunchRequest("inst-1", {"jit": 1}, kind="jit"), "me"))
    bare = set(dispatch_meta(LaunchRequest("inst-1", {}), "me"))
    assert sent <= allowed, f"Nomad would refuse meta keys {sent - allowed}"
    assert required <= bare, f"the provider does not always send {required - bare}"
    defaults = block(job, "meta") or {}
    assert set(params["meta_optional"]) <= set(defaults), "optional meta without a default"
    ((_, _, _, task),) = tasks(job)
    env = block(task, "env") or {}
    assert env["TESSERA_INSTANCE_ID"] == "${NOMAD_META_tessera_instance_id}"
    for var in capacity_env({}):
        kind = var.removeprefix("TESSERA_CAPACITY_").lower()
        assert env[var] == f"${{NOMAD_META_tessera_capacity_{kind}}}"
