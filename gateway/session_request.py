"""Validating a ``POST /session`` body, pure: JSON bytes in, inputs and options out, or
:class:`RequestError` with one line naming the field.

The body is the original Orchestrator's: ``inputs`` (the first is the video, the others audio;
each ``{url, channel_count?, id?}``) and the JIT options at the top level (``lowres``,
``width``, ``frame_rate_num``, ...). Unknown fields are refused (a typo must not be ignored).

Tessera's own option ``compare`` (``"side-by-side"``, ``"wipe"`` or ``"difference"``) makes an
A/B compare: the first two inputs are then the videos A and B (so the second has no
``channel_count``), the others audio; ``compare_offset`` is where B starts against A, in frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from pipeline.messages.events import MAX_COMPARE_OFFSET, SessionInput, SessionOptions

MAX_INPUTS = 16
MAX_SIDE = 7680
INPUT_SCHEMES = ("http", "https", "s3")
COLORSPACES = ("bt709", "bt601", "smpte170m", "bt470bg", "bt2020nc", "bt2020", "smpte240m")
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RequestError(ValueError):
    """A bad session request; ``str()`` is the one-line reason for the 400."""


class _Input(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    channel_count: int | None = None
    id: str | None = None


class SessionRequest(SessionOptions, forbid_unknown_fields=True, frozen=True):
    """The body: the options at the top level, plus ``inputs``."""

    inputs: tuple[_Input, ...] = ()


_decoder = msgspec.json.Decoder(SessionRequest)


def _field_error(exc: msgspec.ValidationError) -> RequestError:
    text = str(exc)
    match = re.search(r"- at `\$\.?([^`]*)`", text)
    where = match.group(1) if match else ""
    what = text.split(" - at ")[0]
    unknown = re.search(r"unknown field `([^`]+)`", text)
    if unknown:
        path = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        return RequestError(f"unknown field {path!r}")
    return RequestError(f"{where or 'body'}: {what[0].lower()}{what[1:]}")


def _local_path(url: str, roots: tuple[Path, ...], label: str) -> None:
    if not roots:
        raise RequestError(
            f"{label}: local paths are not allowed here (the server has no JIT_MEDIA_ROOTS)"
        )
    path = Path(url[7:] if url.startswith("file://") else url)
    if not path.is_absolute():
        raise RequestError(f"{label}: a local path must be absolute")
    # Resolve ".." lexically here; the worker resolves symlinks again when it opens the file.
    normal = Path(*[p for p in path.parts if p not in ("", ".")])
    parts: list[str] = []
    for part in normal.parts:
        if part == "..":
            if len(parts) > 1:
                parts.pop()
        else:
            parts.append(part)
    clean = Path(*parts)
    if not any(clean == root or root in clean.parents for root in roots):
        raise RequestError(f"{label}: {url!r} is outside the allowed media folders")


def parse(
    body: bytes, *, roots: tuple[Path, ...] = ()
) -> tuple[tuple[SessionInput, ...], SessionOptions]:
    """The inputs and options of a session request, or RequestError."""
    if not body.strip():
        raise RequestError("the body is empty: send JSON with inputs")
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise RequestError(f"the body is not JSON: {exc}") from exc
    if not request.inputs:
        raise RequestError("inputs: give at least one input (the video)")
    if len(request.inputs) > MAX_INPUTS:
        raise RequestError(f"inputs: at most {MAX_INPUTS}")
    inputs = []
    for i, item in enumerate(request.inputs, start=1):
        label = f"inputs[{i - 1}]"
        url = item.url.strip()
        if not url:
            raise RequestError(f"{label}.url: empty")
        scheme = urlsplit(url).scheme.lower()
        if url.startswith("/") or scheme == "file":
            _local_path(url, roots, f"{label}.url")
        elif scheme not in INPUT_SCHEMES:
            raise RequestError(
                f"{label}.url: scheme {scheme or 'none'!r} is not allowed: "
                f"use {', '.join(INPUT_SCHEMES)} or an absolute path"
            )
        if item.channel_count is not None and not 1 <= item.channel_count <= 64:
            raise RequestError(f"{label}.channel_count: from 1 to 64")
        if item.id is not None and not _ID_RE.match(item.id):
            raise RequestError(f"{label}.id: 1-64 letters, digits, '_', '.' or '-'")
        inputs.append(SessionInput(url=url, channel_count=item.channel_count, id=item.id))
    options = SessionOptions(**{f: getattr(request, f) for f in SessionOptions.__struct_fields__})
    _check_options(options)
    _check_compare(options, inputs)
    return tuple(inputs), options


def _check_compare(o: SessionOptions, inputs: list[SessionInput]) -> None:
    if not o.compare:
        if o.compare_offset:
            raise RequestError("compare_offset: only with compare (an A/B compare of two videos)")
        return
    if len(inputs) < 2:
        raise RequestError(
            f"compare: give two videos as the first inputs (A, then B), not {len(inputs)} input"
        )
    if inputs[1].channel_count is not None:
        raise RequestError(
            "inputs[1].channel_count: with compare, the second input is video B, not audio "
            "(give its sound as an audio input after it)"
        )
    _range("compare_offset", o.compare_offset, -MAX_COMPARE_OFFSET, MAX_COMPARE_OFFSET)


def _range(name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise RequestError(f"{name}: from {low} to {high}, not {value}")


def _check_options(o: SessionOptions) -> None:
    _range("lowres", o.lowres, 0, 3)
    _range("threads", o.threads, 0, 64)
    _range("width", o.width, 16, MAX_SIDE)
    _range("height", o.height, 16, MAX_SIDE)
    for name in ("width", "height"):
        value = getattr(o, name)
        if value is not None and value % 2:
            raise RequestError(f"{name}: must be even, not {value}")
    _range("sample_aspect_num", o.sample_aspect_num, 1, 10000)
    _range("sample_aspect_den", o.sample_aspect_den, 1, 10000)
    if (o.sample_aspect_num is None) != (o.sample_aspect_den is None):
        raise RequestError("sample_aspect_num and sample_aspect_den go together")
    _range("frame_rate_num", o.frame_rate_num, 1, 1_000_000)
    _range("frame_rate_den", o.frame_rate_den, 1, 1_000_000)
    if (o.frame_rate_num is None) != (o.frame_rate_den is None):
        raise RequestError("frame_rate_num and frame_rate_den go together")
    _range("duration", o.duration, 1, 10**9)
    _range("bitrate", o.bitrate, 10_000, 100_000_000)
    _range("channels", o.channels, 1, 64)
    _range("cho", o.cho, 0, 1023)
    if o.colorspace is not None and o.colorspace.lower() not in COLORSPACES:
        raise RequestError(f"colorspace: one of {', '.join(COLORSPACES)}")
    if o.region is not None and not re.match(r"^[a-z]{2}(-[a-z]+)+-\d$", o.region):
        raise RequestError(f"region: {o.region!r} is not an AWS region name like eu-west-1")
