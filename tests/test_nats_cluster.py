"""A JetStream cluster of three real nats-servers (:class:`LocalNatsCluster`), and the pure parts
that make one: the server config of a node, the copies per stream, the client's URL list.

The config and URL tests are pure. The cluster test starts three nats-servers on loopback,
provisions Tessera's topology at 3 copies, kills the server leading ``EVENTS`` and checks that
every acknowledged event is still there and that appends go on (after JetStream elects a new
leader: seconds, by nats-server's election timeouts).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pipeline.messages.events import InstanceTerminated
from pipeline.nats import auth as natsauth
from pipeline.nats.cluster import LocalNatsCluster
from pipeline.nats.connect import _credentials, connect, server_info, servers
from pipeline.nats.eventlog import append
from pipeline.nats.server import ClusterConfig, render_config
from pipeline.nats.topology import EVENTS, FRAMES, provision, replicas_for


def test_a_cluster_node_config_names_its_routes_with_their_password() -> None:
    cluster = ClusterConfig(
        server_name="nats-2",
        listen="127.0.0.1:6223",
        routes=("nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6224"),
        route_password="s3cret",
    )
    text = render_config(store_dir=Path("/data/js"), max_payload=8, cluster=cluster)
    assert 'server_name: "nats-2"' in text
    assert 'listen: "127.0.0.1:6223"' in text
    assert '"nats-route://route:s3cret@127.0.0.1:6222"' in text
    assert '"nats-route://route:s3cret@127.0.0.1:6224"' in text
    assert 'password: "s3cret"' in text
    assert "sync_interval: always" in text
    assert "cluster" not in render_config(store_dir=Path("/d"), max_payload=8)


def test_copies_follow_the_cluster_unless_set() -> None:
    three = {"cluster": "tessera", "connect_urls": ["a:1", "b:1", "c:1"]}
    assert replicas_for({}) == 1
    assert replicas_for(three) == 3
    assert replicas_for({**three, "connect_urls": ["a:1", "b:1", "c:1", "d:1", "e:1"]}) == 3
    assert replicas_for({"cluster": "tessera", "connect_urls": ["a:1", "b:1"]}) == 2
    assert replicas_for(three, configured=1) == 1
    assert FRAMES.config(3).num_replicas == 1  # frames keep one copy whatever is asked
    assert EVENTS.config(3).num_replicas == 3


def test_credentials_go_to_every_server_including_the_announced_ones() -> None:
    url = "nats://grabber:p%40ss@127.0.0.1:1, nats://grabber:p%40ss@127.0.0.1:2"
    assert servers(url) == [
        "nats://grabber:p%40ss@127.0.0.1:1",
        "nats://grabber:p%40ss@127.0.0.1:2",
    ]
    assert _credentials(url) == (["nats://127.0.0.1:1", "nats://127.0.0.1:2"], "grabber", "p@ss")
    # A token (no password) stays in its URL; a URL without a user is left alone.
    assert _credentials("nats://tok@h:1") == (["nats://tok@h:1"], None, None)
    assert _credentials("nats://h:1") == (["nats://h:1"], None, None)


@pytest.mark.cluster
async def test_killing_the_server_that_leads_events_loses_no_acknowledged_event(
    tmp_path: Path,
) -> None:
    passwords = natsauth.new_passwords()
    async with LocalNatsCluster(tmp_path, passwords=passwords) as cluster:
        nc = await connect(
            cluster.url_for("controller"), name="test", role="controller", forever=True
        )
        try:
            js = nc.jetstream()
            copies = replicas_for(server_info(nc))
            assert copies == 3
            await provision(js, copies)
            acked = [
                (
                    await append(
                        js, InstanceTerminated(at=float(i), instance_id=f"i{i}", reason="t")
                    )
                ).seq
                for i in range(20)
            ]
            info = await js.stream_info(EVENTS.name)
            assert info.cluster is not None and info.cluster.leader is not None
            killed = int(info.cluster.leader.rsplit("-", 1)[1]) - 1
            cluster.kill(killed)
            start = time.monotonic()
            # append() rides out the election (no answer, or 503) with its retries.
            after = await append(js, InstanceTerminated(at=99.0, instance_id="i99", reason="t"))
            print(f"first append after the kill: {time.monotonic() - start:.1f} s")
            for _ in range(40):
                try:
                    info = await js.stream_info(EVENTS.name)
                    break
                except Exception:  # noqa: BLE001 - the election may still be under way
                    await asyncio.sleep(0.5)
            assert info.state.last_seq == after.seq and after.seq == acked[-1] + 1
            assert info.cluster is not None and info.cluster.leader != f"nats-{killed + 1}"
            for seq in acked:
                msg = await js.get_msg(EVENTS.name, seq)
                assert msg.subject.startswith("events.instance.")
            # The killed server comes back and catches up with what it missed.
            await cluster.restart(killed)
            name = f"nats-{killed + 1}"
            for _ in range(120):
                try:
                    info = await js.stream_info(EVENTS.name)
                except Exception:  # noqa: BLE001 - asked again
                    info = None
                peers = (info.cluster.replicas or []) if info and info.cluster else []
                if any(peer.name == name and peer.current for peer in peers):
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError(f"{name} did not catch up within 60 s")
        finally:
            await nc.close()
