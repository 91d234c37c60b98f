"""Frames in shared memory: the writer/reader protocol on real files, and a real grabber
writing its frames there while NATS carries one seed frame a second."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path

import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from pipeline.consumers.canvas import solid
from pipeline.frames import slot as frameslot
from pipeline.frames.slot import HEADER_SIZE, SlotReader, SlotWriter, payload_size
from pipeline.messages.frames import unpack_frame
from pipeline.nats import subjects
from pipeline.producers.grabber import Grabber
from pipeline.sources.policy import SourcePolicy
from pipeline.sources.synthetic import LiveHlsSource, SourceServer, rgb_to_yuv601
from pipeline.state.mosaic import source_id
from tests.test_grabber import FAST, until

W, H = 64, 36


def picture(value: int) -> bytes:
    return bytes([value]) * payload_size(W, H)


def test_a_reader_sees_each_new_frame_once(tmp_path: Path) -> None:
    path = tmp_path / "slot"
    reader = SlotReader(path)
    assert reader.read() is None, "no writer yet"
    writer = SlotWriter(path, W, H)
    assert reader.read() is None, "nothing written yet"
    writer.write(1, 0.04, 1000.0, picture(7))
    got = reader.read()
    assert got is not None and (got.seq, got.pts, got.wall) == (1, 0.04, 1000.0)
    assert (got.width, got.height) == (W, H) and got.pixels == picture(7)
    assert reader.read() is None, "the same frame is not read twice"
    writer.write(2, 0.08, 1000.04, picture(9))
    got = reader.read()
    assert got is not None and got.seq == 2 and got.pixels[:3] == b"\x09\x09\x09"
    writer.close()
    assert not path.exists()
    reader.close()


def test_a_frame_being_written_is_skipped_not_torn(tmp_path: Path) -> None:
    path = tmp_path / "slot"
    writer = SlotWriter(path, W, H)
    reader = SlotReader(path)
    writer.write(1, 0.0, 1.0, picture(1))
    assert reader.read() is not None
    # The writer is mid-frame: the lock is odd.
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<Q", 3))
    assert reader.read() is None and reader.torn == 1
    writer.write(2, 0.04, 1.04, picture(2))  # completes: lock even again
    got = reader.read()
    assert got is not None and got.pixels == picture(2)
    writer.close()
    reader.close()


def test_a_new_writer_replaces_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "slot"
    first = SlotWriter(path, W, H)
    reader = SlotReader(path, recheck=1)
    first.write(5, 0.0, 1.0, picture(5))
    assert reader.read() is not None
    # A restarted grabber: a new file under the same name, counting from 0 again.
    second = SlotWriter(path, W, H)
    second.write(0, 0.0, 2.0, picture(6))
    got = reader.read()
    assert got is not None and got.seq == 0 and got.pixels == picture(6)
    first.close()  # the old writer closing late leaves the new one's file alone
    assert path.exists()
    second.close()
    assert not path.exists()
    reader.close()


def test_paths_are_per_server_and_private() -> None:
    a = frameslot.namespace("nats://grabber:pw@127.0.0.1:4222")
    assert a == frameslot.namespace("nats://stitcher:other@127.0.0.1:4222")
    assert a != frameslot.namespace("nats://127.0.0.1:4223")
    path = frameslot.slot_path(a, "src-64x36")
    assert path.parent.name == f"tessera-{os.getuid()}"
    assert path.name == f"{a}-src-64x36"
    assert HEADER_SIZE == 64


async def test_a_grabber_writes_every_frame_to_its_slot_and_seeds_nats(
    nc: Client, tmp_path: Path
) -> None:
    colour = (200, 60, 30)
    with SourceServer({"slot": LiveHlsSource(colour, width=W, height=H)}) as server:
        url = server.url("slot")
        sid = source_id(url, W, H)
        nats_frames: list[float] = []

        async def on_frame(msg: Msg) -> None:
            nats_frames.append(unpack_frame(msg.data)[0].wall)

        await nc.subscribe(subjects.frames(sid), cb=on_frame)
        path = tmp_path / "slot"
        grabber = Grabber(
            nc=nc,
            source_id=sid,
            url=url,
            width=W,
            height=H,
            fps=25,
            worker_id="grabber-slot",
            policy=SourcePolicy.local(),
            frame_slot=path,
            **FAST,  # type: ignore[arg-type]
        )
        reader = SlotReader(path)
        seen = []
        try:
            await grabber.start()
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                frame = reader.read()
                if frame is not None:
                    seen.append(frame)
                await asyncio.sleep(0.01)
            slot_written = grabber.slot_written
        finally:
            await grabber.stop()
            reader.close()
    assert not path.exists(), "the slot is removed when the grabber stops"
    assert len(seen) >= 40, f"a slot frame per source frame (~25/s), got {len(seen)}"
    assert slot_written >= len(seen)
    # NATS: a seed about once a second, not every frame.
    assert 1 <= len(nats_frames) <= 6, nats_frames
    last = seen[-1]
    plane = np.frombuffer(last.pixels, np.uint8)
    y = plane[: W * H].reshape(H, W)
    want = rgb_to_yuv601(colour)
    assert abs(float(y[H // 2 :, :].mean()) - want[0]) < 12, "the source's colour"


async def test_a_stitcher_composes_from_slots_without_frames_on_nats(
    nc: Client, js: JetStreamContext, tmp_path: Path
) -> None:
    """Writers stand in for local grabbers: nothing is published on ``frames.*`` at all; every
    tile shows its colour, and a slot whose writer stops turns dead."""
    from tests import test_stitcher as st

    fp = "f" * 32
    paths = {st.sid(name): tmp_path / name for name in st.NAMES}
    writers = {sid: SlotWriter(path, st.TW, st.TH) for sid, path in paths.items()}
    pixels = {
        st.sid(n): b"".join(p.tobytes() for p in solid(st.TW, st.TH, st.yuv(n))) for n in st.NAMES
    }
    stopped = st.sid("blue")

    async def write_frames() -> None:
        seq = 0
        while True:
            seq += 1
            for sid, writer in writers.items():
                if sid != stopped or seq < 25:
                    writer.write(seq, seq / 25, time.time(), pixels[sid])
            await asyncio.sleep(0.04)

    notices = await nc.subscribe(subjects.segments(fp))
    stitcher = st.make_stitcher(
        nc, js, fp, segment_duration=1.0, dead_after=1.5, frame_slots=paths.get
    )
    task = asyncio.create_task(write_frames())
    try:
        async with st.running(stitcher):
            first = await st.next_notice(notices)
            picture = (await st.segment_frames(js, first.key))[-1]
            st.assert_all_colours(picture)
            # Live slots: their NATS subscriptions are dropped (the seeds would be copies).
            blue = subjects.frames(stopped)
            await until(lambda: not stitcher.subscribed - {blue}, 5, "live slots unsubscribed")
            # blue's writer stopped after a second: dead once dead_after has passed.
            for _ in range(6):
                notice = await st.next_notice(notices)
                picture = (await st.segment_frames(js, notice.key))[-1]
                if st.shows_dead(picture, st.NAMES.index("blue")):
                    break
            else:
                raise AssertionError("the stopped slot never turned dead")
            st.assert_all_colours(picture, except_=st.NAMES.index("blue"))
            # blue's slot stopped: frames are taken from NATS again for it (a grabber
            # elsewhere, or one that restarted without its slot, still reaches the stitcher).
            await until(lambda: stitcher.subscribed == {blue}, 5, "blue subscribed again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for writer in writers.values():
            writer.close()
        await notices.unsubscribe()


def test_a_namespace_is_removed_whole(tmp_path: Path) -> None:
    ns = "t" + os.urandom(5).hex()
    other = "u" + os.urandom(5).hex()
    mine = [SlotWriter(frameslot.slot_path(ns, f"src{i}-64x36"), W, H) for i in range(3)]
    theirs = SlotWriter(frameslot.slot_path(other, "src-64x36"), W, H)
    try:
        assert frameslot.remove_namespace(ns) == 3
        assert not any(w.path.exists() for w in mine) and theirs.path.exists()
    finally:
        for w in [*mine, theirs]:
            w.close()
