"""Opening a session's inputs: where a URL may point, and how FFmpeg may open it.

A session input is one of:

- **a local file**: a plain absolute path or a ``file:`` URL, allowed only under one of the
  worker's media roots (checked after resolving symbolic links, so a link cannot lead out).
  Without media roots, local files are refused.
- **http(s)**: checked against the :class:`~pipeline.sources.policy.SourcePolicy` (scheme,
  and every address the host resolves to), then opened with the opener's FFmpeg options
  (protocol allow-list, timeouts), FFmpeg's HTTP reconnection on, and this module's demuxer
  allow-list (review formats: MOV/MP4, MXF, Matroska, WAV, FLAC, ...).
- **s3://bucket/key**: looked up with boto3 (``HeadObject``: a missing object or a credentials
  problem is a clear one-line cause at once) and streamed through a presigned HTTPS URL.
  Streaming rather than downloading: review masters are often tens of gigabytes, which would
  delay the first frame by minutes and need that much disk, while FFmpeg's HTTP protocol
  seeks with range requests, which S3 serves; a seek costs one ranged GET. The S3 endpoint is
  the operator's (AWS, or ``s3_endpoint_url``), not the user's, so the address policy does not
  apply to it; the protocol allow-list does. The URL is valid for :data:`PRESIGN_SECONDS`.

Everything here blocks (DNS, S3, FFmpeg probing): call it from the thread that will read the
container. Failures are :class:`~pipeline.producers.jit.errors.JitInputError`, whose message is
the session's one-line failure cause: ``"input 1: cannot open: Connection refused (URL)"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import av.container

from pipeline.producers.jit.errors import JitInputError
from pipeline.sources.opener import MAX_PIXELS, describe, ffmpeg_options
from pipeline.sources.policy import SourcePolicy, SourceRefused, SourceUnavailable, redact

JIT_FORMATS = "mov,mxf,matroska,avi,mpegts,mpeg,wav,w64,flac,aiff,mp3,aac,ac3,eac3,ogg,h264,hevc"
"""Demuxers a session input may be probed as (``mov`` covers MP4/M4A, ``matroska`` WebM).
Absent on purpose: playlists (hls, concat) and every demuxer that opens further URLs."""
PRESIGN_SECONDS = 12 * 3600
"""Lifetime of a presigned S3 URL: longer than a review session runs."""
WEB_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class InputAccess:
    """What a worker may open: its policy for URLs, its media roots, its S3 endpoint."""

    policy: SourcePolicy
    media_roots: tuple[Path, ...] = ()
    s3_endpoint_url: str | None = None
    region: str | None = None
    open_timeout: float = 10.0


def open_input(url: str, index: int, access: InputAccess) -> av.container.InputContainer:
    """Check and open input ``index`` (1-based). Blocking; JitInputError on any failure."""
    shown = redact(url)
    parts = urlsplit(url) if "://" in url or url.startswith("file:") else None
    scheme = parts.scheme.lower() if parts is not None else ""
    if scheme in ("", "file"):
        path = unquote(parts.path) if parts is not None else url
        local = _local_path(path, index, access.media_roots)
        return _open(local, index, shown, _file_options(), access.open_timeout)
    if scheme in WEB_SCHEMES:
        try:
            access.policy.check(url)
        except SourceRefused as exc:
            raise JitInputError(index, f"refused: {exc.reason} ({shown})") from exc
        except SourceUnavailable as exc:
            raise JitInputError(index, f"cannot open: {exc.reason} ({shown})") from exc
        options = _web_options(scheme, access.policy, access.open_timeout)
        return _open(url, index, shown, options, access.open_timeout)
    if scheme == "s3":
        assert parts is not None
        signed = _presign(parts.netloc, parts.path.lstrip("/"), index, shown, access)
        signed_scheme = urlsplit(signed).scheme.lower()
        options = _web_options(signed_scheme, None, access.open_timeout)
        return _open(signed, index, shown, options, access.open_timeout)
    raise JitInputError(
        index,
        f"refused: scheme {scheme!r} is not allowed: use http, https, s3 or a file under the "
        f"media roots ({shown})",
    )


def _local_path(text: str, index: int, roots: Sequence[Path]) -> str:
    path = Path(text)
    if not path.is_absolute():
        raise JitInputError(index, f"refused: a local path must be absolute ({text})")
    if not roots:
        raise JitInputError(
            index, f"refused: local files are not allowed here (no media roots) ({text})"
        )
    real = path.resolve()
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise JitInputError(index, f"refused: {text} is outside the media roots")
    if not real.is_file():
        raise JitInputError(index, f"cannot open: no such file ({text})")
    return str(real)


def _file_options() -> dict[str, str]:
    return {"protocol_whitelist": "file", "format_whitelist": JIT_FORMATS}


def _web_options(scheme: str, policy: SourcePolicy | None, timeout: float) -> dict[str, str]:
    if scheme not in WEB_SCHEMES:
        raise ValueError(f"not a web scheme: {scheme}")
    # Without a policy (the S3 endpoint), only the URL's own scheme is allowed.
    base = ffmpeg_options(
        scheme,
        policy or SourcePolicy(schemes=frozenset({scheme})),
        open_timeout=timeout,
        read_timeout=timeout,
    )
    base["format_whitelist"] = JIT_FORMATS
    base["user_agent"] = "Tessera jit"
    # A review session reads for hours: let FFmpeg reconnect an HTTP response that ends early
    # (at the same byte offset) rather than fail the session. Not reconnect_on_network_error:
    # it would retry a refused connection until the open timeout instead of saying "refused".
    base["reconnect"] = "1"
    base["reconnect_delay_max"] = "4"
    return base


def _open(
    target: str, index: int, shown: str, options: dict[str, str], timeout: float
) -> av.container.InputContainer:
    try:
        return av.open(
            target,
            mode="r",
            container_options=options,
            options={"max_pixels": str(MAX_PIXELS)},
            timeout=(timeout, timeout),
        )
    except av.FFmpegError as exc:
        reason = describe(exc, timeout=f"no answer within {timeout:g} s")
        raise JitInputError(index, f"cannot open: {reason} ({shown})") from exc


def _presign(bucket: str, key: str, index: int, shown: str, access: InputAccess) -> str:
    """A presigned GET URL of ``s3://bucket/key``, after checking the object exists."""
    import boto3
    import botocore.config
    import botocore.exceptions

    if not bucket or not key:
        raise JitInputError(index, f"refused: an S3 input is s3://bucket/key ({shown})")
    config = botocore.config.Config(
        connect_timeout=access.open_timeout,
        read_timeout=access.open_timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        signature_version="s3v4",
    )
    client: Any = None
    try:
        client = boto3.session.Session().client(
            "s3",
            region_name=access.region,
            endpoint_url=access.s3_endpoint_url,
            config=config,
        )
        client.head_object(Bucket=bucket, Key=key)
        url: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS
        )
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            reason = "no such object"
        elif code in ("403", "AccessDenied", "Forbidden"):
            reason = "access denied (check the worker's AWS credentials and the bucket policy)"
        else:
            reason = f"S3 error {code or exc}"
        raise JitInputError(index, f"cannot open: {reason} ({shown})") from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise JitInputError(
            index, f"cannot open: no AWS credentials for S3 ({shown}); give the worker a role"
        ) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise JitInputError(index, f"cannot open: S3 unreachable: {exc} ({shown})") from exc
    finally:
        if client is not None:
            client.close()  # its connection pool: an unclosed socket would linger until GC
    return url
