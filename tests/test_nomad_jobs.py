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

import copy
import functools
import json
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any, get_args

import pytest
from hcl2 import SerializationOptions, loads

from pipeline.cli import deploy
from pipeline.cli import main as cli
from pipeline.config import declare
from pipeline.config import instances as instance_settings
from pipeline.config.instances import capacity_env
from pipeline.config.settings import Config
from pipeline.config.settings import load as load_config
from pipeline.instances.base import LaunchRequest
from pipeline.instances.nomad import dispatch_meta
from pipeline.messages.workers import WorkerSpec
from pipeline.nats import auth as natsauth
from pipeline.nats.connect import resolve_url
from pipeline.nats.server import ClusterConfig, render_config
from tests.fakes import gotemplate

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "deploy" / "nomad").glob("*.nomad.hcl"))
PLAIN = SerializationOptions(
    with_comments=False, explicit_blocks=False, preserve_heredocs=False, strip_string_quotes=True
)
DEFAULT_SHUTDOWN = Config().shutdown_timeout


@functools.cache
def _parsed(path: Path, text: str) -> dict[str, Any]:
    doc: dict[str, Any] = loads(text, serialization_options=PLAIN)
    return doc


def parse_doc(path: Path) -> dict[str, Any]:
    """The whole file as python-hcl2 reads it (a copy: callers may change it)."""
    return copy.deepcopy(_parsed(path, path.read_text()))


def parse(path: Path) -> tuple[str, dict[str, Any]]:
    doc = parse_doc(path)
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


# --- what the jobs run is what Tessera runs ------------------------------------------------
#
# The templates are rendered with tests/fakes/gotemplate.py (Nomad and consul-template cannot
# be installed here), from sample values: three NATS servers, and the Variables that
# `tessera deploy nomad` writes.

SERVERS = [{"Address": f"10.0.0.{i}", "Port": 4222} for i in (1, 2, 3)]
ROUTES = [{"Address": f"10.0.0.{i}", "Port": 6222} for i in (1, 2, 3)]
PASSWORDS = {role: f"{role}-Zq8_x-{i}" for i, role in enumerate(natsauth.ROLES)}
ROUTE_PASSWORD = "route-Hk3-9_w"
API_TOKEN = "token-Mn4_x"
NOMAD_API_ENV = {"NOMAD_ADDR", "NOMAD_TOKEN", "NOMAD_NAMESPACE", "NOMAD_REGION"}
"""Nomad's documented client variables (https://developer.hashicorp.com/nomad/commands)."""
WORKER_KINDS = {spec.kind for spec in get_args(WorkerSpec)}
ROLES_OF_COMMAND = {
    "controller": {"controller"},
    "gateway": {"gateway"},
    "agent": {"agent"} | WORKER_KINDS,  # it connects as agent, its workers as their kinds
}
"""The NATS roles each command connects as (pipeline/cli/main.py, pipeline/instances/agent.py)."""


def variables() -> dict[str, dict[str, str]]:
    """The Nomad Variables, as `tessera deploy nomad` makes them, with sample secrets."""
    out = {}
    for job, roles in deploy.JOB_ROLES.items():
        items = {"users": json.dumps({r: PASSWORDS[r] for r in roles})}
        if job == "tessera-nats":
            items["route"] = ROUTE_PASSWORD
        if job == "tessera-gateway":
            items["api_token"] = API_TOKEN
        out[deploy.VAR_PREFIX + job] = items
    return out


def template_source(template: dict[str, Any]) -> str:
    text: str = template["data"]
    assert "\\\\" not in text, "a template with backslashes: unescape them here too"
    return text.replace('\\"', '"')


def render(template: dict[str, Any], alloc_index: str = "1") -> str:
    return gotemplate.render(
        template_source(template),
        env={
            "NOMAD_ALLOC_INDEX": alloc_index,
            # The host's address and port of each of the group's ports, as Nomad sets them.
            "NOMAD_HOST_ADDR_client": "10.0.0.11:4222",
            "NOMAD_HOST_ADDR_cluster": "10.0.0.11:6222",
        },
        variables=variables(),
        services={"tessera-nats": SERVERS, "tessera-nats-cluster": ROUTES},
    )


def variable_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        name: body.get("default")
        for entry in doc.get("variable", [])
        for name, body in entry.items()
    }


_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


def interpolate(value: str, job: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``value`` with Nomad's ``${...}`` filled in as Nomad would, from sample runtime values."""
    # A dispatched instance's meta: the job's defaults and what the provider sends.
    sent = dispatch_meta(LaunchRequest("inst-1", {"jit": 2}, kind="jit"), "tessera")
    meta = {**(block(job, "meta") or {}), **sent}
    runtime = {
        "NOMAD_SECRETS_DIR": "/secrets",
        "NOMAD_PORT_status": "8081",
        "NOMAD_ALLOC_ID": "5c6328f7-48c5-4d03-bada-91ef2e904d0d",
        "NOMAD_NAMESPACE": "default",
        "node.unique.id": "f1e2d3c4",
        "attr.unique.network.ip-address": "10.0.0.9",
    }

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("var."):
            return str(defaults[name.removeprefix("var.")])
        if name.startswith("NOMAD_META_"):
            return str(meta[name.removeprefix("NOMAD_META_")])
        assert name in runtime, f"no sample for Nomad's ${{{name}}}"
        return runtime[name]

    return _INTERPOLATION.sub(one, value)


def tessera_tasks(path: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(job name, job body, task body) of every task that runs Tessera's image."""
    name, job = parse(path)
    return [
        (name, job, task)
        for _, _, _, task in tasks(job)
        if (block(task, "config") or {}).get("image") == "${var.image}"
    ]


def task_env(path: Path, job: dict[str, Any], task: dict[str, Any]) -> dict[str, str]:
    """The task's environment as Nomad gives it: its env block and its env templates."""
    defaults = variable_defaults(parse_doc(path))
    env = {k: interpolate(str(v), job, defaults) for k, v in (block(task, "env") or {}).items()}
    for template in task.get("template", []):
        if template.get("env") is True:
            for line in render(template).splitlines():
                if line.strip():
                    key, _, value = line.partition("=")
                    assert key not in env, f"{key} set twice"
                    env[key] = value
    return env


TESSERA_JOBS = [p for p in JOBS if tessera_tasks(p)]


@pytest.mark.parametrize("path", TESSERA_JOBS, ids=lambda p: p.name)
def test_every_job_runs_a_real_tessera_command(path: Path) -> None:
    parser = cli._parser()
    for name, _, task in tessera_tasks(path):
        config = block(task, "config") or {}
        assert config["entrypoint"] == ["tessera"], name
        args = parser.parse_args(config["args"])  # SystemExit here: not a tessera command
        assert args.command in ROLES_OF_COMMAND, f"{name} runs `tessera {args.command}`"


@pytest.mark.parametrize("path", TESSERA_JOBS, ids=lambda p: p.name)
def test_every_env_var_is_a_setting_of_the_command_it_runs(path: Path) -> None:
    """Each variable is one of Tessera's settings (or aliases) that the job's command reads, or
    one of Nomad's own; and each value is one Tessera accepts."""
    tessera = {n for f in declare.settings(Config) for n in declare.env_names(f)}
    instance = {
        n
        for f in declare.settings(instance_settings.InstanceConfig)
        for n in (*declare.env_names(f), *declare.fallback_names(f))
    }
    for name, job, task in tessera_tasks(path):
        command = (block(task, "config") or {})["args"][0]
        known = (
            tessera | NOMAD_API_ENV | (instance if command in ("controller", "agent") else set())
        )
        env = task_env(path, job, task)
        unknown = set(env) - known
        assert not unknown, f"{name} (`tessera {command}`) sets {unknown}: not its settings"
        with tempfile.TemporaryDirectory() as tmp:
            env["TESSERA_NATS_USERS"] = str(Path(tmp) / "users.json")  # a file of the task's
            load_config(env=env)  # ConfigError here: a value Tessera refuses
            if command in ("controller", "agent"):
                instance_settings.load(env=env)


@pytest.mark.parametrize("path", TESSERA_JOBS, ids=lambda p: p.name)
def test_tessera_jobs_get_every_nats_server_and_their_roles_passwords(
    path: Path, tmp_path: Path
) -> None:
    for name, job, task in tessera_tasks(path):
        env = task_env(path, job, task)
        assert env["NATS_URL"] == ",".join(f"nats://{s['Address']}:{s['Port']}" for s in SERVERS)
        (users,) = [t for t in task["template"] if "nomadVar" in t["data"] and "users" in t["data"]]
        # The job's own Variable (a task reads nomad/jobs/<its job> with no ACL policy).
        assert f'nomadVar "nomad/jobs/{name}"' in template_source(users)
        assert users["destination"].startswith("secrets/"), "passwords belong in secrets/"
        raw_env = block(task, "env") or {}
        assert raw_env["TESSERA_NATS_USERS"] == "${NOMAD_SECRETS_DIR}/" + users[
            "destination"
        ].removeprefix("secrets/")
        file = tmp_path / f"{name}-users.json"
        file.write_text(render(users))
        command = (block(task, "config") or {})["args"][0]
        assert set(deploy.JOB_ROLES[name]) == ROLES_OF_COMMAND[command], name
        config = load_config(env={"NATS_URL": env["NATS_URL"], "TESSERA_NATS_USERS": str(file)})
        for role in ROLES_OF_COMMAND[command]:
            url = resolve_url(config, role)
            assert url.count(f"{role}:{PASSWORDS[role]}@") == len(SERVERS), (name, role)
        assert set(natsauth.load(file)) == ROLES_OF_COMMAND[command], "more passwords than needed"


def test_the_gateways_share_one_api_token() -> None:
    path = ROOT / "deploy" / "nomad" / "gateway.nomad.hcl"
    ((name, job, task),) = tessera_tasks(path)
    assert task_env(path, job, task)["TESSERA_API_TOKEN"] == API_TOKEN


def test_nats_job_runs_the_config_tessera_renders() -> None:
    """The server config of the Nomad job is render_config's (the one `tessera up`, `tessera
    cluster` and `tessera deploy nats` run), rendered with the job's sample values."""
    path = ROOT / "deploy" / "nomad" / "nats.nomad.hcl"
    name, job = parse(path)
    ((_, group),) = blocks(job, "group")
    ((_, task),) = blocks(group, "task")
    ports = {
        label: body["static"]
        for entry in block(group, "network")["port"]
        for label, body in entry.items()
    }
    (conf,) = task["template"]
    mount = block(task, "volume_mount") or {}
    expected = render_config(
        store_dir=Path(mount["destination"]) / "jetstream",
        max_payload=Config().nats_max_payload,
        extra=f'http: "0.0.0.0:{ports["monitor"]}"\n',
        passwords=PASSWORDS,
        cluster=ClusterConfig(
            server_name="tessera-nats-1",
            listen=f"0.0.0.0:{ports['cluster']}",
            routes=tuple(f"nats-route://{r['Address']}:{r['Port']}" for r in ROUTES),
            route_password=ROUTE_PASSWORD,
            # A container's own address is not what the other servers and the clients reach:
            # it advertises its host's.
            advertise="10.0.0.11:6222",
            client_advertise="10.0.0.11:4222",
        ),
    )
    regenerate = (
        "the job's config template is not Tessera's config: put the output of python -c "
        "'from pipeline.cli.deploy import nats_config_template; print(nats_config_template())' "
        "into deploy/nomad/nats.nomad.hcl"
    )
    assert render(conf, alloc_index="1") == expected, regenerate
    assert template_source(conf) + "\n" == deploy.nats_config_template(), regenerate
    # Started as EmbeddedNats starts it: the config, then the client address and port.
    config = block(task, "config") or {}
    assert config["args"] == [
        "-c", "/" + conf["destination"], "-a", "0.0.0.0", "-p", str(ports["client"]),
    ]  # fmt: skip
    check = next(s for s in group["service"] if s["name"] == "tessera-nats")["check"][0]
    assert check["port"] == "monitor"


def test_rendered_jobs_are_the_files_with_their_variables_set(tmp_path: Path) -> None:
    values = deploy.JobVars(
        image="registry.example.com/tessera:1.2",
        nats_image="nats:2.11-alpine",
        datacenters=("eu-1", "eu-2"),
        namespace="media",
        instance_provider="agents",
    ).values()
    commands = deploy.write_nomad(tmp_path, values)
    for path in JOBS:
        source, rendered = parse_doc(path), parse_doc(tmp_path / path.name)
        for entry in source["variable"]:
            for var, body in entry.items():
                if var in values:
                    value = values[var]
                    body["default"] = list(value) if isinstance(value, tuple) else value
        assert rendered == source, f"{path.name}: rendered is not the file with its vars set"
        declared = variable_defaults(source)
        assert set(declared) >= {"datacenters", "namespace"}, path.name
        assert parse(tmp_path / path.name)[1]["namespace"] == "${var.namespace}", (
            "every job in the chosen namespace"
        )
    # The Variables: one per job, with the items its templates read, in the namespace.
    for job in deploy.JOB_ROLES:
        (put,) = [c for c in commands.splitlines() if f" nomad/jobs/{job} " in c]
        assert "-namespace=media" in put
        path = next(p for p in JOBS if parse(p)[0] == job)
        read = set(re.findall(r"\.(\w+)\.Value", path.read_text()))
        given = {item.split("=", 1)[0] for item in shlex.split(put) if "=@" in item}
        assert read == given, f"{job} reads {read} from its Variable, deploy.sh puts {given}"
        users = tmp_path / "secrets" / f"{job}-users.json"
        assert set(natsauth.load(users)) == set(deploy.JOB_ROLES[job])
        assert users.stat().st_mode & 0o777 == 0o600
    runs = [
        Path(shlex.split(c)[-1]).name
        for c in commands.splitlines()
        if c.startswith("nomad job run")
    ]
    assert runs == [
        "nats.nomad.hcl",
        "agent.nomad.hcl",
        "controller.nomad.hcl",
        "gateway.nomad.hcl",
    ]


def test_tessera_deploy_nomad_writes_and_keeps_the_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cluster"
    assert cli.main(["deploy", "nomad", "--out", str(out), "--image", "tessera:9"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("nats.nomad.hcl") < printed.index("gateway.nomad.hcl")
    assert "nomad var put" in printed and "instance.nomad.hcl" in printed
    first = natsauth.load(out / "secrets" / "nats-users.json")
    route = (out / "secrets" / "nats-route-password").read_text()
    assert not route.endswith("\n"), "nomad var put stores a file's bytes as they are"
    assert cli.main(["deploy", "nomad", "--out", str(out)]) == 0  # again: same secrets
    assert natsauth.load(out / "secrets" / "nats-users.json") == first
    assert (out / "secrets" / "nats-route-password").read_text() == route
    capsys.readouterr()
    assert cli.main(["deploy", "nomad", "--out", str(out), "--namespace", "a b"]) == 1
    assert "--namespace 'a b'" in capsys.readouterr().err
