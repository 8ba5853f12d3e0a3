"""Reading the bytes a job points at (audio, supporting documents) safely and within limits.

Remote fetches follow a fetch policy (scheme allow list, no private/loopback/link-local
addresses unless the host is in SCRIBE_URL_ALLOWLIST) and stream with a size cap. An IPv6
address that embeds an IPv4 one (NAT64, 6to4, Teredo, IPv4-mapped, IPv4-compatible) is judged by
the IPv4 address it carries. Local paths must resolve under SCRIBE_STORAGE_ROOT. Input that is
simply bad (a malformed URL, a NUL or '..' in a path) fails at once with its own errorType.
Error messages name the problem, never the URL or path, and exceptions that could quote either
are not chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import re
import shutil
import socket
import stat
import tempfile
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from schemas.errors import ErrorType
from schemas.jobs import AudioRef, BlobRef, DocumentRef
from worker.audio import (
    DEFAULT_TIMEOUT_S,
    AudioInfo,
    ChunkingRequired,
    TranscriberLimits,
    convert,
    needs_chunking,
    needs_conversion,
    probe_audio,
    wav_info,
)
from worker.errors import PermanentError, TransientError
from worker.providers.base import PreparedAudio, PreparedDocument

MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
DOCUMENT_MIME_TYPES = {"PDF": "application/pdf", "TXT": "text/plain"}
MAX_PATH_BYTES = 4096  # Linux PATH_MAX, the terminating NUL included
MAX_NAME_BYTES = 255  # Linux NAME_MAX: one path component
MAX_DOWNLOAD_NAME_BYTES = 100
CONVERT_SLACK_S = 5.0  # a conversion decodes at most the probed duration and this
CONVERT_BUDGET_PER_S = 600.0  # a conversion gets the read timeout per this much audio

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: any RFC 6052 layout
NAT64_LOCAL_PREFIX_LENGTHS = (48, 56, 64, 96)  # the RFC 6052 layouts a /48 can hold
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 (deprecated), '::' and '::1' too
HOST_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
MAX_HOST_NAME_CHARS = 253
NUMERIC_HOST_CHARS = frozenset("0123456789abcdefx.")  # what inet_aton may read as an address


@dataclass(frozen=True)
class FetchPolicy:
    allowlist: frozenset[str]
    storage_root: Path | None
    timeout_s: float


class AddressNotAllowed(OSError):
    """PolicyResolver's refusal of a DNS answer.

    An OSError because that is what aiohttp expects from a resolver (it wraps it in a
    ClientConnectorError); _download finds it in that error's chain and fails the job as
    urlNotAllowed, where a plain OSError would be retried as connectionFailed.
    """


def address_allowed(address: str | IPAddress) -> bool:
    """Whether the fetch policy lets a connection go to this address (no allow list here).

    Global unicast only. An IPv6 address that embeds an IPv4 address is judged by the IPv4
    address it carries, because that is where the packets end up: the network's translator
    (NAT64), relay (6to4, Teredo) or the host's own stack (IPv4-mapped) delivers them there.
    A string that is not an IP address raises ValueError.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else ()
    if embedded:
        return all(_global_unicast(v4) for v4 in embedded)
    return _global_unicast(ip)


def _global_unicast(ip: IPAddress) -> bool:
    return ip.is_global and not ip.is_multicast


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries; a Teredo address carries two (the server's
    and the client's), a local-use NAT64 address one per layout its operator may use."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.teredo is not None:
        return ip.teredo
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip in NAT64_WELL_KNOWN or ip in IPV4_COMPATIBLE:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip in NAT64_LOCAL_USE:
        return tuple(_rfc6052_ipv4(int(ip), length) for length in NAT64_LOCAL_PREFIX_LENGTHS)
    return ()


def _rfc6052_ipv4(value: int, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address after a NAT64 prefix of this length (RFC 6052 2.2: bits 64-71 are
    the zero 'u' octet and hold no address bits)."""
    if prefix_length == 96:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    without_u_octet = ((value >> 64) << 56) | (value & ((1 << 56) - 1))  # 120 bits
    return ipaddress.IPv4Address((without_u_octet >> (88 - prefix_length)) & 0xFFFFFFFF)


def _literal_address(host: str) -> IPAddress | None:
    """The address a host names without DNS: an IP literal, or an IPv4 address in one of the
    forms the C library's inet_aton reads (127.1, 2130706433, 0x7f.1, 0177.0.0.1), which is
    where a connection to that host would go."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and set(host) <= NUMERIC_HOST_CHARS:
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _looks_like_an_address(host: str) -> bool:
    """aiohttp connects to such a host without calling the resolver (so without
    PolicyResolver's check): it must then be an address check_url can judge."""
    return ":" in host or host.replace(".", "").isdigit()


def _host_name_ok(host: str) -> bool:
    """A DNS name: labels of letters, digits, '-' and '_' once IDNA-encoded (an empty or
    over-long label makes the idna codec raise UnicodeError)."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.removesuffix(".").split(".")
    return len(ascii_host) <= MAX_HOST_NAME_CHARS and all(
        HOST_LABEL.fullmatch(label.lower()) for label in labels
    )


def _refused(problem: str) -> PermanentError:
    return PermanentError(ErrorType.URL_NOT_ALLOWED, problem)


def _split(url: str) -> tuple[str, str, int | None]:
    """Scheme, lower-case host and port; any URL either parser cannot read is refused.

    yarl is the parser aiohttp connects with; it refuses URLs whose host the two could read
    differently (a backslash in the authority, text around brackets), so a URL passes only
    when both parsers read it. Errors are not chained: their text may quote the URL.
    """
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()  # '[127.0.0.1]' raises here
        port = parts.port  # 'h:abc' and 'h:99999' raise here
        URL(url)
    except ValueError:  # UnicodeError included
        raise _refused("the URL is malformed") from None
    if "[" in parts.netloc and ":" not in host:  # brackets hold IPv6 only, not 'IPvFuture'
        raise _refused("the URL is malformed")
    return parts.scheme, host, port


def _judge_without_dns(url: str, allowlist: frozenset[str], no_host: ErrorType) -> str | None:
    """Every decision that needs no DNS. Returns the host name still to be resolved and
    judged, or None when the URL is allowed as it is (an allow-listed host, a global
    address); raises PermanentError (urlNotAllowed, or no_host for a URL without a host)."""
    scheme, host, port = _split(url)
    allowed = host in allowlist
    if scheme != "https" and not (allowed and scheme == "http"):
        shown = scheme if scheme.isalpha() else "?"
        raise _refused(f"scheme {shown[:10]!r} is not allowed")
    if not host:
        raise PermanentError(no_host, "the URL has no host")
    if port == 0:
        raise _refused("the URL's port is 0")
    if allowed:
        return None
    address = _literal_address(host)
    if address is not None:
        if not address_allowed(address):
            raise _refused("the URL names a private, loopback or link-local address")
        return None
    if _looks_like_an_address(host) or not _host_name_ok(host):
        raise _refused("the URL's host is malformed")
    return host


def check_upload_url(url: str, allowlist: frozenset[str]) -> None:
    """The fetch policy for a URL the worker sends to but does not fetch with fetch_session()
    (a vendor's signed upload URL): synchronous, without DNS.

    Refuses, with PermanentError(urlNotAllowed): a malformed URL, a scheme other than https
    (http only for an allow-listed host), no host, port 0, an IP address (literal or in an
    inet_aton form) that address_allowed() refuses. A host name passes here; only a session
    whose connector resolves through PolicyResolver judges the address it resolves to.
    """
    _judge_without_dns(url, allowlist, ErrorType.URL_NOT_ALLOWED)


async def check_url(url: str, policy: FetchPolicy, error_type: ErrorType) -> None:
    """Refuse schemes other than https, and private addresses, unless the host is allow-listed.

    IP literals are judged here, without DNS: aiohttp does not call the resolver for them, so
    PolicyResolver never sees them. A host name is resolved for a clear error; PolicyResolver
    repeats the check on the answer the connection really uses.
    """
    host = _judge_without_dns(url, policy.allowlist, error_type)
    if host is None:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, 443)
    except socket.gaierror:
        raise TransientError(
            ErrorType.CONNECTION_FAILED, "the URL's host did not resolve"
        ) from None
    except ValueError:  # UnicodeError included: a name the C library cannot take
        raise _refused("the URL's host is malformed") from None
    if not all(_answer_allowed(str(info[4][0])) for info in infos):
        raise _refused("the URL resolves to a private, loopback or link-local address")


def _answer_allowed(host: str) -> bool:
    try:
        return address_allowed(host)
    except ValueError:
        return False


class PolicyResolver(AbstractResolver):
    """Applies the fetch policy to the addresses the connection will really use.

    check_url() resolves the host first for a clear error; this resolver repeats the check on
    the answer aiohttp connects to, so a DNS answer that changes in between (DNS rebinding)
    cannot reach a private address. A refused answer raises AddressNotAllowed. inner is the
    resolver asked (ThreadedResolver unless a test gives its own).
    """

    def __init__(self, allowlist: frozenset[str], inner: AbstractResolver | None = None) -> None:
        self._allowlist = allowlist
        self._inner = ThreadedResolver() if inner is None else inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if host.lower() in self._allowlist:
            return answers
        if not answers:
            raise OSError("the host did not resolve")
        if not all(_answer_allowed(a["host"]) for a in answers):
            raise AddressNotAllowed(
                "the host resolves to a private, loopback or link-local address"
            )
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
                    url = _redirect_target(url, response.headers["Location"])
                    continue
                _check_response(response, limit_bytes, unavailable)
                return await _write_body(response, limit_bytes, target)
        except TimeoutError:
            raise TransientError(ErrorType.UPSTREAM_TIMEOUT, "download timed out") from None
        except aiohttp.InvalidURL:
            raise _refused("the URL is malformed") from None
        except aiohttp.ClientError as exc:
            if _refused_by_resolver(exc):
                raise _refused(
                    "the host resolved to a private, loopback or link-local address on connect"
                ) from None
            raise TransientError(
                ErrorType.CONNECTION_FAILED, f"download failed ({type(exc).__name__})"
            ) from None
    raise PermanentError(unavailable, "too many redirects")


def _check_response(
    response: aiohttp.ClientResponse, limit_bytes: int, unavailable: ErrorType
) -> None:
    """A 5xx or 429 may pass; any other answer but 200, or a declared size over the limit, is
    final."""
    if response.status >= 500 or response.status == 429:
        raise TransientError(
            unavailable, f"download answered HTTP {response.status}", http_status=response.status
        )
    if response.status != 200:
        raise PermanentError(
            unavailable, f"download answered HTTP {response.status}", http_status=response.status
        )
    if (response.content_length or 0) > limit_bytes:
        raise PermanentError(ErrorType.FILE_TOO_LARGE, f"larger than {limit_bytes} bytes")


async def _write_body(response: aiohttp.ClientResponse, limit_bytes: int, target: Path) -> int:
    """Stream the body into target, counting: the declared length may lie."""
    size = 0
    with target.open("wb") as sink:
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > limit_bytes:
                raise PermanentError(ErrorType.FILE_TOO_LARGE, f"larger than {limit_bytes} bytes")
            sink.write(chunk)
    return size


def _redirect_target(url: str, location: str) -> str:
    """The URL a redirect points to (check_url then judges it); a Location that cannot be
    joined (urljoin raises ValueError, e.g. for an unclosed '[') is refused."""
    try:
        return urljoin(url, location)
    except ValueError:
        raise _refused("the redirect target is malformed") from None


def _refused_by_resolver(exc: BaseException) -> bool:
    """Whether PolicyResolver refused the connection (DNS rebinding): its AddressNotAllowed
    is the ClientConnectorError's os_error, and the cause in the exception chain."""
    current: BaseException | None = exc
    for _ in range(8):  # a chain is short; a cycle must not loop forever
        if current is None:
            return False
        if isinstance(current, AddressNotAllowed):
            return True
        if isinstance(current, aiohttp.ClientConnectorError) and isinstance(
            current.os_error, AddressNotAllowed
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _download_name(url: str) -> str:
    """The URL's last path segment as a name the temporary folder can hold: no NUL, at most
    MAX_DOWNLOAD_NAME_BYTES bytes of UTF-8 (its end, which has the extension), never '.' or
    '..' ('download' instead). It names the file for the vendor and guesses its MIME type."""
    try:
        name = Path(urlsplit(url).path).name
    except ValueError:
        return "download"
    encoded = name.replace("\x00", "").encode("utf-8", "ignore")
    name = encoded[-MAX_DOWNLOAD_NAME_BYTES:].decode("utf-8", "ignore")
    return "download" if name in ("", ".", "..") else name


def local_path(ref: BlobRef, policy: FetchPolicy, unavailable: ErrorType) -> tuple[Path, int]:
    """The file under the storage root a job names, and its size.

    This runs for every local job, on the event loop: a plain name below the root costs one
    lstat per component; anything else (symlinks, '.', a missing file) goes through realpath.
    A malformed path (NUL, a '..' component, too long, not encodable) or one that leaves the
    root is refused as pathNotAllowed.
    """
    if policy.storage_root is None:
        raise PermanentError(unavailable, "local paths are disabled (set SCRIBE_STORAGE_ROOT)")
    assert ref.path is not None
    root = str(policy.storage_root)
    _check_storage_name(root, ref.path)
    return _plain_file_under(root, ref.path) or _resolved_file_under(root, ref.path, unavailable)


def _path_refused(problem: str) -> PermanentError:
    return PermanentError(ErrorType.PATH_NOT_ALLOWED, problem)


def _check_storage_name(root: str, name: str) -> None:
    """Refuse a name that is malformed rather than missing before a system call sees it: a
    NUL makes os.stat raise ValueError, a surrogate UnicodeEncodeError, an over-long name or
    component ENAMETOOLONG. '..' is refused even when it would stay under the root: no
    legitimate job needs it, and it makes the name mean something other than what it says."""
    if "\x00" in name:
        raise _path_refused("the path contains a NUL byte")
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        raise _path_refused("the path cannot be encoded for the file system") from None
    components = encoded.split(os.fsencode(os.sep))
    if b".." in components:
        raise _path_refused("the path has a '..' component")
    too_long = len(os.fsencode(root)) + 1 + len(encoded) >= MAX_PATH_BYTES
    if too_long or any(len(component) > MAX_NAME_BYTES for component in components):
        raise _path_refused("the path is too long")


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
    """realpath decides; a missing or unreadable file is `unavailable`, a name the file system
    finds too long (a symlink can make it so) pathNotAllowed."""
    resolved = os.path.realpath(os.path.join(root, name))
    if not resolved.startswith(root.rstrip(os.sep) + os.sep):
        raise _path_refused("the path leaves the storage root")
    try:
        status = os.stat(resolved)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _path_refused("the path is too long") from None
        status = None
    if status is None or not stat.S_ISREG(status.st_mode):
        raise PermanentError(unavailable, "no readable file at the given path")
    return Path(resolved), status.st_size


async def probe(
    path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_duration_s: float | None = None
) -> AudioInfo:
    """The audio's AudioInfo: a 16-bit PCM WAV from its headers on the event loop (one read),
    anything else by probe_audio in a thread (which stops reading past max_duration_s)."""
    try:
        info = wav_info(path)
    except OSError:
        raise PermanentError(ErrorType.AUDIO_UNAVAILABLE, "the audio could not be read") from None
    if info is not None:
        return info
    return await asyncio.to_thread(
        probe_audio, path, timeout_s=timeout_s, max_duration_s=max_duration_s
    )


class MediaFetcher:
    """Prepares audio and documents for providers; owns the temporary files it creates.

    max_job_audio_s is the job maximum (audioTooLong over it). `limits` holds what each
    transcriber takes in one upload (worker/audio.py TranscriberLimits): audio in a format it
    does not take is converted; audio over its limits is handed over unconverted, for the stage
    to chunk (needs_chunking). A transcriber with no entry takes the audio as it is.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: FetchPolicy,
        max_audio_bytes: int,
        max_job_audio_s: float,
        max_document_bytes: int,
        *,
        limits: Mapping[str, TranscriberLimits] | None = None,
        read_timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._session = session
        self._policy = policy
        self._max_audio_bytes = max_audio_bytes
        self._max_job_audio_s = max_job_audio_s
        self._max_document_bytes = max_document_bytes
        self._limits = dict(limits or {})
        self._read_timeout_s = read_timeout_s

    def limits(self, transcriber: str) -> TranscriberLimits | None:
        """What this transcriber takes in one upload; None: anything the job maximum allows."""
        return self._limits.get(transcriber)

    def require_one_upload(self, audio: PreparedAudio, transcriber: str) -> None:
        """Raises ChunkingRequired (an audioTooLong refusal, before any vendor call) when the
        audio is over what this transcriber takes in one upload (needs_chunking). The transcribe
        stage calls it where a chunked job would branch off to worker/chunking.py."""
        limits = self.limits(transcriber)
        if limits is not None and audio.info is not None and needs_chunking(audio.info, limits):
            raise ChunkingRequired(audio.info, limits, transcriber)

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
            target = Path(folder) / _download_name(ref.url)
            size = await _download(
                self._session, ref.url, self._policy, limit_bytes, target, unavailable
            )
            yield target, size

    @contextlib.asynccontextmanager
    async def audio(
        self, ref: AudioRef, transcriber: str | None = None
    ) -> AsyncIterator[PreparedAudio]:
        """The job's audio, checked before any vendor sees it: its size (fileTooLarge), that it
        is an accepted format and intact (unsupportedAudio), its duration against the job
        maximum (audioTooLong); then converted if the transcriber needs another format and the
        audio fits one upload. The MIME type is the content's, whatever the job or name says."""
        async with self._materialise(ref, self._max_audio_bytes, ErrorType.AUDIO_UNAVAILABLE) as (
            path,
            size,
        ):
            # Reading stops just past the job maximum: such audio is refused however long it is.
            info = await probe(
                path, timeout_s=self._read_timeout_s, max_duration_s=self._max_job_audio_s + 1.0
            )
            if info.duration_s > self._max_job_audio_s:
                raise PermanentError(
                    ErrorType.AUDIO_TOO_LONG,
                    f"{info.duration_s:.0f} s is over the job maximum of "
                    f"{self._max_job_audio_s:.0f} s",
                )
            limits = None if transcriber is None else self.limits(transcriber)
            prepared = PreparedAudio(
                path=path,
                size_bytes=size,
                duration_s=info.duration_s,
                mime_type=info.mime_type,
                file_name=ref.file_name or path.name,
                source_url=ref.url,
                info=info,
            )
            if limits is None or needs_chunking(info, limits) or not needs_conversion(info, limits):
                yield prepared
                return
            with tempfile.TemporaryDirectory(prefix="scribe-convert-") as folder:
                yield await self._converted(prepared, info, limits, Path(folder))

    async def _converted(
        self, audio: PreparedAudio, info: AudioInfo, limits: TranscriberLimits, folder: Path
    ) -> PreparedAudio:
        """The audio as limits.convert_to in folder, in a thread. The job's URL is dropped: a
        vendor fetching it would get the original format."""
        target = folder / f"{Path(audio.file_name).stem or 'audio'}.{limits.convert_to}"
        converted = await asyncio.to_thread(
            convert,
            audio.path,
            target,
            limits.convert_to,
            limits.sample_rate,
            # Opus decodes at about 60x real time on one core: the budget grows with the audio.
            timeout_s=self._read_timeout_s * max(1.0, info.duration_s / CONVERT_BUDGET_PER_S),
            max_duration_s=info.duration_s + CONVERT_SLACK_S,
        )
        return PreparedAudio(
            path=target,
            size_bytes=converted.size_bytes,
            duration_s=converted.duration_s,
            mime_type=converted.mime_type,
            file_name=target.name,
            source_url=None,
            info=converted,
        )

    async def document(self, ref: DocumentRef) -> PreparedDocument:
        """The document checked against the size limit and left on disk, to be streamed (never
        read whole into memory): the job's own file under the storage root, or a download kept
        in a temporary folder for as long as the returned PreparedDocument lives."""
        limit_bytes = self._max_document_bytes
        folder: _DocumentFolder | None = None
        if ref.path is not None:
            path, size = local_path(ref, self._policy, ErrorType.DOCUMENT_UNAVAILABLE)
            if size > limit_bytes:
                raise PermanentError(ErrorType.FILE_TOO_LARGE, f"larger than {limit_bytes} bytes")
        else:
            assert ref.url is not None
            folder = _DocumentFolder()
            path = folder.path / "document"
            try:
                size = await _download(
                    self._session,
                    ref.url,
                    self._policy,
                    limit_bytes,
                    path,
                    ErrorType.DOCUMENT_UNAVAILABLE,
                )
            except BaseException:
                folder.remove()
                raise
        return PreparedDocument(
            document_type=ref.document_type,
            document_name=ref.document_name,
            mime_type=DOCUMENT_MIME_TYPES[ref.document_type],
            source=path,
            size_bytes=size,
            keep=folder,
        )


class _DocumentFolder:
    """A downloaded document's temporary folder, removed when the last PreparedDocument holding
    it is gone (or at exit): the note stage drops its documents when it returns."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="scribe-doc-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def remove(self) -> None:
        self._finalizer()
