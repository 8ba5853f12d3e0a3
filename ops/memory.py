"""Worst-case memory of one in-flight job's vendor work, with the caps in place (issue 12, item 5).

    .venv/bin/python -m ops.memory

The parent serves hostile and maximal vendor answers on loopback. Each scenario runs in a fresh
child process (`python -m ops.memory --child NAME --base URL --dir DIR`), which makes one small
vendor call first (so that lazy imports and the connection pool are in its reference), resets
its peak RSS (`/proc/self/clear_refs`), runs the scenario through the real clients (VendorHttp
with the default caps, the Intron and Invox providers, MediaFetcher), and reports its peak RSS
(VmHWM) over its RSS before the scenario. `baseline` (the small call again) is the reference the
other figures are read beside; `documents-read-whole` does what the worker did before (documents
read into memory with a decoded copy of each TXT) so that the old cost is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from schemas.jobs import DocumentRef, JobRequest, TranscriptionHandle
from worker.constants import DEFAULT_MAX_VENDOR_RESPONSE_BYTES, MAX_TRANSCRIPT_SEGMENTS
from worker.errors import ScribeError
from worker.media import FetchPolicy, MediaFetcher
from worker.providers.http import MAX_JSON_VALUES, VendorHttp
from worker.providers.intron import IntronTranscriber
from worker.providers.invox import InvoxClient, InvoxNoteWriter, InvoxTranscriber
from worker.providers.invox_auth import InvoxTokenSource
from worker.settings import IntronSettings, InvoxSettings, Secret

MIB = 1024 * 1024
CAP = DEFAULT_MAX_VENDOR_RESPONSE_BYTES
DOCUMENTS = 20
DOCUMENT_BYTES = 20 * 1000 * 1000  # "20 MB", under SCRIBE_MAX_DOCUMENT_BYTES (20 MiB)
JOB = JobRequest.model_validate(
    {"jobId": "00000000-0000-4000-8000-000000000001", "audio": {"path": "a.wav"}}
)

# ---------------------------------------------------------------- answers (parent)


def _gzip_bomb(expanded_mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * MIB
    return b"".join(
        [*(compressor.compress(zeros) for _ in range(expanded_mib)), compressor.flush()]
    )


def _invox_max() -> bytes:
    """100,000 segments (the cap) carrying ~5 MiB of text, padded with an (ignored)
    vttTranscription to just under the answer cap."""
    segment = {"text": "x" * 48, "start": 1234.56, "end": 1235.67}
    segments = json.dumps([segment] * MAX_TRANSCRIPT_SEGMENTS)
    head = (
        '{"processingStatus": "COMPLETED", "transcription": ' + segments + ', "vttTranscription": "'
    )
    return (head + "v" * (CAP - len(head) - 4) + '"}').encode()


def _intron_max() -> bytes:
    """A diarized transcript of 100,000 turns (4.9 M characters) and ~5 MiB of post-processing
    Markdown, escaped as JSON: what the Intron status answer can carry at most."""
    transcript = "\n".join(f"SPEAKER_0{i % 2}: " + "y" * 36 for i in range(MAX_TRANSCRIPT_SEGMENTS))
    data = {
        "processing_status": "FILE_TRANSCRIBED",
        "audio_transcript": transcript,
        "processed_audio_duration_in_seconds": 600,
        "transcript_summary": "#" * (2 * MIB),
        "transcript_soap_note": "#" * (2 * MIB),
    }
    return json.dumps({"status": "Ok", "data": data}).encode()


def _values_max() -> bytes:
    """The most JSON values an answer may have (MAX_JSON_VALUES), padded to the cap: the
    costliest answer the parser accepts, answered as a still-pending Invox transcription."""
    zeros = ",".join(["0"] * (MAX_JSON_VALUES - 10))
    head = '{"processingStatus": "PENDING", "transcription": [], "n": [' + zeros + '], "p": "'
    return (head + "p" * (CAP - len(head) - 4) + '"}').encode()


def _values_bomb() -> bytes:
    return b"[" + b",".join([b"0"] * ((CAP - 2) // 2)) + b"]"


class Vendor:
    """The loopback vendor: every route answers one prepared body."""

    def __init__(self) -> None:
        self.base = ""
        self.uploaded_bytes = 0
        self._bodies: dict[str, bytes] = {}

    def prepare(self) -> None:
        """Build every answer before any child runs, so that no scenario waits for one."""
        self._bodies = {
            "bomb": _gzip_bomb(1024),
            "plain": b" " * (50 * MIB),
            "values": _values_bomb(),
            "values-max": _values_max(),
            "invox": _invox_max(),
            "intron": _intron_max(),
        }

    async def small(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "pad": "z" * 1000})

    async def bomb(self, request: web.Request) -> web.Response:
        body = self._bodies["bomb"]
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def plain(self, request: web.Request) -> web.Response:
        return web.Response(body=self._bodies["plain"])

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b" " * (64 * 1024)
        try:
            for _ in range(50 * 16):
                await response.write(chunk)
        except ConnectionError:
            pass  # the client stopped reading at its cap
        return response

    async def values(self, request: web.Request) -> web.Response:
        return web.Response(body=self._bodies["values"])

    async def invox_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.Response(body=self._bodies[body["requestId"]])

    async def intron_status(self, request: web.Request) -> web.Response:
        return web.Response(body=self._bodies["intron"])

    async def documents(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "documents": [
                    {"documentName": doc["documentName"], "signedUrl": f"{self.base}/put/{i}"}
                    for i, doc in enumerate(body["documents"])
                ]
            }
        )

    async def put(self, request: web.Request) -> web.Response:
        async for chunk in request.content.iter_chunked(64 * 1024):
            self.uploaded_bytes += len(chunk)
        return web.Response(status=200)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/small", self.small)
        app.router.add_post("/bomb", self.bomb)
        app.router.add_post("/plain", self.plain)
        app.router.add_post("/chunked", self.chunked)
        app.router.add_post("/values", self.values)
        app.router.add_post("/api/v1/get-transcription", self.invox_status)
        app.router.add_get("/file/v1/status/{file_id}", self.intron_status)
        app.router.add_post("/v1/generate-signed-urls-for-documents", self.documents)
        app.router.add_put("/put/{index}", self.put)
        return app


# ---------------------------------------------------------------- scenarios (child)

Scenario = Callable[[VendorHttp, str, Path], Awaitable[object]]


def _invox(http: VendorHttp, base: str) -> InvoxClient:
    settings = InvoxSettings(
        base_url=base,
        api_version="2026-03-01",
        access_token=Secret("memory-token"),
        token_url=None,
        app_id=None,
        app_key=None,
    )
    return InvoxClient(settings, http, InvoxTokenSource(settings, http))


def _handle(provider: str, handle: str = "h1") -> TranscriptionHandle:
    return TranscriptionHandle.model_validate(
        {"provider": provider, "handle": handle, "submittedAt": datetime.now(UTC).isoformat()}
    )


async def _post(http: VendorHttp, base: str, path: str) -> object:
    return await http.request_json("invox", "memory.call", "POST", f"{base}{path}")


async def _invox_transcript(http: VendorHttp, base: str, folder: Path) -> object:
    return await InvoxTranscriber(_invox(http, base)).status(JOB, _handle("invox", "invox"))


async def _invox_values(http: VendorHttp, base: str, folder: Path) -> object:
    return await InvoxTranscriber(_invox(http, base)).status(JOB, _handle("invox", "values-max"))


async def _intron_transcript(http: VendorHttp, base: str, folder: Path) -> object:
    settings = IntronSettings(
        base_url=base,
        api_key=Secret("memory-key"),
        upload_path="/file/v1/upload",
        status_path="/file/v1/status/{file_id}",
    )
    job = JobRequest.model_validate(
        {**JOB.model_dump(mode="json", by_alias=True), "intron": {"useDiarization": True}}
    )
    return await IntronTranscriber(settings, http).status(job, _handle("intron"))


def _document_refs() -> list[DocumentRef]:
    return [
        DocumentRef(
            path=f"doc{i}.{'txt' if i % 2 else 'pdf'}",
            document_type="TXT" if i % 2 else "PDF",
            document_name=f"doc{i}",
        )
        for i in range(DOCUMENTS)
    ]


async def _documents_streamed(http: VendorHttp, base: str, folder: Path) -> object:
    """Today's path: MediaFetcher.document (files left on disk) -> Invox signed-URL uploads,
    plus the bounded prefix a text reader takes of each TXT."""
    async with aiohttp.ClientSession() as fetch_session:
        policy = FetchPolicy(frozenset(), folder, 60.0)
        media = MediaFetcher(fetch_session, policy, 10**8, 600.0, 20 * MIB)
        documents = [await media.document(ref) for ref in _document_refs()]
        await InvoxNoteWriter(_invox(http, base)).upload_documents(JOB, documents)
        texts = [
            await asyncio.to_thread(doc.read_text, 256 * 1024)
            for doc in documents
            if doc.document_type == "TXT"
        ]
        return len(texts)


async def _documents_read_whole(http: VendorHttp, base: str, folder: Path) -> object:
    """What the worker did before: every document read into memory, and each TXT decoded whole
    (by the note writers) while the job was in flight."""
    contents = [
        await asyncio.to_thread((folder / ref.path).read_bytes)
        for ref in _document_refs()
        if ref.path is not None
    ]
    decoded = [content.decode("utf-8", "replace") for content in contents[1::2]]
    return sum(map(len, contents)) + sum(map(len, decoded))


SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "baseline": ("a 1 KB answer (the reference)", lambda h, b, f: _post(h, b, "/small")),
    "gzip-bomb": ("1 MiB gzip expanding to 1 GiB", lambda h, b, f: _post(h, b, "/bomb")),
    "over-cap-length": (
        "50 MiB answer with Content-Length",
        lambda h, b, f: _post(h, b, "/plain"),
    ),
    "over-cap-chunked": (
        "50 MiB chunked answer, no Content-Length",
        lambda h, b, f: _post(h, b, "/chunked"),
    ),
    "values-bomb": ("32 MiB of [0,0,0,...]", lambda h, b, f: _post(h, b, "/values")),
    "values-max": (
        "999,990 JSON values padded to 32 MiB (Invox, pending)",
        _invox_values,
    ),
    "invox-transcript-max": (
        "Invox transcript: 100,000 segments, 32 MiB answer",
        _invox_transcript,
    ),
    "intron-transcript-max": (
        "Intron transcript: 100,000 turns + 4 MiB post-processing",
        _intron_transcript,
    ),
    "documents-streamed": ("twenty 20 MB documents, streamed to signed URLs", _documents_streamed),
    "documents-read-whole": ("the same, read whole as before (old cost)", _documents_read_whole),
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


async def _child(name: str, base: str, folder: Path) -> dict[str, Any]:
    _, scenario = SCENARIOS[name]
    async with aiohttp.ClientSession() as session:
        http = VendorHttp(session, timeout_s=300.0)
        await _post(http, base, "/small")
        gc.collect()
        _reset_peak()
        reference_kib = _status_kib("VmRSS")
        started = time.monotonic()
        try:
            await scenario(http, base, folder)
            outcome = "ok"
        except ScribeError as exc:
            outcome = exc.error_type
        elapsed_s = time.monotonic() - started
        peak_kib = _status_kib("VmHWM")
    return {
        "scenario": name,
        "outcome": outcome,
        "reference_mib": round(reference_kib / 1024, 1),
        "peak_over_reference_mib": round((peak_kib - reference_kib) / 1024, 1),
        "seconds": round(elapsed_s, 2),
    }


# ---------------------------------------------------------------- parent


def _write_documents(folder: Path) -> None:
    block = (b"Referral: patient seen for chest pain, ECG normal. " * 1300)[:65536]
    for ref in _document_refs():
        assert ref.path is not None
        with (folder / ref.path).open("wb") as out:
            for _ in range(DOCUMENT_BYTES // len(block)):
                out.write(block)
            out.write(block[: DOCUMENT_BYTES % len(block)])


async def _run_child(name: str, base: str, folder: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.memory",
        "--child",
        name,
        "--base",
        base,
        "--dir",
        str(folder),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"scenario {name} exited with {process.returncode}")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def _parent(names: list[str]) -> int:
    vendor = Vendor()
    vendor.prepare()
    runner = web.AppRunner(vendor.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    vendor.base = f"http://127.0.0.1:{port}"
    try:
        with tempfile.TemporaryDirectory(prefix="scribe-memory-") as folder:
            _write_documents(Path(folder))
            results = [await _run_child(name, vendor.base, Path(folder)) for name in names]
    finally:
        await runner.cleanup()
    print(f"{'scenario':<24} {'outcome':<20} {'ref MiB':>8} {'peak+ MiB':>10} {'s':>6}  what")
    for result in results:
        print(
            f"{result['scenario']:<24} {result['outcome']:<20} {result['reference_mib']:>8} "
            f"{result['peak_over_reference_mib']:>10} {result['seconds']:>6}  "
            f"{SCENARIOS[result['scenario']][0]}"
        )
    current = [r for r in results if r["scenario"] not in ("baseline", "documents-read-whole")]
    if current:
        worst = max(current, key=lambda r: float(r["peak_over_reference_mib"]))
        print(
            f"worst case per in-flight job: +{worst['peak_over_reference_mib']} MiB over the "
            f"reference ({worst['scenario']}); uploaded {vendor.uploaded_bytes} document bytes"
        )
    print(json.dumps(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_child(args.child, args.base, Path(args.dir)))))
        return 0
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    return asyncio.run(_parent(args.scenarios or list(SCENARIOS)))


if __name__ == "__main__":
    raise SystemExit(main())
