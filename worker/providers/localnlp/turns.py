"""Speaker turns: ACI-Bench tags, speaker lines or plain text; long turns in pieces; the
patient's gender from the clinician's words."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from worker.providers.local_budget import NO_DEADLINE, Deadline
from worker.providers.localnlp import rules
from worker.providers.localnlp.model import Gender, Role, Turn
from worker.roles import assign_roles


def parse_turns(text: str, deadline: Deadline = NO_DEADLINE) -> list[Turn]:
    """Turns with a role; plain text becomes one clinician turn per line."""
    turns: list[Turn] = []
    # Whether an unlabelled line continues the turn before it (computed once: per line, it
    # copied the whole text each time).
    head = text.lstrip()
    continues = bool(rules.TAG_LINE_RE.match(head) or rules.SPEAKER_LINE_RE.match(head))
    speakers = diarized_roles(text, deadline)

    def role_of(label: str) -> Role:
        name = label.strip().lower()
        # Diarized labels (SPEAKER_01): from what each speaker says, not who spoke first.
        return _named_role(name) or speakers.get(name, "patient")

    offset = 0
    named: list[tuple[str, str]] = []  # (role name, text) of the turns a label names the role of
    for raw in text.splitlines(keepends=True):
        deadline.check()
        start, offset = offset, offset + len(raw)
        line = raw.rstrip("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
        if not line.strip():
            continue
        match = rules.TAG_LINE_RE.match(line) or rules.SPEAKER_LINE_RE.match(line)
        if match:
            turns.append(Turn(role_of(match.group(1)), match.group(2), start + match.start(2)))
            if _named_role(match.group(1).strip().lower()):
                named.append((turns[-1].role, match.group(2)))
        elif turns and continues:
            turns.append(Turn(turns[-1].role, line, start))
        else:
            turns.append(Turn("doctor", line, start))
    if _labels_swapped(named):
        swap: dict[Role, Role] = {"doctor": "patient", "patient": "doctor"}
        turns = [Turn(swap[t.role], t.text, t.start) for t in turns]
    return turns


def _labels_swapped(named: list[tuple[str, str]]) -> bool:
    """Whether the "doctor" and "patient" labels are the wrong way round: by what each says
    (worker.roles), the "doctor" is the patient and the "patient" the clinician. Transcripts
    carry such swaps (ACI-Bench has a few: the "doctor" reporting "my pcp told me ..."), and a
    swapped note puts the clinician's exam in the history."""
    if {role for role, _ in named} != {"doctor", "patient"}:
        return False
    roles = dict(zip((role for role, _ in named), assign_roles(named), strict=True))
    return roles["doctor"] == "patient" and roles["patient"] == "clinician"


def _named_role(name: str) -> Role | None:
    if name.startswith("patient"):
        return "patient"
    if any(name.startswith(word) for word in rules.DOCTOR_WORDS):
        return "doctor"
    return None


def diarized_roles(text: str, deadline: Deadline = NO_DEADLINE) -> dict[str, Role]:
    """The role of each speaker label that names no role (SPEAKER_01), by worker.roles: the
    most clinician-like speaker is the doctor, every other one a patient."""
    turns: list[tuple[str | None, str]] = []
    for line in text.splitlines():
        deadline.check()
        match = rules.TAG_LINE_RE.match(line) or rules.SPEAKER_LINE_RE.match(line)
        if match:
            name = match.group(1).strip().lower()
            if _named_role(name) is None:
                turns.append((name, match.group(2)))
    roles = assign_roles(turns)
    return {
        str(name): "doctor" if role == "clinician" else "patient"
        for (name, _), role in zip(turns, roles, strict=True)
        if role != "unknown"
    }


def pieces(text: str) -> Iterator[str]:
    """text in pieces of at most rules.MAX_TURN_CHARS, each cut after its last sentence end (else
    its last space); a turn that short is one piece, itself."""
    start = 0
    while len(text) - start > rules.MAX_TURN_CHARS:
        end = start + rules.MAX_TURN_CHARS
        cut = max(text.rfind(f"{mark} ", start, end) for mark in ".?!") + 1
        if cut <= start:
            cut = text.rfind(" ", start, end)
        if cut <= start:
            cut = end
        yield text[start:cut]
        start = cut
    yield text[start:]


def detect_gender(turns: Iterable[Turn]) -> Gender:
    votes = {"male": 0, "female": 0}
    for turn in turns:
        if turn.role != "doctor":
            continue
        for pattern, gender in rules.GENDER_CUES:
            votes[gender] += len(pattern.findall(turn.text))
    if votes["male"] == votes["female"]:
        return "unknown"
    return "male" if votes["male"] > votes["female"] else "female"
