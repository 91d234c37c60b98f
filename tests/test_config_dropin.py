"""Issue 22, drop-in configuration: the JIT backend's documented environment variables and flags
(its orchestrator, agent and JIT program) reach the Tessera setting they mean, with their
documented defaults when none is set; two names of one setting with two values are refused.

Every case sets one name and checks the value of the setting it reaches (not only that parsing
passed), and that the value differs from the default (so reaching it is visible).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main as cli
from pipeline.config import declare
from pipeline.config import instances as instance_settings
from pipeline.config import settings as config_mod
from pipeline.config.instances import InstanceConfig, original_provider
from pipeline.config.settings import Config
from pipeline.errors import ConfigError
from pipeline.instances import agent as agent_mod
from pipeline.instances.base import resolve_provider
from pipeline.instances.docker import DockerProvider
from pipeline.instances.ec2 import Ec2Provider

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "coming-from-jit.md"

ISSUE_ENV = (
    "JIT_AWS_AMI_ID",
    "JIT_AWS_SECURITY_GROUP_ID",
    "JIT_AWS_SUBNET_ID",
    "JIT_AWS_KEY_PAIR_NAME",
    "JIT_AWS_AGENT_INSTANCE_PROFILE_NAME",
    "JIT_AWS_RESOURCES_TAGS",
    "AWS_REGION",
    "JIT_INSTANCE_AGENT_STATUS_POLL_INTERVAL",
    "JIT_INSTANCE_AGENT_STATUS_POLL_MAX_IDLE_TIME",
    "JIT_INSTANCE_AGENT_STATUS_POLL_MAX_UP_TIME",
    "JIT_IMAGE",
    "JIT_INSTANCE_AGENT_IMAGE",
    "JIT_INSTANCE_AGENT_PORT_MIN",
    "JIT_INSTANCE_AGENT_PORT_MAX",
    "JIT_VERBOSE",
    "MAIN_MODULE",
    "PUBLIC_IP",
)
"""The variables issue 22 found unread."""

ISSUE_FLAGS = (
    "--instance-provider-path",
    "--instance-agent-status-poll-interval",
    "--instance-agent-status-poll-max-idle-time",
    "--instance-agent-status-poll-max-up-time",
    "-t",
    "-i",
    "-p",
    "-v",
)
"""The flags issue 22 found missing."""

CFG, INST = "config", "instances"

# (variable, text, which settings, setting, value it must reach)
ENV_CASES: list[tuple[str, str, str, str, Any]] = [
    # the orchestrator
    ("JIT_ORCHESTRATOR_HOST", "0.0.0.0", CFG, "host", "0.0.0.0"),
    ("JIT_ORCHESTRATOR_PORT", "9000", CFG, "port", 9000),
    ("JIT_CAPACITY", "8", CFG, "capacity", 8),
    ("JIT_PUBLIC_IP", "203.0.113.7", CFG, "public_ip", "203.0.113.7"),
    ("PUBLIC_IP", "203.0.113.8", CFG, "public_ip", "203.0.113.8"),
    ("JIT_SESSION_RUNNING_TIMEOUT", "30", CFG, "session_running_timeout", 30.0),
    ("JIT_SESSION_IDLE_TIMEOUT", "45", CFG, "session_idle_timeout", 45.0),
    ("JIT_TURN", "1", CFG, "turn", True),
    ("JIT_VERBOSE", "1", CFG, "verbose", True),
    ("MAIN_MODULE", "agent", CFG, "main_module", "agent"),
    ("MAIN_MODULE", "orchestrator", CFG, "main_module", "orchestrator"),
    ("JIT_INSTANCE_PROVIDER_CLASS_PATH", "docker", INST, "provider", "docker"),
    ("JIT_INSTANCE_READY_TIMEOUT", "30", INST, "ready_timeout", 30.0),
    ("JIT_INSTANCE_AGENT_STATUS_POLL_INTERVAL", "2", INST, "instance_poll_interval", 2.0),
    ("JIT_INSTANCE_AGENT_STATUS_POLL_MAX_IDLE_TIME", "60", INST, "max_idle_time", 60.0),
    ("JIT_INSTANCE_AGENT_STATUS_POLL_MAX_UP_TIME", "3600", INST, "max_up_time", 3600.0),
    # Docker (the single-instance mode)
    ("JIT_IMAGE", "reg.example/jit:7", INST, "image", "reg.example/jit:7"),
    ("JIT_INSTANCE_AGENT_IMAGE", "reg.example/agent:7", INST, "image", "reg.example/agent:7"),
    ("JIT_INSTANCE_AGENT_PORT_MIN", "8082", INST, "agent_port_min", 8082),
    ("JIT_INSTANCE_AGENT_PORT_MAX", "8095", INST, "agent_port_max", 8095),
    ("JIT_CONTAINER_PORT_MIN", "50000", INST, "container_port_min", 50000),
    ("JIT_CONTAINER_PORT_MAX", "60000", INST, "container_port_max", 60000),
    ("DOCKER_REGISTRY_USERNAME", "me", INST, "registry_username", "me"),
    ("DOCKER_REGISTRY_PASSWORD", "s3cret", INST, "registry_password", "s3cret"),
    # AWS EC2
    ("JIT_AWS_AMI_ID", "ami-0123456789abcdef0", INST, "aws_ami", "ami-0123456789abcdef0"),
    ("JIT_AWS_SECURITY_GROUP_ID", "sg-0123", INST, "aws_security_group", "sg-0123"),
    ("JIT_AWS_SUBNET_ID", "subnet-0123", INST, "aws_subnet", "subnet-0123"),
    ("JIT_AWS_KEY_PAIR_NAME", "ops-key", INST, "aws_key_name", "ops-key"),
    ("JIT_AWS_AGENT_INSTANCE_PROFILE_NAME", "jit-agent", INST, "aws_instance_profile", "jit-agent"),
    (
        "JIT_AWS_RESOURCES_TAGS",
        "team=a,cost=b",
        INST,
        "aws_extra_tags",
        (("team", "a"), ("cost", "b")),
    ),
    ("AWS_REGION", "eu-west-1", INST, "aws_region", "eu-west-1"),
    # the agent
    ("JIT_INSTANCE_AGENT_HOST", "127.0.0.1", INST, "agent_host", "127.0.0.1"),
    ("JIT_INSTANCE_AGENT_PORT", "8085", INST, "agent_port", 8085),
]

# (command line after `tessera`, which settings, setting, value it must reach)
FLAG_CASES: list[tuple[list[str], str, str, Any]] = [
    # the orchestrator
    (["up", "--host", "0.0.0.0"], CFG, "host", "0.0.0.0"),
    (["up", "--port", "9000"], CFG, "port", 9000),
    (["up", "--capacity", "8"], CFG, "capacity", 8),
    (["up", "--public-ip", "203.0.113.7"], CFG, "public_ip", "203.0.113.7"),
    (["up", "--session-running-timeout", "30"], CFG, "session_running_timeout", 30.0),
    (["up", "--session-idle-timeout", "45"], CFG, "session_idle_timeout", 45.0),
    (["up", "--turn"], CFG, "turn", True),
    (["up", "-t"], CFG, "turn", True),
    (["up", "--verbose"], CFG, "verbose", True),
    (["up", "-v"], CFG, "verbose", True),
    (["up", "--instance-provider-path", "ec2"], INST, "provider", "ec2"),
    (["up", "--instance-ready-timeout", "30"], INST, "ready_timeout", 30.0),
    (["up", "--instance-agent-status-poll-interval", "2"], INST, "instance_poll_interval", 2.0),
    (["up", "--instance-agent-status-poll-max-idle-time", "60"], INST, "max_idle_time", 60.0),
    (["up", "--instance-agent-status-poll-max-up-time", "3600"], INST, "max_up_time", 3600.0),
    (["up", "--image", "registry.example/jit:7"], INST, "image", "registry.example/jit:7"),
    (["up", "-i", "registry.example/jit:8"], INST, "image", "registry.example/jit:8"),
    (["up", "--prune"], INST, "prune", True),
    (["up", "-p"], INST, "prune", True),
    (["up", "--remove-running"], INST, "remove_running", True),
    (["up", "--keep-containers"], INST, "keep_containers", True),
    (["up", "--dev"], INST, "dev", True),
    # the agent
    (["agent", "--agent-host", "127.0.0.1"], INST, "agent_host", "127.0.0.1"),
    (["agent", "--agent-port", "8085"], INST, "agent_port", 8085),
    (["agent", "-v"], CFG, "verbose", True),
    # the JIT program
    (["jit", "-i", "a.mov", "--host", "0.0.0.0"], CFG, "host", "0.0.0.0"),
    (["jit", "-i", "a.mov", "--port", "9000"], CFG, "port", 9000),
    (["jit", "-i", "a.mov", "-v"], CFG, "verbose", True),
    (["jit", "-i", "a.mov", "-t"], CFG, "turn", True),
]

# The JIT program's session options: (flag, text, POST /session field, value)
JIT_OPTIONS: list[tuple[str, str, str, Any]] = [
    ("--lowres", "1", "lowres", 1),
    ("--sample-aspect-num", "16", "sample_aspect_num", 16),
    ("--sample-aspect-den", "15", "sample_aspect_den", 15),
    ("--colorspace", "bt709", "colorspace", "bt709"),
    ("--threads", "2", "threads", 2),
    ("--thread-type", "frame", "thread_type", "frame"),
    ("--width", "640", "width", 640),
    ("--height", "360", "height", 360),
    ("--frame-rate-num", "30000", "frame_rate_num", 30000),
    ("--frame-rate-den", "1001", "frame_rate_den", 1001),
    ("--region", "eu-west-1", "region", "eu-west-1"),
    ("--bitrate", "5000", "bitrate", 5000),
    ("--channels", "6", "channels", 6),
    ("--cho", "2", "cho", 2),
    ("--duration", "250", "duration", 250),
]


def _load(
    which: str, env: dict[str, str] | None = None, ns: argparse.Namespace | None = None
) -> Any:
    """Tessera's or the instance settings, from ``env`` alone (none of this process's)."""
    module: Any = config_mod if which == CFG else instance_settings
    if ns is not None:
        return module.from_namespace(ns, env=env or {})
    return module.load(env=env or {})


def _default(which: str, name: str) -> Any:
    cls = Config if which == CFG else InstanceConfig
    return next(f.default for f in declare.settings(cls) if f.name == name)


@pytest.mark.parametrize(("variable", "text", "which", "name", "value"), ENV_CASES)
def test_each_documented_variable_reaches_its_setting(
    variable: str, text: str, which: str, name: str, value: Any
) -> None:
    assert value != _default(which, name), "pick a value that is not the default"
    assert getattr(_load(which, {variable: text}), name) == value


@pytest.mark.parametrize(("argv", "which", "name", "value"), FLAG_CASES)
def test_each_documented_flag_reaches_its_setting(
    argv: list[str], which: str, name: str, value: Any
) -> None:
    assert value != _default(which, name), "pick a value that is not the default"
    args = cli._parser().parse_args(argv)
    assert getattr(_load(which, ns=args), name) == value


def test_the_jit_programs_command_line() -> None:
    argv = ["jit", "-i", "/m/a.mov", "/m/b.wav", "channel_count=6", "id=mix"]
    for flag, text, _, _ in JIT_OPTIONS:
        argv += [flag, text]
    args = cli._parser().parse_args([*argv, "--bt2100-tone-mapping", "--technical-timeout", "30"])
    for _, _, field, value in JIT_OPTIONS:
        assert getattr(args, f"opt_{field}") == value, field
    assert args.opt_bt2100_tone_mapping is True
    assert args.technical_timeout == 30.0  # becomes JIT_SESSION_IDLE_TIMEOUT for the run
    from pipeline.cli.jit import parse_inputs

    assert parse_inputs(args.input) == [
        {"url": "/m/a.mov"},
        {"url": "/m/b.wav", "channel_count": 6, "id": "mix"},
    ]


def test_the_documented_defaults_when_nothing_is_set() -> None:
    config = config_mod.load(env={})
    assert (config.host, config.port, config.capacity) == ("127.0.0.1", 8080, 64)
    assert config.public_ip is None
    assert (config.session_running_timeout, config.session_idle_timeout) == (120, 120)
    assert (config.turn, config.turn_port, config.turn_tls_port) == (False, 3478, 5349)
    assert config.verbose is False and config.main_module is None
    icfg = instance_settings.load(env={})
    assert icfg.provider == "local"
    assert (icfg.instance_poll_interval, icfg.max_idle_time, icfg.max_up_time) == (5, 600, 14400)
    assert icfg.ready_timeout == 120
    assert (icfg.agent_host, icfg.agent_port) == ("0.0.0.0", 8081)
    assert (icfg.agent_port_min, icfg.agent_port_max) == (8081, 8090)
    assert (icfg.container_port_min, icfg.container_port_max) == (49152, 65535)
    assert icfg.image is None and icfg.container_image == "tessera:latest"
    assert not (icfg.prune or icfg.remove_running or icfg.keep_containers or icfg.dev)
    assert icfg.aws_key_name == "JIT-Key-Pair" and icfg.aws_instance_type == "c5n.xlarge"
    assert icfg.aws_managed_tag_key == "Managing-JIT-Orchestrator-ID"
    assert (icfg.aws_ami, icfg.aws_security_group, icfg.aws_subnet) == (None, None, None)
    assert (icfg.aws_instance_profile, icfg.aws_region, icfg.aws_extra_tags) == (None, None, ())
    assert (icfg.registry_username, icfg.registry_password) == (None, None)


def test_the_cases_cover_every_name_the_issue_lists() -> None:
    assert set(ISSUE_ENV) <= {case[0] for case in ENV_CASES}
    typed = {token for argv, *_ in FLAG_CASES for token in argv if token.startswith("-")}
    assert set(ISSUE_FLAGS) <= typed


def test_dev_is_the_documented_shortcut() -> None:
    args = cli._parser().parse_args(["up", "--dev"])
    icfg = instance_settings.from_namespace(args, env={})
    assert icfg.prune and icfg.remove_running and icfg.container_image == "tessera:dev"
    assert set(instance_settings.DEV_ALSO) == {"verbose", "turn"}
    assert instance_settings.load(env={"JIT_DEV": "1"}).dev


# --- MAIN_MODULE -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "module", "command"),
    [
        ([], "orchestrator", "up"),
        (["--port", "9000"], "orchestrator", "up"),
        ([], "agent", "agent"),
        (["--agent-port", "8082"], "agent", "agent"),
    ],
)
def test_main_module_picks_the_program(argv: list[str], module: str, command: str) -> None:
    line = cli.with_main_module(argv, {"MAIN_MODULE": module})
    assert line == [command, *argv]
    args = cli._parser().parse_args(line)
    assert args.run is (agent_mod.run if command == "agent" else cli._cmd_up)


def test_main_module_never_overrides_a_command_or_help() -> None:
    env = {"MAIN_MODULE": "agent"}
    assert cli.with_main_module(["config"], env) == ["config"]
    assert cli.with_main_module(["--help"], env) == ["--help"]
    assert cli.with_main_module([], {}) == []
    assert cli.with_main_module([], {"MAIN_MODULE": ""}) == []
    with pytest.raises(ConfigError, match=r"MAIN_MODULE='jit': must be one of orchestrator, agent"):
        cli.with_main_module([], {"MAIN_MODULE": "jit"})


# --- the original's provider classes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "provider"),
    [
        ("orchestrator.instance_providers.single_instance.SingleInstanceProvider", "docker"),
        ("jit.providers.DockerInstanceProvider", "docker"),
        ("orchestrator.instance_providers.aws.AWSInstanceProvider", "ec2"),
        ("jit.providers.aws.Aws_Ec2_Instance_Provider", "ec2"),
    ],
)
def test_the_originals_class_paths_become_tesseras_providers(path: str, provider: str) -> None:
    icfg = instance_settings.load(env={"JIT_INSTANCE_PROVIDER_CLASS_PATH": path})
    assert icfg.provider == provider
    args = cli._parser().parse_args(["up", "--instance-provider-path", path])
    assert instance_settings.from_namespace(args, env={}).provider == provider
    expected = DockerProvider if provider == "docker" else Ec2Provider
    assert resolve_provider(icfg.provider) is expected


@pytest.mark.parametrize(
    "path",
    [
        "mycompany.fleet:AWSInstanceProvider",  # the colon: a class of your own
        "pipeline.instances.docker.DockerProvider",  # Tessera's own path
        "mycompany.fleet.FleetProvider",
        "mycompany.fleet.AwsThing",
    ],
)
def test_other_class_paths_are_taken_as_they_are(path: str) -> None:
    assert original_provider(path) is None
    assert instance_settings.load(env={"JIT_INSTANCE_PROVIDER_CLASS_PATH": path}).provider == path
    assert resolve_provider("pipeline.instances.docker.DockerProvider") is DockerProvider


# --- two names, two values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "which"),
    [
        ({"JIT_IMAGE": "jit:1", "JIT_INSTANCE_AGENT_IMAGE": "agent:1"}, INST),
        ({"JIT_CONTAINER_IMAGE": "a:1", "JIT_IMAGE": "b:1"}, INST),
        ({"TESSERA_VERBOSE": "0", "JIT_VERBOSE": "1"}, CFG),
        ({"JIT_PUBLIC_IP": "192.0.2.1", "PUBLIC_IP": "192.0.2.2"}, CFG),
        ({"JIT_AWS_AMI": "ami-1", "JIT_AWS_AMI_ID": "ami-2"}, INST),
        ({"JIT_AWS_SECURITY_GROUP": "sg-1", "JIT_AWS_SECURITY_GROUP_ID": "sg-2"}, INST),
        ({"JIT_AWS_SUBNET": "subnet-1", "JIT_AWS_SUBNET_ID": "subnet-2"}, INST),
        ({"JIT_AWS_KEY_NAME": "k1", "JIT_AWS_KEY_PAIR_NAME": "k2"}, INST),
        ({"JIT_AWS_INSTANCE_PROFILE": "p1", "JIT_AWS_AGENT_INSTANCE_PROFILE_NAME": "p2"}, INST),
        ({"JIT_AWS_EXTRA_TAGS": "a=1", "JIT_AWS_RESOURCES_TAGS": "a=2"}, INST),
        ({"JIT_INSTANCE_POLL_INTERVAL": "1", "JIT_INSTANCE_AGENT_STATUS_POLL_INTERVAL": "2"}, INST),
        (
            {
                "JIT_INSTANCE_MAX_IDLE_TIME": "1",
                "JIT_INSTANCE_AGENT_STATUS_POLL_MAX_IDLE_TIME": "2",
            },
            INST,
        ),
        (
            {"JIT_INSTANCE_MAX_UP_TIME": "1", "JIT_INSTANCE_AGENT_STATUS_POLL_MAX_UP_TIME": "2"},
            INST,
        ),
        ({"JIT_CONTAINER_AGENT_PORT_MIN": "8081", "JIT_INSTANCE_AGENT_PORT_MIN": "8082"}, INST),
        ({"JIT_CONTAINER_AGENT_PORT_MAX": "8090", "JIT_INSTANCE_AGENT_PORT_MAX": "8091"}, INST),
    ],
)
def test_two_names_of_one_setting_with_two_values_are_refused(
    env: dict[str, str], which: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(which, env)
    message = str(info.value)
    assert "\n" not in message
    for name, text in env.items():
        assert f"{name}={text!r}" in message


def test_two_names_with_one_value_are_fine() -> None:
    env = {
        "JIT_IMAGE": "jit:1",
        "JIT_INSTANCE_AGENT_IMAGE": "jit:1",
        "JIT_CONTAINER_IMAGE": "jit:1",
    }
    assert instance_settings.load(env=env).image == "jit:1"
    assert config_mod.load(env={"TESSERA_VERBOSE": "true", "JIT_VERBOSE": "1"}).verbose


def test_aws_region_is_a_fallback_not_a_rival() -> None:
    env = {"AWS_REGION": "us-east-1", "JIT_AWS_REGION": "eu-west-1"}
    assert instance_settings.load(env=env).aws_region == "eu-west-1"


def test_two_flags_of_one_setting_with_two_values_are_refused() -> None:
    parser = cli._parser()
    with pytest.raises(ConfigError, match=r"-i='a:1' and --image='b:1'"):
        instance_settings.from_namespace(parser.parse_args(["up", "-i", "a:1", "--image", "b:1"]))
    args = parser.parse_args(
        ["up", "--instance-provider", "docker", "--instance-provider-path", "ec2"]
    )
    with pytest.raises(
        ConfigError, match="--instance-provider='docker' and --instance-provider-path='ec2'"
    ):
        instance_settings.from_namespace(args, env={})
    assert config_mod.from_namespace(parser.parse_args(["up", "-v", "--verbose"]), env={}).verbose


def test_no_name_belongs_to_two_settings() -> None:
    owner: dict[str, str] = {}
    for cls in (Config, InstanceConfig):
        for f in declare.settings(cls):
            names = (*declare.env_names(f), *declare.fallback_names(f), *declare.flag_names(f))
            for name in names:
                assert owner.setdefault(name, f.name) == f.name, f"{name}: {owner[name]}, {f.name}"


def test_child_processes_get_every_name_so_an_old_alias_cannot_contradict() -> None:
    config = config_mod.load(env={"PUBLIC_IP": "192.0.2.1"}, flags={"public_ip": "192.0.2.9"})
    env = {"PUBLIC_IP": "192.0.2.1", **config_mod.to_env(config)}
    assert env["JIT_PUBLIC_IP"] == env["PUBLIC_IP"] == "192.0.2.9"
    assert config_mod.load(env=env).public_ip == "192.0.2.9"


# --- tessera config, as a user runs it -----------------------------------------------------------


def _run(env: dict[str, str], *argv: str, home: Path) -> subprocess.CompletedProcess[str]:
    ours = re.compile(r"^(JIT_|TESSERA_|NATS_|DOCKER_|NOMAD_|AWS_REGION$|MAIN_MODULE$|PUBLIC_IP$)")
    base = {k: v for k, v in os.environ.items() if not ours.match(k)}
    base.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"))
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_tessera_config_shows_every_name_of_every_setting(tmp_path: Path) -> None:
    env = {"JIT_AWS_AMI_ID": "ami-0abc", "AWS_REGION": "eu-west-1"}
    done = _run(env, "config", "-p", home=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    tokens = {token for line in lines for token in line.split()}
    for cls in (Config, InstanceConfig):
        for f in declare.settings(cls):
            for name in (*declare.env_names(f), *declare.fallback_names(f), *declare.flag_names(f)):
                assert name in tokens, f"{name} missing from `tessera config`"
    # A setting's aliases are on the lines below its own names, in the same columns.
    at = next(i for i, line in enumerate(lines) if line.startswith("--aws-ami "))
    assert lines[at].split()[:3] == ["--aws-ami", "JIT_AWS_AMI", "ami-0abc"]
    assert lines[at + 1].split() == ["JIT_AWS_AMI_ID"]
    at = next(i for i, line in enumerate(lines) if line.startswith("--prune "))
    assert lines[at].split()[:3] == ["--prune", "JIT_CONTAINER_PRUNE", "True"]
    assert lines[at + 1].split() == ["-p"]
    region = next(line for line in lines if line.startswith("--aws-region "))
    assert region.split()[:3] == ["--aws-region", "JIT_AWS_REGION", "eu-west-1"]


def test_tessera_config_shows_what_dev_turns_on(tmp_path: Path) -> None:
    done = _run({}, "config", "--dev", home=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("--")]
    values = {row[0]: row[2] for row in rows if len(row) > 2}
    for flag in ("--verbose", "--turn", "--prune", "--remove-running", "--dev"):
        assert values[flag] == "True", flag


@pytest.mark.parametrize(
    ("env", "argv"),
    [
        ({"JIT_VERBOSE": "1", "TESSERA_VERBOSE": "0"}, ["config"]),
        ({"JIT_IMAGE": "jit:1", "JIT_INSTANCE_AGENT_IMAGE": "agent:1"}, ["config"]),
        ({}, ["config", "-i", "jit:1", "--image", "agent:1"]),
    ],
)
def test_a_conflict_is_one_line_and_a_non_zero_exit(
    env: dict[str, str], argv: list[str], tmp_path: Path
) -> None:
    done = _run(env, *argv, home=tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("tessera: error: "), done.stderr
    assert "two names of one setting" in errors[0]


def test_main_module_runs_the_program_it_names(tmp_path: Path) -> None:
    # The agent has no gateway flags, `up` has: which parser read the line shows who runs.
    agent = _run({"MAIN_MODULE": "agent"}, "--port", "9000", home=tmp_path)
    assert agent.returncode == 2 and "unrecognized arguments: --port 9000" in agent.stderr
    orchestrator = _run({"MAIN_MODULE": "orchestrator"}, "--port", "x", home=tmp_path)
    assert orchestrator.returncode == 2
    assert orchestrator.stderr.strip().endswith("tessera: error: --port='x': not a number")


# --- the page for people coming from the JIT backend ---------------------------------------------


def test_the_page_names_every_name_of_the_original() -> None:
    text = PAGE.read_text()
    promised = text.split("### The original's provider classes")[1].split("\n## ")[0]
    class_names = re.findall(r"`(\w+InstanceProvider)`", promised)
    for cls in (Config, InstanceConfig):
        for f in declare.settings(cls):
            extra = (*f.metadata["also_env"], *f.metadata["also_flags"], *declare.fallback_names(f))
            for name in extra:
                assert f"`{name}`" in text, f"{name} missing from docs/coming-from-jit.md"
    for name in (*ISSUE_ENV, *ISSUE_FLAGS):
        assert f"`{name}" in text, f"{name} missing from docs/coming-from-jit.md"
    assert len(class_names) >= 6
    for name in class_names:  # every class name the page promises is recognised
        assert original_provider(f"jit.providers.{name}") is not None, name
    readme = (ROOT / "README.md").read_text()
    assert "(docs/coming-from-jit.md)" in readme
