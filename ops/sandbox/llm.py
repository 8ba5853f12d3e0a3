"""An OpenAI-compatible chat endpoint, `POST /v1/chat/completions`, for the worker's "llm"
summary and note providers: deterministic and offline, no model behind it.

It reads what the worker's prompt holds (worker/providers/llm.py): the transcript as numbered
lines "[id] text" after a line starting "Transcript", the answer shape the first paragraph asks
for ({"summary"}, {"fields"} for SOAP, {"clinicalNote"}), and for the note the template fields,
the JSON line after "Template fields:". It answers as an extractive summariser would: sentences
of the transcript, speaker labels cut, questions and sentences of few words left out, each cited
by the id of the segment it was taken from, so every citation it gives holds. A prompt it does
not recognise gets prose, as a chat model would answer.

Faults beyond the transport ones (ops/sandbox/faults.py): `bad_citations` makes every other
cited statement (the 2nd, 4th, ...) cite ids outside the transcript (`out_of_range`) or a
segment that does not hold it (`unsupported`), or leaves all citations out (`missing`);
`bad_answer` answers with prose instead of JSON (`not_json`), the right keys with the wrong
shape (`wrong_shape`) or an envelope without choices (`no_choices`).
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ops.sandbox.content import SOAP_SECTIONS
from ops.sandbox.faults import LLM_KINDS, FaultRule
from ops.sandbox.replies import INVALID_REQUEST, Abort, vendor_error
from ops.sandbox.state import SandboxState

ENDPOINT: Final = "llm.chat"
MAX_SUMMARY_SENTENCES: Final = 8
MAX_ARRAY_ITEMS: Final = 2
MIN_CONTENT_WORDS: Final = 3
HPI_HEADER: Final = "HISTORY OF PRESENT ILLNESS"
PLAN_HEADER: Final = "ASSESSMENT AND PLAN"
PROSE_ANSWER: Final = "I can help with consultation notes: send a numbered transcript."

_SEGMENT_LINE: Final = re.compile(r"\[(\d+)\] (.+)")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+")
# "[doctor] ...", "SPEAKER_01: ...", "Doctor: ..." at the start of a turn.
_LABEL: Final = re.compile(r"^\s*(?:\[[^\]]{1,20}\]|SPEAKER_\d+:|[A-Za-z]{2,12}:)\s*")
_WORD: Final = re.compile(r"[a-z0-9]+")
_STOP_WORDS: Final = (
    "about after again also been does from have into just like more only over some such than "
    "that them then there they this very want were what when where which will with would your "
    "you our the and for are was not"
)
_STOP: Final = frozenset(_STOP_WORDS.split())
_ids = itertools.count(1)


@dataclass(frozen=True)
class Sentence:
    text: str
    segment: int
    words: frozenset[str]


@dataclass(frozen=True)
class Prompt:
    task: str  # "summary", "soap", "note" or "" (not recognised)
    cite: bool
    segments: tuple[tuple[int, str], ...]
    fields: tuple[dict[str, Any], ...]


def content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP)


def _task(instruction: str) -> str:
    if '"clinicalNote"' in instruction:
        return "note"
    if '"fields"' in instruction:
        return "soap"
    return "summary" if '"summary"' in instruction else ""


def _segments(lines: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """The numbered lines after the first line that starts "Transcript", up to a blank line."""
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("Transcript")), None)
    out: list[tuple[int, str]] = []
    for line in lines[start:] if start is not None else ():
        match = _SEGMENT_LINE.fullmatch(line)
        if match is None:
            break
        out.append((int(match.group(1)), match.group(2)))
    return tuple(out)


def _fields(lines: Sequence[str]) -> tuple[dict[str, Any], ...]:
    for index, line in enumerate(lines[:-1]):
        if line == "Template fields:":
            try:
                fields = json.loads(lines[index + 1])
            except ValueError:
                return ()
            if isinstance(fields, list):
                return tuple(f for f in fields if isinstance(f, dict) and "id" in f)
    return ()


def read_prompt(prompt: str) -> Prompt:
    lines = prompt.splitlines()
    instruction = prompt.split("\n\n", 1)[0]
    return Prompt(
        _task(instruction), '"citations"' in instruction, _segments(lines), _fields(lines)
    )


def sentences(segments: Sequence[tuple[int, str]]) -> list[Sentence]:
    """The statements of the transcript worth a summary: not questions, not small talk."""
    out: list[Sentence] = []
    for segment, text in segments:
        for piece in _SENTENCE_END.split(_LABEL.sub("", text)):
            piece = piece.strip()
            words = content_words(piece)
            if piece.endswith((".", "!")) and len(words) >= MIN_CONTENT_WORDS:
                out.append(Sentence(piece[0].upper() + piece[1:], segment, words))
    return out


def _chosen(pool: Sequence[Sentence]) -> list[Sentence]:
    """The MAX_SUMMARY_SENTENCES richest sentences, in transcript order."""
    ranked = sorted(range(len(pool)), key=lambda i: (-len(pool[i].words), i))
    return [pool[i] for i in sorted(ranked[:MAX_SUMMARY_SENTENCES])]


def _summary(pool: Sequence[Sentence], cite: bool) -> dict[str, Any]:
    chosen = _chosen(pool)
    half = (len(chosen) + 1) // 2
    parts = [HPI_HEADER, *(s.text for s in chosen[:half])]
    if chosen[half:]:
        parts += ["", PLAN_HEADER, *(s.text for s in chosen[half:])]
    answer: dict[str, Any] = {"summary": "\n".join(parts)}
    if cite:
        answer["citations"] = [[s.segment] for s in chosen]
    return answer


def _soap(pool: Sequence[Sentence]) -> dict[str, Any]:
    chosen = _chosen(pool)
    n = len(chosen)
    fields = []
    for i, (name, description) in enumerate(SOAP_SECTIONS):
        run = chosen[i * n // 4 : (i + 1) * n // 4]
        value = " ".join(s.text for s in run) or "Not discussed."
        fields.append({"name": name, "description": description, "value": value})
    return {"fields": fields}


def _best(pool: Sequence[Sentence], field: dict[str, Any], index: int) -> list[Sentence]:
    """The sentences that share most words with the field's name and description (the
    index-th sentence when none does), most relevant first."""
    wanted = content_words(f"{field.get('name', '')} {field.get('description', '')}")
    scored = sorted((-len(s.words & wanted), i) for i, s in enumerate(pool) if s.words & wanted)
    if scored:
        return [pool[i] for _, i in scored]
    return [pool[index % len(pool)]] if pool else []


def _note_entry(pool: Sequence[Sentence], field: dict[str, Any], index: int) -> dict[str, Any]:
    """A string field gets its best sentence, an array its best MAX_ARRAY_ITEMS; numbers,
    booleans and enums are left "" (not stated), as a careful model leaves what it cannot cite."""
    best = _best(pool, field, index)
    kind = field.get("type")
    if kind == "string" and best:
        return {"id": field["id"], "value": best[0].text, "segmentIds": [best[0].segment]}
    if kind == "array" and best:
        items = best[:MAX_ARRAY_ITEMS]
        ids = sorted({s.segment for s in items})
        return {"id": field["id"], "value": [s.text for s in items], "segmentIds": ids}
    return {"id": field["id"], "value": [] if kind == "array" else ""}


def compose(prompt: Prompt) -> dict[str, Any] | None:
    """The answer to a recognised prompt, None for any other."""
    pool = sentences(prompt.segments)
    if prompt.task == "summary":
        return _summary(pool, prompt.cite)
    if prompt.task == "soap":
        return _soap(pool)
    if prompt.task == "note":
        entries = [_note_entry(pool, f, i) for i, f in enumerate(prompt.fields)]
        return {"clinicalNote": entries}
    return None


def _farthest(segment: int, segments: Sequence[tuple[int, str]], words: frozenset[str]) -> int:
    """The segment, other than `segment`, that shares fewest words with a statement."""
    others = [(len(content_words(text) & words), sid) for sid, text in segments if sid != segment]
    return min(others)[1] if others else segment


def _wrong_ids(ids: list[int], prompt: Prompt, how: str, index: int) -> list[int]:
    if how == "out_of_range":
        return [len(prompt.segments) + index, -1]
    words = frozenset().union(*(content_words(t) for s, t in prompt.segments if s in ids))
    return [_farthest(ids[0] if ids else -1, prompt.segments, words)]


def with_bad_citations(answer: dict[str, Any], prompt: Prompt, how: str) -> dict[str, Any]:
    """The answer with every other citation (the 2nd, 4th, ...) wrong, or with none."""
    if "citations" in answer:
        if how == "missing":
            return {k: v for k, v in answer.items() if k != "citations"}
        cites = answer["citations"]
        bad = [_wrong_ids(ids, prompt, how, i) if i % 2 else ids for i, ids in enumerate(cites)]
        return {**answer, "citations": bad}
    entries = answer.get("clinicalNote")
    if not isinstance(entries, list):
        return answer
    changed: list[dict[str, Any]] = []
    cited = 0
    for entry in entries:
        if "segmentIds" not in entry:
            changed.append(entry)
            continue
        if how == "missing":
            changed.append({k: v for k, v in entry.items() if k != "segmentIds"})
        elif cited % 2:
            wrong = _wrong_ids(entry["segmentIds"], prompt, how, cited)
            changed.append({**entry, "segmentIds": wrong})
        else:
            changed.append(entry)
        cited += 1
    return {**answer, "clinicalNote": changed}


def _wrong_shape(answer: dict[str, Any]) -> dict[str, Any]:
    """The keys asked for, holding the wrong kind of value."""
    return {
        key: {"text": value} if isinstance(value, list) else [value]
        for key, value in answer.items()
    }


def _content(answer: dict[str, Any] | None, prompt: Prompt, fault: FaultRule | None) -> str:
    if answer is None or (
        fault is not None and fault.kind == "bad_answer" and fault.answer == "not_json"
    ):
        return PROSE_ANSWER
    if fault is not None and fault.kind == "bad_citations":
        answer = with_bad_citations(answer, prompt, fault.citations)
    elif fault is not None and fault.kind == "bad_answer" and fault.answer == "wrong_shape":
        answer = _wrong_shape(answer)
    return json.dumps(answer, ensure_ascii=False)


def completion(model: str, content: str | None) -> dict[str, Any]:
    """The chat.completion envelope; content None gives one without choices."""
    choices = (
        []
        if content is None
        else [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ]
    )
    return {
        "id": f"chatcmpl-sandbox-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _refuse(message: str) -> Abort:
    return Abort(vendor_error(ENDPOINT, 400, message, INVALID_REQUEST))


async def _request(request: web.Request) -> tuple[str, str]:
    """(model, the last user message) of a chat request, or 400 invalid_request_error."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise _refuse("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _refuse("The body must be a JSON object.")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise _refuse("you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        raise _refuse("'messages' must be a non-empty array")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise _refuse("each message needs a role and a string content")
        if message.get("role") not in ("system", "user", "assistant"):
            raise _refuse("a message's role must be system, user or assistant")
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise _refuse("the conversation has no user message")
    return model, users[-1]


async def chat(request: web.Request, state: SandboxState) -> web.Response:
    model, text = await _request(request)
    prompt = read_prompt(text)
    fault = state.faults.take(ENDPOINT, LLM_KINDS)
    if fault is not None and fault.kind == "bad_answer" and fault.answer == "no_choices":
        return web.json_response(completion(model, None))
    return web.json_response(completion(model, _content(compose(prompt), prompt, fault)))
