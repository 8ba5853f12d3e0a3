"""Reading the bytes a job points at (audio, supporting documents) safely and within limits.

Remote fetches follow a fetch policy (scheme allow list, no private/loopback/link-local
addresses unless the host is in SCRIBE_URL_ALLOWLIST) and stream with a size cap. Local paths
must resolve under SCRIBE_STORAGE_ROOT. Error messages name the problem, never the URL or path.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import mimetypes
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
import mutagen
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from schemas.errors import ErrorType
from schemas.jobs import AudioRef, BlobRef, DocumentRef
from worker.errors import PermanentError, TransientError
from worker.providers.base import PreparedAudio, PreparedDocument

MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
DOCUMENT_MIME_TYPES = {"PDF": "application/pdf", "TXT": "text/plain"}


@dataclass(frozen=True)
class FetchPolicy:
    allowlist: frozenset[str]
    storage_root: Path | None
    timeout_s: float


async def check_url(url: str, policy: FetchPolicy, error_type: ErrorType) -> None:
    """Refuse schemes other than https, and private addresses, unless the host is allow-listed."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    allowed = host in policy.allowlist
    if parts.scheme != "https" and not (allowed and parts.scheme == "http"):
        scheme = parts.scheme if parts.scheme.isalpha() else "?"
        raise PermanentError(ErrorType.URL_NOT_ALLOWED, f"scheme {scheme[:10]!r} is not allowed")
    if not host:
        raise PermanentError(error_type, "the URL has no host")
    if allowed:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443)
    except socket.gaierror as exc:
        raise TransientError(ErrorType.CONNECTION_FAILED, "the URL's host did not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise PermanentError(
                ErrorType.URL_NOT_ALLOWED,
                "the URL resolves to a private, loopback or link-local address",
            )


class PolicyResolver(AbstractResolver):
    """Applies the fetch policy to the addresses the connection will really use.

    check_url() resolves the host first for a clear error; this resolver repeats the check on
    the answer aiohttp connects to, so a DNS answer that changes in between (DNS rebinding)
    cannot reach a private address.
    """

    def __init__(self, allowlist: frozenset[str]) -> None:
        self._allowlist = allowlist
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if host.lower() in self._allowlist:
            return answers
        if not answers or not all(ipaddress.ip_address(a["host"]).is_global for a in answers):
            raise OSError("the host resolves to a private, loopback or link-local address")
        return answers

    async def close(self) -> None:
        await self._inner.close()


def fetch_session(policy: FetchPolicy) -> aiohttp.ClientSession:
    """The session the worker downloads job audio and documents with (never vendor calls)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=PolicyResolver(policy.allowlist))
    )


async def _download(
    session: aiohttp.ClientSession,
    url: str,
    policy: FetchPolicy,
    limit_bytes: int,
    target: Path,
    unavailable: ErrorType,
) -> int:
    """Stream url into target, re-checking the policy at each redirect; returns the size."""
    timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
    for _ in range(MAX_REDIRECTS + 1):
        await check_url(url, policy, unavailable)
        try:
            async with session.get(url, allow_redirects=False, timeout=timeout) as response:
                if response.status in {301, 302, 303, 307, 308} and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status >= 500 or response.status == 429:
                    raise TransientError(
                        unavailable,
                        f"download answered HTTP {response.status}",
                        http_status=response.status,
                    )
                if response.status != 200:
                    raise PermanentError(
                        unavailable,
                        f"download answered HTTP {response.status}",
                        http_status=response.status,
                    )
                if (response.content_length or 0) > limit_bytes:
                    raise PermanentError(
                        ErrorType.FILE_TOO_LARGE, f"larger than {limit_bytes} bytes"
                    )
                size = 0
                with target.open("wb") as sink:
                    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                        size += len(chunk)
                        if size > limit_bytes:
                            raise PermanentError(
                                ErrorType.FILE_TOO_LARGE, f"larger than {limit_bytes} bytes"
                            )
                        sink.write(chunk)
                return size
        except TimeoutError as exc:
            raise TransientError(ErrorType.UPSTREAM_TIMEOUT, "download timed out") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(
                ErrorType.CONNECTION_FAILED, f"download failed ({type(exc).__name__})"
            ) from exc
    raise PermanentError(unavailable, "too many redirects")


def local_path(ref: BlobRef, policy: FetchPolicy, unavailable: ErrorType) -> tuple[Path, int]:
    """The file under the storage root a job names, and its size.

    This runs for every local job, on the event loop: a plain name below the root costs one
    lstat per component; anything else ('..', symlinks, a missing file) goes through realpath.
    """
    if policy.storage_root is None:
        raise PermanentError(unavailable, "local paths are disabled (set SCRIBE_STORAGE_ROOT)")
    assert ref.path is not None
    root = str(policy.storage_root)
    return _plain_file_under(root, ref.path) or _resolved_file_under(root, ref.path, unavailable)


def _plain_file_under(root: str, name: str) -> tuple[Path, int] | None:
    """The regular file root/name when no component is '..', '.', empty or a symlink (then it
    is its own realpath); None when realpath has to decide."""
    current = root.rstrip(os.sep)
    prefix = current + os.sep
    if os.path.isabs(name):
        if not name.startswith(prefix):
            return None
        name = name[len(prefix) :]
    parts = name.split(os.sep)
    if any(part in ("", ".", "..") for part in parts):
        return None
    for part in parts:
        current = f"{current}{os.sep}{part}"
        try:
            status = os.lstat(current)
        except OSError:
            return None
        if stat.S_ISLNK(status.st_mode):
            return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return Path(current), status.st_size


def _resolved_file_under(root: str, name: str, unavailable: ErrorType) -> tuple[Path, int]:
    resolved = os.path.realpath(os.path.join(root, name))
    if not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise PermanentError(ErrorType.URL_NOT_ALLOWED, "the path leaves the storage root")
    try:
        status = os.stat(resolved)
    except OSError:
        status = None
    if status is None or not stat.S_ISREG(status.st_mode):
        raise PermanentError(unavailable, "no readable file at the given path")
    return Path(resolved), status.st_size


MAX_WAV_CHUNKS = 64
WAV_HEAD_BYTES = 4096  # holds the RIFF, fmt and data headers of every common WAV
WAV_STREAMING_SIZES = {0, 0xFFFFFFFF}  # a data size left unset by a recorder that streamed


def wav_duration_s(path: Path) -> float | None:
    """The duration of a RIFF/WAVE file from its fmt and data chunk headers, or None when the
    file is not one this reader understands (then mutagen decides).

    One open and usually one read (positioned, unbuffered), cheap enough for the event loop: the
    common case then needs neither a thread (whose GIL hand-offs cost the loop far more than the
    read) nor mutagen's parser.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _wav_duration_of(_PositionedReader(fd))
    finally:
        os.close(fd)


class _PositionedReader:
    """Reads at offsets: from the first WAV_HEAD_BYTES, read once, or from the file."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._head = os.pread(fd, WAV_HEAD_BYTES, 0)

    def read(self, offset: int, size: int) -> bytes:
        if offset + size <= len(self._head):
            return self._head[offset : offset + size]
        return os.pread(self._fd, size, offset)

    def size(self) -> int:
        return os.fstat(self._fd).st_size


def _wav_duration_of(reader: _PositionedReader) -> float | None:
    riff = reader.read(0, 12)
    if len(riff) != 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, 0
    for _ in range(MAX_WAV_CHUNKS):
        header = reader.read(offset, 8)
        if len(header) != 8:
            return None
        chunk_id, size = header[:4], int.from_bytes(header[4:], "little")
        offset += 8
        if chunk_id == b"data":
            if byte_rate <= 0:
                return None
            if size in WAV_STREAMING_SIZES:
                size = reader.size() - offset
            return size / byte_rate
        if chunk_id == b"fmt ":
            fmt = reader.read(offset, min(size, 16))  # a lying size must not size the read
            if len(fmt) < 16:
                return None
            byte_rate = int.from_bytes(fmt[8:12], "little")
        offset += size + size % 2
    return None


def audio_duration_s(path: Path) -> float:
    """Any format mutagen reads; slow (it scores every format it knows), so run it in a thread."""
    try:
        parsed = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError) as exc:
        raise PermanentError(ErrorType.UNSUPPORTED_AUDIO, "the audio could not be parsed") from exc
    length = getattr(getattr(parsed, "info", None), "length", None)
    if not isinstance(length, int | float) or length <= 0:
        raise PermanentError(ErrorType.UNSUPPORTED_AUDIO, "the audio duration is unknown")
    return float(length)


async def measure_duration_s(path: Path) -> float:
    try:
        duration_s = wav_duration_s(path)
    except OSError as exc:
        raise PermanentError(ErrorType.AUDIO_UNAVAILABLE, "the audio could not be read") from exc
    if duration_s is not None and duration_s > 0:
        return duration_s
    return await asyncio.to_thread(audio_duration_s, path)


def _mime_type(ref: AudioRef, path: Path) -> str:
    if ref.mime_type:
        return ref.mime_type
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


class MediaFetcher:
    """Prepares audio and documents for providers; owns the temporary files it creates."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: FetchPolicy,
        max_audio_bytes: int,
        max_audio_duration_s: float,
        max_document_bytes: int,
    ) -> None:
        self._session = session
        self._policy = policy
        self._max_audio_bytes = max_audio_bytes
        self._max_audio_duration_s = max_audio_duration_s
        self._max_document_bytes = max_document_bytes

    @contextlib.asynccontextmanager
    async def _materialise(
        self, ref: BlobRef, limit_bytes: int, unavailable: ErrorType
    ) -> AsyncIterator[tuple[Path, int]]:
        if ref.path is not None:
            path, size = local_path(ref, self._policy, unavailable)
            if size > limit_bytes:
                raise PermanentError(ErrorType.FILE_TOO_LARGE, f"larger than {limit_bytes} bytes")
            yield path, size
            return
        assert ref.url is not None
        with tempfile.TemporaryDirectory(prefix="scribe-") as folder:
            name = Path(urlsplit(ref.url).path).name or "download"
            target = Path(folder) / name[-100:]
            size = await _download(
                self._session, ref.url, self._policy, limit_bytes, target, unavailable
            )
            yield target, size

    @contextlib.asynccontextmanager
    async def audio(self, ref: AudioRef) -> AsyncIterator[PreparedAudio]:
        """Checks the documented limits (size, duration) before any vendor sees the audio."""
        async with self._materialise(ref, self._max_audio_bytes, ErrorType.AUDIO_UNAVAILABLE) as (
            path,
            size,
        ):
            duration_s = await measure_duration_s(path)
            if duration_s > self._max_audio_duration_s:
                raise PermanentError(
                    ErrorType.AUDIO_TOO_LONG,
                    f"{duration_s:.0f} s is over the {self._max_audio_duration_s:.0f} s limit",
                )
            yield PreparedAudio(
                path=path,
                size_bytes=size,
                duration_s=duration_s,
                mime_type=_mime_type(ref, path),
                file_name=ref.file_name or path.name,
                source_url=ref.url,
            )

    async def document(self, ref: DocumentRef) -> PreparedDocument:
        async with self._materialise(
            ref, self._max_document_bytes, ErrorType.DOCUMENT_UNAVAILABLE
        ) as (path, _size):
            content = await asyncio.to_thread(path.read_bytes)
        return PreparedDocument(
            document_type=ref.document_type,
            document_name=ref.document_name,
            mime_type=DOCUMENT_MIME_TYPES[ref.document_type],
            content=content,
        )
