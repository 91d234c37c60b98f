"""``tessera deploy``: what a deployment on several machines runs, written for one cluster.

- ``tessera deploy nomad --out DIR``: the job files of ``deploy/nomad`` with their variables set
  (image, datacenters, namespace, the controller's instance provider), the secrets the jobs read
  from Nomad Variables as files (``DIR/secrets``: the NATS role passwords, the NATS route
  password, the gateway's API token), and the commands that store those secrets and run the
  jobs, in order (printed, and kept in ``DIR/deploy.sh``).
- ``tessera deploy nats --server-name NAME --routes HOST:PORT,... --out FILE``: the config of
  one nats-server of a cluster, for machines without Nomad. It is the config ``tessera up``,
  ``tessera cluster`` and the Nomad job run (:func:`pipeline.nats.server.render_config`): the
  users of :mod:`pipeline.nats.auth`, JetStream synced to disk, authenticated routes.

**Secrets in Nomad.** Each job reads the Nomad Variable at ``nomad/jobs/<job id>``, which its
tasks may read with no ACL policy (a workload's implicit access; dispatched instances use their
parent job's id). Each holds a ``users`` item (the ``TESSERA_NATS_USERS`` file) with only the
roles that job connects as (:data:`JOB_ROLES`): the gateway, which strangers talk to, has only
``gateway``'s password; the NATS servers get every role's, and ``route``, the route password.

**Why the job files are rendered by rewriting their** ``variable`` **blocks' defaults** (as text)
rather than written from python-hcl2's parse: the files keep their comments and layout (people
read them), the Go templates inside them stay byte for byte what was reviewed (python-hcl2's
writer re-quotes strings), python-hcl2 stays a development dependency, and a rendered file is a
plain job file that ``nomad job run`` takes with no ``-var``. A test parses every rendered file
with python-hcl2 and checks that it is the source with only those defaults changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.settings import Config
from pipeline.errors import ConfigError
from pipeline.nats import auth as natsauth
from pipeline.nats.server import ClusterConfig, render_config
from pipeline.runtime.secretfile import write_private

SOURCE_DIRS = (
    Path(__file__).resolve().parent / "nomad",  # a wheel's copy (pyproject: force-include)
    Path(__file__).resolve().parents[2] / "deploy" / "nomad",  # a source checkout
)

JOB_ROLES: dict[str, tuple[str, ...]] = {
    "tessera-nats": natsauth.ROLES,
    "tessera-controller": ("controller",),
    "tessera-gateway": ("gateway",),
    "tessera-agent": ("agent", "grabber", "stitcher", "jit"),
    "tessera-instance": ("agent", "grabber", "stitcher", "jit"),
    "tessera-grabber": ("agent", "grabber", "stitcher", "jit"),
    "tessera-stitcher": ("agent", "grabber", "stitcher", "jit"),
    "tessera-jit": ("agent", "grabber", "stitcher", "jit"),
}
"""The NATS roles each job connects as: its Variable's ``users`` holds only these. An agent
connects as ``agent`` and starts workers, each as its kind's role."""

RUN_ORDER = (
    ("nats", "the NATS JetStream cluster, first: everything else connects to it"),
    ("instance", "registers the parameterized instance job (dispatched by the controller)"),
    ("agent", "an agent on every client node"),
    ("controller", "projector, controller and instance pool"),
    ("gateway", "the HTTP gateway"),
)
"""The job files in the order they are run, each with why."""
POOLS = ("grabber", "stitcher", "jit")
"""Job files of optional agent pools of one worker kind, run when wanted."""

NATS_STORE_DIR = Path("/data/jetstream")
"""Where the Nomad job mounts the host volume for JetStream (``/data``)."""
NATS_CLUSTER_LISTEN = "0.0.0.0:6222"
NATS_MONITOR = "0.0.0.0:8222"
VAR_PREFIX = "nomad/jobs/"

_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.*-]{0,127}$")
_VARIABLE = re.compile(r'(?ms)^variable\s+"(?P<name>[A-Za-z0-9_]+)"\s*\{(?P<body>.*?)^\}')
_DEFAULT = re.compile(r"(?m)^(?P<lead>\s*default\s*=\s*)(?P<value>.*)$")


# --- the job files -------------------------------------------------------------------------


@dataclass(frozen=True)
class JobVars:
    """The values of the job files' ``variable`` blocks for one cluster (None: keep the file's
    default)."""

    image: str | None = None
    nats_image: str | None = None
    datacenters: tuple[str, ...] | None = None
    namespace: str | None = None
    instance_provider: str | None = None

    def values(self) -> dict[str, str | tuple[str, ...]]:
        """The given values by variable name, checked (ConfigError names a bad one)."""
        out: dict[str, str | tuple[str, ...]] = {}
        for flag, name, value, pattern in (
            ("--image", "image", self.image, _IMAGE),
            ("--nats-image", "nats_image", self.nats_image, _IMAGE),
            ("--namespace", "namespace", self.namespace, _NAME),
        ):
            if value is None:
                continue
            if not pattern.match(value):
                allowed = "._/:@-" if pattern is _IMAGE else "._-"
                raise ConfigError(f"{flag} {value!r}: use letters, digits and {allowed}")
            out[name] = value
        if self.datacenters is not None:
            bad = [dc for dc in self.datacenters if not _NAME.match(dc)]
            if bad or not self.datacenters:
                raise ConfigError(f"--datacenters {','.join(self.datacenters)!r}: bad names {bad}")
            out["datacenters"] = self.datacenters
        if self.instance_provider is not None:
            if self.instance_provider not in ("nomad", "agents"):
                raise ConfigError(
                    f"--instance-provider {self.instance_provider!r}: the Nomad controller "
                    "dispatches instances (nomad) or places work on the agents only (agents)"
                )
            out["instance_provider"] = self.instance_provider
        return out


def hcl_literal(value: str | Sequence[str]) -> str:
    """``value`` as an HCL expression (a string, or a list of strings)."""
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(json.dumps(v) for v in value) + "]"


def render_job(text: str, values: Mapping[str, str | Sequence[str]]) -> str:
    """Job file ``text`` with the defaults of the variables it declares among ``values`` set;
    every other byte as it was. Pure."""

    def one(block: re.Match[str]) -> str:
        name = block["name"]
        if name not in values:
            return block[0]
        literal = hcl_literal(values[name])
        body = _DEFAULT.sub(lambda m: m["lead"] + literal, block["body"], count=1)
        return block[0].replace(block["body"], body, 1)

    return _VARIABLE.sub(one, text)


def source_dir() -> Path:
    """Where this Tessera's job files are (the wheel's copy, else the checkout's)."""
    for candidate in SOURCE_DIRS:
        if candidate.is_dir():
            return candidate
    raise ConfigError("the Nomad job files are not installed (deploy/nomad of a source checkout)")


def job_files(source: Path) -> list[Path]:
    return sorted(source.glob("*.nomad.hcl"))


# --- secrets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """What the jobs read from their Nomad Variables."""

    passwords: dict[str, str]
    """NATS role -> password (:mod:`pipeline.nats.auth`)."""
    route_password: str
    """The password of the NATS servers' routes (user ``route``)."""
    api_token: str
    """The gateway's API token (``TESSERA_API_TOKEN``): the same in every gateway."""


def _secret_file(path: Path) -> str:
    """The secret in ``path``, made on first use: mode 0600 and no newline, since ``nomad var
    put key=@file`` stores a file's bytes as they are."""
    try:
        value = path.read_text().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    write_private(path, value)
    return value


def load_secrets(folder: Path, users: Path | None = None) -> Secrets:
    """The secrets kept in ``folder`` (made on first use; so rendering again keeps them), the
    role passwords from ``users`` when given (an existing cluster's ``TESSERA_NATS_USERS``)."""
    passwords = (
        natsauth.load(users)
        if users is not None
        else natsauth.load_or_create(folder / "nats-users.json")
    )
    missing = set(natsauth.ROLES) - set(passwords)
    if missing:
        raise ConfigError(f"NATS users file {users} has no password for {sorted(missing)}")
    return Secrets(
        passwords=passwords,
        route_password=_secret_file(folder / "nats-route-password"),
        api_token=_secret_file(folder / "api-token"),
    )


def variable_items(job: str, found: Secrets, folder: Path) -> dict[str, Path]:
    """The items of job ``job``'s Nomad Variable as files (written into ``folder``)."""
    users = folder / f"{job}-users.json"
    write_private(users, json.dumps({r: found.passwords[r] for r in JOB_ROLES[job]}))
    items = {"users": users}
    if job == "tessera-nats":
        items["route"] = folder / "nats-route-password"
    if job == "tessera-gateway":
        items["api_token"] = folder / "api-token"
    return items


def var_put(job: str, items: Mapping[str, Path], namespace: str) -> str:
    """The ``nomad var put`` command that stores job ``job``'s Variable."""
    args = ["nomad", "var", "put", "-force", f"-namespace={namespace}", VAR_PREFIX + job]
    args += [f"{key}=@{path}" for key, path in items.items()]
    return shlex.join(args)


# --- the NATS servers -----------------------------------------------------------------------


def nats_server_config(
    *,
    server_name: str,
    passwords: dict[str, str],
    route_password: str,
    routes: Sequence[str],
    store_dir: Path = NATS_STORE_DIR,
    cluster_listen: str = NATS_CLUSTER_LISTEN,
    monitor: str | None = NATS_MONITOR,
    max_payload: int | None = None,
    advertise: str | None = None,
    client_advertise: str | None = None,
) -> str:
    """The config of one nats-server of a Tessera cluster (its client address and port are
    flags: ``nats-server -c FILE -a HOST -p PORT``, as :class:`EmbeddedNats` starts it);
    ``advertise`` and ``client_advertise``: the cluster and client addresses the others are
    told, where the server's own are not reachable (:class:`ClusterConfig`). Pure."""
    return render_config(
        store_dir=store_dir,
        max_payload=max_payload or Config().nats_max_payload,
        extra=f'http: "{monitor}"\n' if monitor else "",
        passwords=passwords,
        cluster=ClusterConfig(
            server_name=server_name,
            listen=cluster_listen,
            routes=tuple(routes),
            route_password=route_password,
            advertise=advertise,
            client_advertise=client_advertise,
        ),
    )


def _mark(name: str) -> str:
    return f"TESSERA-TEMPLATE-{name}"


def nats_config_template(job: str = "tessera-nats") -> str:
    """The Go template of ``deploy/nomad/nats.nomad.hcl``'s server config: exactly
    :func:`nats_server_config`, with the passwords from the job's Nomad Variable, the server's
    name from its allocation index, its routes from the service ``tessera-nats-cluster``, and
    the addresses it advertises from its host's ports (a container's own address is not one the
    other servers and the clients reach). (The job file holds this text; a test renders both
    and compares them.) Pure."""
    marks = {role: _mark(role) for role in natsauth.ROLES}
    text = nats_server_config(
        server_name=f"tessera-nats-{_mark('index')}",
        passwords=marks,
        route_password=_mark("route"),
        routes=(f"nats-route://{_mark('address')}:{_mark('port')}",),
        advertise=_mark("cluster-host"),
        client_advertise=_mark("client-host"),
    )
    text = text.replace(_mark("cluster-host"), '{{ env "NOMAD_HOST_ADDR_cluster" }}')
    text = text.replace(_mark("client-host"), '{{ env "NOMAD_HOST_ADDR_client" }}')
    for role, mark in marks.items():
        text = text.replace(f'"{mark}"', f'{{{{ index $users "{role}" | toJSON }}}}')
    text = text.replace(f'"{_mark("route")}"', "{{ $route | toJSON }}")
    text = text.replace(_mark("index"), '{{ env "NOMAD_ALLOC_INDEX" }}')
    (route,) = [line for line in text.splitlines(keepends=True) if _mark("address") in line]
    each = (
        route.replace(_mark("route"), "{{ $route }}")
        .replace(_mark("address"), "{{ .Address }}")
        .replace(_mark("port"), "{{ .Port }}")
    )
    text = text.replace(
        route, '{{- range nomadService "tessera-nats-cluster" }}\n' + each + "{{- end }}\n"
    )
    return (
        f'{{{{ with nomadVar "{VAR_PREFIX}{job}" }}}}{{{{ $users := .users.Value | parseJSON }}}}'
        "{{ $route := .route.Value -}}\n" + text + "{{ end -}}\n"
    )


# --- the command ----------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pipeline.config import settings as config_mod

    parser = sub.add_parser(
        "deploy",
        help="write what a deployment on several machines runs (Nomad jobs, a NATS server's "
        "config)",
        description="Write the files a Tessera cluster runs, for your cluster: the Nomad jobs "
        "(`nomad`) or one nats-server's config (`nats`). docs/deploy.md walks through both.",
    )
    actions = parser.add_subparsers(dest="deploy_command", metavar="TARGET")
    actions.required = True

    nomad = actions.add_parser(
        "nomad",
        help="the Nomad job files, their secrets, and the commands to run them",
        description="Write deploy/nomad's job files with their variables set, the secrets the "
        "jobs read from Nomad Variables (made once, kept when rendering again) and deploy.sh: "
        "the `nomad var put` commands, then `nomad job run` in order.",
    )
    nomad.add_argument("--out", type=Path, required=True, help="folder to write into")
    nomad.add_argument("--image", help="the Tessera image (default: the files', tessera:latest)")
    nomad.add_argument("--nats-image", help="the nats-server image (default nats:2.10-alpine)")
    nomad.add_argument(
        "--datacenters", help="comma-separated Nomad datacenters (default: all, '*')"
    )
    nomad.add_argument("--namespace", help="Nomad namespace of every job (default: default)")
    nomad.add_argument(
        "--instance-provider",
        choices=("nomad", "agents"),
        help="the controller's: nomad (agents, plus tessera-instance dispatches when they are "
        "full; the default) or agents (only the agents that run)",
    )
    nomad.add_argument(
        "--nats-users",
        dest="users",
        type=Path,
        help="the role passwords of an existing cluster (TESSERA_NATS_USERS; default: made in "
        "OUT/secrets)",
    )
    config_mod.add_arguments(nomad, groups=("logging",))
    nomad.set_defaults(run=_cmd_nomad)

    nats = actions.add_parser(
        "nats",
        help="one nats-server's config, for a cluster of machines without Nomad",
        description="Write the config of one nats-server of a JetStream cluster: Tessera's users "
        "(from --nats-users / TESSERA_NATS_USERS, made there if missing), routes to the other "
        "servers with a shared route password, JetStream in --store-dir. Run it with "
        "`nats-server -c FILE -a 0.0.0.0 -p 4222`.",
    )
    nats.add_argument("--out", type=Path, required=True, help="the config file to write")
    nats.add_argument("--server-name", required=True, help="this server's name in the cluster")
    nats.add_argument(
        "--routes",
        required=True,
        help="the other servers' cluster addresses, comma-separated HOST:PORT (port 6222)",
    )
    nats.add_argument(
        "--cluster-listen", default=NATS_CLUSTER_LISTEN, help="where routes connect (0.0.0.0:6222)"
    )
    nats.add_argument(
        "--store-dir", type=Path, help="JetStream's folder (default: <data dir>/nats)"
    )
    nats.add_argument(
        "--monitor", default="127.0.0.1:8222", help="HTTP monitoring address ('' for none)"
    )
    nats.add_argument(
        "--route-password-file",
        type=Path,
        help="the routes' shared password (default: nats-route-password beside the users file; "
        "made there if missing: copy both files to every server)",
    )
    config_mod.add_arguments(nats, groups=("general", "nats", "logging"))
    nats.set_defaults(run=_cmd_nats)


def write_nomad(
    out: Path,
    values: Mapping[str, str | tuple[str, ...]],
    users: Path | None = None,
    source: Path | None = None,
) -> str:
    """Write the job files of ``source`` (default :func:`source_dir`) into ``out`` with
    ``values`` set, the jobs' secrets into ``out/secrets`` and ``out/deploy.sh``; return the
    script's commands."""
    out.mkdir(parents=True, exist_ok=True)
    for path in job_files(source or source_dir()):
        (out / path.name).write_text(render_job(path.read_text(), values))
    folder = (out / "secrets").resolve()
    found = load_secrets(folder, users)
    namespace = str(values.get("namespace", "default"))
    lines = []
    if namespace != "default":
        lines.append(shlex.join(["nomad", "namespace", "apply", namespace]))
    lines.append("# The secrets each job reads from its Nomad Variable (nomad/jobs/<job>):")
    lines += [var_put(job, variable_items(job, found, folder), namespace) for job in JOB_ROLES]

    def run(name: str) -> str:
        return shlex.join(["nomad", "job", "run", str((out / f"{name}.nomad.hcl").resolve())])

    for name, why in RUN_ORDER:
        if name == "instance" and values.get("instance_provider") == "agents":
            continue  # that controller dispatches nothing
        lines += [f"# {why}", run(name)]
    lines.append("# Pools of agents for one kind of worker, if you want them (they scale):")
    lines += [f"# {run(name)}" for name in POOLS]
    commands = "\n".join(lines) + "\n"
    script = out / "deploy.sh"
    script.write_text(
        f"#!/bin/sh\n# Tessera on Nomad: tessera deploy nomad wrote this.\nset -eu\n{commands}"
    )
    script.chmod(0o755)
    return commands


async def _cmd_nomad(config: Config, args: argparse.Namespace) -> int:
    del config
    datacenters = args.datacenters
    values = JobVars(
        image=args.image,
        nats_image=args.nats_image,
        datacenters=None
        if datacenters is None
        else tuple(d.strip() for d in datacenters.split(",") if d.strip()),
        namespace=args.namespace,
        instance_provider=args.instance_provider,
    ).values()
    commands = await asyncio.to_thread(write_nomad, args.out, values, args.users)
    print(
        f"Wrote the Nomad jobs to {args.out}, their secrets to {args.out / 'secrets'} (keep "
        "them safe)."
    )
    print(f"Run, in this order (also in {args.out / 'deploy.sh'}):\n")
    print(commands, end="")
    return 0


def write_nats(config: Config, args: argparse.Namespace) -> tuple[Path, Path]:
    """Write the server config ``tessera deploy nats`` was asked for; return the users file
    and the route password file it took (each made if missing)."""
    users = config.nats_users_file or config.data_dir / "nats-users.json"
    passwords = natsauth.load_or_create(users)
    route_file: Path = args.route_password_file or users.parent / "nats-route-password"
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    text = nats_server_config(
        server_name=args.server_name,
        passwords=passwords,
        route_password=_secret_file(route_file),
        routes=[r if "://" in r else f"nats-route://{r}" for r in routes],
        store_dir=(args.store_dir or config.nats_store_dir).resolve(),
        cluster_listen=args.cluster_listen,
        monitor=args.monitor or None,
        max_payload=config.nats_max_payload,
    )
    write_private(args.out, text)  # the role passwords are in it
    return users, route_file


async def _cmd_nats(config: Config, args: argparse.Namespace) -> int:
    users, route_file = await asyncio.to_thread(write_nats, config, args)
    print(f"Wrote {args.out} (users from {users}, route password from {route_file}). Run:")
    print(f"  nats-server -c {shlex.quote(str(args.out))} -a 0.0.0.0 -p 4222")
    return 0
