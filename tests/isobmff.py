"""A small, pure ISO BMFF (MP4) reader for the CMAF tests: boxes, the fields of a fragment that
LL-HLS relies on, and the NAL units in its samples. Written from ISO/IEC 14496-12 and -15, and
independent of FFmpeg on purpose: the muxer's output is checked by something that did not make
it."""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONTAINERS = frozenset({"moov", "trak", "mdia", "minf", "stbl", "mvex", "moof", "traf", "dinf"})
"""Boxes whose body is just more boxes."""

NON_SYNC = 0x0001_0000
"""``sample_is_non_sync_sample`` in a sample's flags."""


@dataclass(frozen=True)
class Box:
    kind: str
    start: int
    end: int
    header: int
    data: bytes

    @property
    def body(self) -> bytes:
        return self.data[self.start + self.header : self.end]

    def children(self) -> list[Box]:
        return boxes(self.data, self.start + self.header, self.end)

    def full(self) -> tuple[int, int, bytes]:
        """A full box's version, flags and the rest of its body."""
        version_flags = int.from_bytes(self.body[:4], "big")
        return version_flags >> 24, version_flags & 0xFFFFFF, self.body[4:]


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The boxes in ``data[start:end]``, which must tile it exactly."""
    end = len(data) if end is None else end
    found = []
    offset = start
    while offset < end:
        assert offset + 8 <= end, f"truncated box header at {offset}"
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        assert header <= size and offset + size <= end, f"{kind!r} at {offset}: bad size {size}"
        found.append(Box(kind.decode("latin-1"), offset, offset + size, header, data))
        offset += size
    return found


def find(data: bytes, path: str) -> list[Box]:
    """Every box at ``path`` (``"moof/traf/tfdt"``) from the top level of ``data``."""
    level = boxes(data)
    names = path.split("/")
    for name in names[:-1]:
        level = [child for box in level if box.kind == name for child in box.children()]
    return [box for box in level if box.kind == names[-1]]


def one(data: bytes, path: str) -> Box:
    found = find(data, path)
    assert len(found) == 1, f"{len(found)} boxes at {path}"
    return found[0]


def timescale(init: bytes) -> int:
    """The video track's media timescale (``mdhd``)."""
    version, _, rest = one(init, "moov/trak/mdia/mdhd").full()
    return int.from_bytes(rest[16:20] if version == 1 else rest[8:12], "big")


def sequence_number(part: bytes) -> int:
    """``mfhd``'s sequence number."""
    return int.from_bytes(one(part, "moof/mfhd").full()[2][:4], "big")


def decode_time(part: bytes) -> int:
    """``tfdt``'s base media decode time."""
    version, _, rest = one(part, "moof/traf/tfdt").full()
    return int.from_bytes(rest[:8] if version == 1 else rest[:4], "big")


@dataclass(frozen=True)
class Sample:
    offset: int
    """Where its bytes start in the part."""
    size: int
    duration: int
    flags: int

    @property
    def sync(self) -> bool:
        return not self.flags & NON_SYNC


def samples(part: bytes, init: bytes) -> list[Sample]:
    """The samples of a part's one track run, defaults resolved (``trun`` < ``tfhd`` <
    ``trex``). Offsets count from the ``moof`` (``default-base-is-moof``)."""
    _, _, trex = one(init, "moov/mvex/trex").full()
    duration, size, flags = struct.unpack_from(">III", trex, 8)
    moof = one(part, "moof")
    _, tf_flags, rest = one(part, "moof/traf/tfhd").full()
    assert tf_flags & 0x020000, "default-base-is-moof"
    assert not tf_flags & 0x000001, "no base-data-offset: parts must not depend on where they sit"
    pos = 4  # track_ID
    for bit in (0x02, 0x08, 0x10, 0x20):  # description index, duration, size, flags
        if tf_flags & bit:
            value = int.from_bytes(rest[pos : pos + 4], "big")
            duration, size, flags = (
                value if bit == 0x08 else duration,
                value if bit == 0x10 else size,
                value if bit == 0x20 else flags,
            )
            pos += 4
    _, tr_flags, rest = one(part, "moof/traf/trun").full()
    (count,) = struct.unpack_from(">I", rest, 0)
    pos = 4
    assert tr_flags & 0x01, "trun has a data offset"
    (data_offset,) = struct.unpack_from(">i", rest, pos)
    pos += 4
    first_flags = None
    if tr_flags & 0x04:
        (first_flags,) = struct.unpack_from(">I", rest, pos)
        pos += 4
    found = []
    offset = moof.start + data_offset
    for i in range(count):
        s_duration, s_size, s_flags = duration, size, flags
        if tr_flags & 0x100:
            (s_duration,) = struct.unpack_from(">I", rest, pos)
            pos += 4
        if tr_flags & 0x200:
            (s_size,) = struct.unpack_from(">I", rest, pos)
            pos += 4
        if tr_flags & 0x400:
            (s_flags,) = struct.unpack_from(">I", rest, pos)
            pos += 4
        if tr_flags & 0x800:
            pos += 4  # composition offset
        if i == 0 and first_flags is not None:
            s_flags = first_flags
        found.append(Sample(offset, s_size, s_duration, s_flags))
        offset += s_size
    return found


def nal_types(sample: bytes) -> list[int]:
    """The NAL unit types of an H.264 sample stored as MP4 wants it: each NAL unit after its
    4-byte big-endian length (``avcC``'s lengthSizeMinusOne is checked to be 3 elsewhere). The
    lengths must tile the sample exactly; an Annex-B sample (start codes) cannot."""
    types = []
    pos = 0
    while pos < len(sample):
        assert pos + 4 <= len(sample), "truncated NAL length"
        (length,) = struct.unpack_from(">I", sample, pos)
        assert 0 < length <= len(sample) - pos - 4, f"NAL length {length} overruns the sample"
        header = sample[pos + 4]
        assert not header & 0x80, "forbidden_zero_bit set: not a NAL unit"
        types.append(header & 0x1F)
        pos += 4 + length
    return types


def avcc(init: bytes) -> tuple[str, int, int, int]:
    """The init's sample entry type, its ``avcC``'s NAL length size (bytes) and how many SPS
    and PPS it carries."""
    stsd = one(init, "moov/trak/mdia/minf/stbl/stsd")
    entry = stsd.body[8:]  # version/flags, entry_count
    kind = entry[4:8].decode("latin-1")
    at = entry.find(b"avcC")
    assert at >= 4, "no avcC in the sample entry"
    config = entry[at + 4 :]
    # configurationVersion, profile, compatibility, level, 6 bits + lengthSizeMinusOne,
    # 3 bits + numOfSequenceParameterSets, then each SPS (16-bit length + bytes), then the PPS
    # count and each PPS.
    length_size = (config[4] & 0x03) + 1
    sps = config[5] & 0x1F
    pos = 6
    for _ in range(sps):
        pos += 2 + int.from_bytes(config[pos : pos + 2], "big")
    pps = config[pos]
    return kind, length_size, sps, pps
