"""Pure instance logic: reaping, capacity, placement, provider loading and the settings.

Reaping and placement are functions of values, tested directly on a made-up clock and with
hypothesis (placement never exceeds a capacity, places every worker exactly once, and only
launches when nothing running has room).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import instances as instance_settings
from pipeline.config.settings import Config
from pipeline.errors import ConfigError
from pipeline.instances.base import (
    InstanceInfo,
    LaunchRequest,
    ProviderConfigError,
    load_provider,
    new_instance_id,
    resolve_provider,
)
from pipeline.instances.docker import free_slot, slot
from pipeline.instances.ec2 import user_data
from pipeline.instances.local import LocalInstanceProvider
from pipeline.instances.nomad import dispatch_meta, job_path
from pipeline.instances.ready import ready_line, status_url_of
from pipeline.instances.reaping import (
    InstanceView,
    Policy,
    Reap,
    Room,
    decide,
    launched,
    observe,
    place,
    reap_reason,
    rooms,
    totals,
)
from pipeline.messages.codec import decode_agent_command, encode
from pipeline.messages.control import StartWorker
from pipeline.messages.heartbeats import InstanceHeartbeat
from pipeline.messages.workers import GrabberSpec, JitSpec, StitcherSpec, WorkerSpec, tile_sizes

POLICY = Policy(max_idle=600, max_up=14400, ready_timeout=120, heartbeat_timeout=15)
CAPACITY = {"jit": 2, "grabber": 4, "stitcher": 1}


def ready(iid: str, now: float, **changes: Any) -> InstanceView:
    """A registered instance, launched a minute ago, that beat a second ago."""
    view = InstanceView(iid, launched_at=now - 60, capacity=CAPACITY, last_beat=now - 1)
    return dataclasses.replace(view, **changes)


def owned(iid: str, launched_at: float) -> InstanceInfo:
    return InstanceInfo(iid, "test", f"x-{iid}", "ready", launched_at)


# --- observing heartbeats --------------------------------------------------------------------


def test_observe_carries_durations_to_our_clock() -> None:
    # The agent's clock is an hour ahead; what counts is how long ago, not when.
    beat = InstanceHeartbeat(
        at=10_000.0 + 3600,
        instance_id="a",
        capacity=CAPACITY,
        used={"jit": 1},
        workers=("jit-s1",),
        started_at=10_000.0 + 3600 - 50,
        idle_since=10_000.0 + 3600 - 20,
    )
    view = observe(launched("a", CAPACITY, now=9_900.0), beat, received_at=10_000.0)
    assert view.ready and view.last_beat == 10_000.0
    assert view.launched_at == 9_900.0  # ours, from the launch
    assert view.idle_since == 9_980.0
    assert view.used == {"jit": 1} and view.workers == ("jit-s1",)
    stranger = observe(None, beat, received_at=10_000.0)
    assert stranger.launched_at == 9_950.0 and not stranger.managed


# --- reaping ---------------------------------------------------------------------------------


def test_reap_reasons_on_a_clock() -> None:
    now = 100_000.0
    assert reap_reason(ready("a", now), now, POLICY) is None
    not_yet = launched("b", CAPACITY, now - 100)
    assert reap_reason(not_yet, now, POLICY) is None
    assert reap_reason(launched("b", CAPACITY, now - 121), now, POLICY) == "not-ready"
    assert reap_reason(ready("c", now, last_beat=now - 16), now, POLICY) == "lost"
    old = ready("d", now, launched_at=now - 14401, used={"jit": 1})
    assert reap_reason(old, now, POLICY) == "max-up-time"
    assert reap_reason(ready("e", now, idle_since=now - 601), now, POLICY) == "idle"
    busy = ready("f", now, idle_since=None, used={"grabber": 1})
    assert reap_reason(busy, now, POLICY) is None
    assert reap_reason(ready("g", now, idle_since=now - 599), now, POLICY) is None


def test_decide_terminates_orphans_and_forgets_the_gone() -> None:
    now = 100_000.0
    known = {
        "idle": ready("idle", now, idle_since=now - 700),
        "fine": ready("fine", now, idle_since=now - 10),
        "died": ready("died", now),  # ours, but the provider no longer lists it
        "listed-soon": launched("listed-soon", CAPACITY, now - 3),  # the provider lags
        "visitor": ready("visitor", now, managed=False, last_beat=now - 30),
        "guest": ready("guest", now, managed=False),
    }
    listed = [
        owned("idle", now - 800),
        owned("fine", now - 800),
        owned("orphan", now - 500),
        owned("newborn", now - 5),  # launched a moment ago: its record may be on the way
    ]
    decision = decide(listed, known, now, POLICY)
    assert decision.terminate == (Reap("idle", "idle"), Reap("orphan", "orphaned"))
    assert decision.forget == ("died", "visitor")


def test_rooms_and_totals() -> None:
    now = 1000.0
    a = ready("a", now, used={"jit": 2, "grabber": 1})
    b = ready("b", now, used={"grabber": 3})
    assert rooms(a)["jit"] == Room(2, 2) and rooms(a)["jit"].free == 0
    assert rooms(a, {"stitcher": 1})["stitcher"] == Room(1, 1)
    assert totals([a, b]) == {"grabber": Room(4, 8), "jit": Room(2, 4), "stitcher": Room(0, 2)}


# --- placement -------------------------------------------------------------------------------


def test_placement_packs_waits_and_launches() -> None:
    now = 1000.0
    views = [
        ready("a", now, used={"grabber": 1, "stitcher": 1}),  # 3 grabbers free
        ready("b", now, used={"grabber": 3, "stitcher": 1}),  # 1 free: the tightest fit
        ready("full", now, used={"stitcher": 1}),
        launched("starting", {"stitcher": 1}, now - 10),
        ready("dying", now, last_beat=now - 60),  # lost: never used
    ]
    workers = [("g1", "grabber"), ("g2", "grabber"), ("s1", "stitcher"), ("s2", "stitcher")]
    workers += [("j1", "jit"), ("x1", "transcoder")]
    placement = place(workers, views, CAPACITY, now, POLICY)
    assert placement.assign == {"g1": "b", "g2": "a", "j1": "a"}
    assert placement.wait == {"s1": "starting"}
    assert placement.launch == (("s2",),)
    assert placement.impossible == ("x1",)


def test_an_idle_instance_takes_work_rather_than_a_new_one() -> None:
    now = 10_000.0
    idle = ready("idle", now, idle_since=now - 700)
    assert place([("j", "jit")], [idle], CAPACITY, now, POLICY).assign == {"j": "idle"}


KINDS = ("jit", "grabber", "stitcher")


@st.composite
def scenes(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[InstanceView], dict[str, int]]:
    now = 1000.0
    views = []
    for n in range(draw(st.integers(0, 5))):
        cap = {k: draw(st.integers(0, 3)) for k in KINDS}
        used = {k: draw(st.integers(0, cap[k])) for k in KINDS}
        beat = draw(st.sampled_from([None, now - 1, now - 100]))
        views.append(
            InstanceView(
                instance_id=f"i{n}",
                launched_at=now - draw(st.sampled_from([10.0, 200.0])),
                capacity=cap,
                used=used,
                last_beat=beat,
            )
        )
    workers = [(f"w{n}", draw(st.sampled_from(KINDS))) for n in range(draw(st.integers(0, 12)))]
    new_capacity = {k: draw(st.integers(0, 3)) for k in KINDS}
    return workers, views, new_capacity


@settings(max_examples=300, deadline=None)
@given(scenes())
def test_placement_properties(
    scene: tuple[list[tuple[str, str]], list[InstanceView], Mapping[str, int]],
) -> None:
    workers, views, new_capacity = scene
    now = 1000.0
    p = place(workers, views, new_capacity, now, POLICY)
    kind_of = dict(workers)
    launched_ids = [w for group in p.launch for w in group]
    everything = [*p.assign, *p.wait, *launched_ids, *p.impossible]
    assert sorted(everything) == sorted(kind_of)  # each worker exactly once
    by_id = {v.instance_id: v for v in views}
    for iid in {*p.assign.values(), *p.wait.values()}:
        view = by_id[iid]
        assert reap_reason(view, now, POLICY) in (None, "idle")
        for kind in KINDS:
            sent = [w for w, t in {**p.assign, **p.wait}.items() if t == iid and kind_of[w] == kind]
            assert view.used.get(kind, 0) + len(sent) <= view.capacity.get(kind, 0)
    for iid in p.assign.values():
        assert by_id[iid].ready
    for iid in p.wait.values():
        assert not by_id[iid].ready
    for group in p.launch:
        for kind in KINDS:
            assert sum(kind_of[w] == kind for w in group) <= new_capacity.get(kind, 0)
    # As few launches as the overflow of the busiest kind needs.
    need = 0
    for kind in KINDS:
        overflow = sum(kind_of[w] == kind for w in launched_ids)
        if overflow:
            need = max(need, math.ceil(overflow / new_capacity[kind]))
    assert len(p.launch) == need
    # Nothing launched for a kind that still had room somewhere usable.
    for w in launched_ids:
        kind = kind_of[w]
        for view in views:
            if reap_reason(view, now, POLICY) in (None, "idle"):
                taken = sum(
                    1
                    for x, t in {**p.assign, **p.wait}.items()
                    if t == view.instance_id and kind_of[x] == kind
                )
                assert view.used.get(kind, 0) + taken >= view.capacity.get(kind, 0)


# --- agent commands --------------------------------------------------------------------------


_TARGETS = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
_SPECS: st.SearchStrategy[WorkerSpec] = st.one_of(
    st.builds(
        GrabberSpec,
        key=_TARGETS,
        url=st.text(max_size=60),
        sizes=st.lists(st.tuples(st.integers(2, 4096), st.integers(2, 4096)), max_size=4).map(
            tile_sizes
        ),
        fps=st.floats(0.1, 240),
    ),
    st.builds(StitcherSpec, fp=_TARGETS),
    st.builds(JitSpec, session_id=_TARGETS),
)


@given(_SPECS)
def test_start_worker_carries_the_spec_whole(spec: WorkerSpec) -> None:
    command = decode_agent_command(encode(StartWorker(spec=spec)))
    assert isinstance(command, StartWorker)
    assert command.spec == spec and type(command.spec) is type(spec)
    assert command.spec.worker_id == f"{spec.kind}-{spec.target}"


def test_the_ready_line_names_the_status_url() -> None:
    line = ready_line("inst-1", "http://127.0.0.1:8081/status")
    assert status_url_of(line) == "http://127.0.0.1:8081/status"
    assert status_url_of("uvicorn: started") is None  # other output is not the ready line
    with pytest.raises(ValueError, match="names no status URL"):
        status_url_of(line.split("{")[0] + '{"instance_id": "inst-1"}')


# --- provider loading ------------------------------------------------------------------------


class MyProvider(LocalInstanceProvider):
    """A user's own provider class (here: the local one under another name)."""


def test_short_names_and_dotted_paths_resolve() -> None:
    assert resolve_provider("local") is LocalInstanceProvider
    assert resolve_provider("LOCAL") is LocalInstanceProvider
    assert resolve_provider(f"{__name__}:MyProvider") is MyProvider
    assert resolve_provider(f"{__name__}.MyProvider") is MyProvider
    for name in ("docker", "ec2", "nomad"):
        assert resolve_provider(name).__name__.lower().startswith(name[:3])


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("kubernetes", "not a provider name"),
        ("no_such_pkg.mod:Cls", "cannot import no_such_pkg.mod"),
        ("pipeline.instances.base:Missing", "has no class Missing"),
        ("pipeline.instances.base:InstanceInfo", "no from_config"),
    ],
)
def test_bad_provider_names_say_what_and_how(value: str, says: str) -> None:
    with pytest.raises(ProviderConfigError) as info:
        resolve_provider(value)
    message = str(info.value)
    assert "\n" not in message
    assert value in message and says in message
    assert "local, docker, ec2, nomad" in message


def test_load_provider_builds_from_config() -> None:
    config = instance_settings.load(env={})
    provider = load_provider("local", config, nats_url="nats://127.0.0.1:4222")
    assert provider.name == "local"
    with pytest.raises(ProviderConfigError, match="JIT_INSTANCE_NATS_URL"):
        load_provider("local", config)
    with pytest.raises(ProviderConfigError, match="JIT_AWS_AMI"):
        load_provider("ec2", config, nats_url="nats://x:4222")
    with_ami = instance_settings.load(env={"JIT_AWS_AMI": "ami-1"})
    with pytest.raises(ProviderConfigError, match="JIT_AWS_SECURITY_GROUP"):
        load_provider("ec2", with_ami, nats_url="nats://x:4222")


def test_instance_ids_are_tokens() -> None:
    iid = new_instance_id()
    assert iid.startswith("inst-") and len(iid) == 17
    assert LaunchRequest(iid).token == iid
    with pytest.raises(ValueError, match="subject token"):
        LaunchRequest("has.dots")


# --- settings --------------------------------------------------------------------------------


def test_settings_defaults_env_and_flags() -> None:
    config = instance_settings.load(env={})
    assert config.provider == "local"
    assert (config.agent_host, config.agent_port) == ("0.0.0.0", 8081)
    assert (config.ready_timeout, config.max_idle_time, config.max_up_time) == (120, 600, 14400)
    assert config.instance_poll_interval == 5
    assert (config.container_port_min, config.container_port_max) == (49152, 65535)
    assert (config.agent_port_min, config.agent_port_max) == (8081, 8090)
    assert config.aws_instance_type == "c5n.xlarge" and config.aws_key_name == "JIT-Key-Pair"
    assert config.aws_managed_tag_key == "Managing-JIT-Orchestrator-ID"
    assert config.nomad_addr == "http://127.0.0.1:4646"
    env = {
        "JIT_INSTANCE_PROVIDER_CLASS_PATH": "my.pkg:Provider",
        "TESSERA_CAPACITY_JIT": "0",
        "JIT_AWS_EXTRA_TAGS": "team=media, cost=jit",
        "JIT_INSTANCE_MAX_IDLE_TIME": "60",
    }
    config = instance_settings.load(env=env, flags={"max_idle_time": "30"})
    assert config.provider == "my.pkg:Provider"
    assert config.capacity == {"grabber": 16, "stitcher": 2}
    assert config.aws_extra_tags == (("team", "media"), ("cost", "jit"))
    assert config.max_idle_time == 30


def test_dev_is_the_originals_shortcut() -> None:
    config = instance_settings.load(env={}, flags={"dev": "true"})
    assert config.prune and config.remove_running
    assert set(instance_settings.DEV_ALSO) == {"verbose", "turn"}  # Config's, set by the CLI
    assert config.container_image == instance_settings.DEV_IMAGE
    assert instance_settings.load(env={}).container_image == "tessera:latest"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"JIT_INSTANCE_PROVIDER_CLASS_PATH": "k8s"}, "JIT_INSTANCE_PROVIDER_CLASS_PATH='k8s'"),
        ({"JIT_AWS_EXTRA_TAGS": "a=1,b"}, "'b' is not KEY=VALUE"),
        ({"TESSERA_CAPACITY_JIT": "-1"}, "at least 0"),
        ({"JIT_CONTAINER_PORT_MIN": "6000", "JIT_CONTAINER_PORT_MAX": "5000"}, "swap them"),
        ({"JIT_INSTANCE_AGENT_PORT": "70000"}, "not a port"),
    ],
)
def test_bad_settings_name_the_key(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        instance_settings.load(env=env)


def test_instance_settings_do_not_collide_with_the_main_ones() -> None:
    """The lead merges both sets of flags into one parser: names must stay apart."""
    main = dataclasses.fields(Config)
    ours = instance_settings.settings()
    assert not {f.name for f in main} & {f.name for f in ours}
    assert not {f.metadata["env"] for f in main} & {f.metadata["env"] for f in ours}
    flags = {f.metadata["flag"] for f in main} - {None}
    assert not flags & ({f.metadata["flag"] for f in ours} - {None})
    parser = argparse.ArgumentParser()
    instance_settings.add_arguments(parser)
    args = parser.parse_args(["--instance-provider", "ec2", "--prune", "--aws-ami", "ami-9"])
    config = instance_settings.from_namespace(args, env={})
    assert (config.provider, config.prune, config.aws_ami) == ("ec2", True, "ami-9")


# --- provider helpers ------------------------------------------------------------------------


def test_container_slots_split_the_udp_range() -> None:
    first = slot(0, (8081, 8090), (49152, 65535))
    last = slot(9, (8081, 8090), (49152, 65535))
    assert (first.agent_port, first.udp_min, first.udp_max) == (8081, 49152, 50789)
    assert (last.agent_port, last.udp_min) == (8090, 49152 + 9 * 1638)
    assert last.udp_max <= 65535
    assert free_slot([0, 1, 3], 4) == 2 and free_slot([0, 1], 2) is None
    with pytest.raises(ConfigError, match="widen JIT_CONTAINER_PORT_MIN/MAX"):
        slot(0, (8081, 8090), (50000, 50004))


def test_user_data_starts_the_agent_with_its_environment() -> None:
    script = user_data({"NATS_URL": "nats://n:4222", "TESSERA_INSTANCE_ID": 'i-"1"'})
    assert script.startswith("#!/bin/bash\n")
    assert 'NATS_URL="nats://n:4222"\n' in script
    assert 'TESSERA_INSTANCE_ID="i-\\"1\\""\n' in script
    assert '"$(command -v tessera)" agent' in script
    with pytest.raises(ProviderConfigError, match="cannot go into user data"):
        user_data({"NATS_URL": "nats://a\nrm -rf /"})


def test_nomad_meta_and_paths() -> None:
    meta = dispatch_meta(LaunchRequest("inst-1", {"jit": 2}, kind="jit"), "me")
    assert meta == {
        "tessera_instance_id": "inst-1",
        "tessera_owner": "me",
        "tessera_kind": "jit",
        "tessera_capacity_jit": "2",
        "tessera_capacity_grabber": "0",
        "tessera_capacity_stitcher": "0",
    }
    assert job_path("tessera-instance/dispatch-1-2", "allocations") == (
        "/v1/job/tessera-instance%2Fdispatch-1-2/allocations"
    )


def test_deploy_docs_list_every_instance_setting() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text()
    match = re.search(
        r"<!-- instance-settings:start -->\n(.*?)<!-- instance-settings:end -->", text, re.S
    )
    assert match, "docs/deploy.md lost its instance-settings markers"
    assert match.group(1) == instance_settings.markdown_table(), (
        "regenerate it: python -c 'from pipeline.config.instances import markdown_table; "
        'print(markdown_table(), end="")\''
    )
