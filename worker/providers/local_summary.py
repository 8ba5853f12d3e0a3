"""Offline, extractive consultation summary ("local" summarizer).

Every sentence it writes comes from this consultation's transcript: it is selected, cleaned
(fillers, false starts, voice-assistant commands and ACI-Bench tokenisation removed) and put in
note style (the patient's "I"/"my", and the clinician's "you"/"your" addressed to the patient,
become third person). Nothing is retrieved from other patients' notes; the only things learned
from ACI-Bench's train split are the section names and the cue words that route a sentence to a
section (see docs/quality.md).

Input: ACI-Bench style turns (`[doctor] ...` / `[patient] ...`), speaker lines
(`SPEAKER_01: ...`, `Doctor: ...`; the first speaker is taken as the clinician) or plain text
(one speaker, treated as the clinician's dictation and conversation).

Output, in the Summary model shape every provider returns:
- SUMMARY: a sectioned note (CHIEF COMPLAINT, HISTORY OF PRESENT ILLNESS, REVIEW OF SYSTEMS,
  PHYSICAL EXAMINATION, RESULTS, ASSESSMENT AND PLAN), one sentence per line; empty sections are
  left out.
- SOAP_TEMPLATE: fields Subjective, Objective, Assessment, Plan (name, description, value), like
  Invox's ISOAPTemplate; a value with nothing found is "".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from schemas.errors import ErrorType
from schemas.jobs import JobRequest, SoapField, Summary, Transcript
from worker.constants import DEFAULT_LOCAL_SUMMARY_BUDGET_S, MAX_TRANSCRIPT_BYTES
from worker.errors import PermanentError
from worker.numbers import TEN_WORDS, UNIT_WORDS
from worker.providers.local_budget import NO_DEADLINE, BudgetExceeded, CpuPool, Deadline

PROVIDER: Final = "local"

# What the summarizer reads of a transcript (issue 12: a valid job may be hostile). Over
# MAX_TRANSCRIPT_BYTES of UTF-8 (5 MiB): transcriptTooLarge. Past the sentence cap the rest of
# the transcript is left out: the longest ACI-Bench dialogue has 252 sentences and a two-hour
# consultation about 3,000, while 5,000 of the longest sentences the byte cap lets through (all
# 5 MB of it) take about 10 s here, a sixth of the default budget.
MAX_SENTENCES: Final = 5_000
# A longer turn (one unpunctuated line of ASR output) is cleaned in pieces of at most this many
# characters, cut after a sentence end where there is one, so that no single regular-expression
# pass holds the GIL, and so the event loop, for long. The longest ACI-Bench turn has 3,119.
MAX_TURN_CHARS: Final = 20_000

Role = Literal["doctor", "patient"]
Gender = Literal["male", "female", "unknown"]

CC: Final = "CHIEF COMPLAINT"
HPI: Final = "HISTORY OF PRESENT ILLNESS"
ROS: Final = "REVIEW OF SYSTEMS"
EXAM: Final = "PHYSICAL EXAMINATION"
RESULTS: Final = "RESULTS"
AP: Final = "ASSESSMENT AND PLAN"
SECTIONS: Final = (CC, HPI, ROS, EXAM, RESULTS, AP)

SOAP_DESCRIPTIONS: Final = {
    "Subjective": "Chief complaint, history of present illness and review of systems.",
    "Objective": "Physical examination findings and results of tests.",
    "Assessment": "The clinician's assessment and diagnoses.",
    "Plan": "Treatment, tests ordered, referrals, follow-up and instructions.",
}


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str


@dataclass
class Note:
    """Sentences per section, in transcript order."""

    sections: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SECTIONS})
    assessment: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    # The keys of each section's sentences: a set, as comparing each new sentence with every
    # one before it made a long transcript quadratic.
    _keys: dict[str, set[str]] = field(default_factory=dict, repr=False, compare=False)

    def add(self, section: str, sentence: str) -> None:
        bucket = self.sections[section]
        keys = self._keys.get(section)
        if keys is None:
            keys = self._keys[section] = {_key(s) for s in bucket}
        key = _key(sentence)
        if key and key not in keys:
            keys.add(key)
            bucket.append(sentence)


# --------------------------------------------------------------------------- parsing

_TAG_LINE_RE: Final = re.compile(r"^\s*\[([A-Za-z_ 0-9-]+)\]\s*(.*)$")
_SPEAKER_LINE_RE: Final = re.compile(
    r"^\s*(SPEAKER[ _]?\d+|doctor|patient|clinician|dr|physician|nurse)\s*:\s*(.*)$",
    re.IGNORECASE,
)
_DOCTOR_WORDS: Final = ("doctor", "clinician", "dr", "physician", "nurse", "provider")


def parse_turns(text: str, deadline: Deadline = NO_DEADLINE) -> list[Turn]:
    """Turns with a role; plain text becomes one clinician turn per line."""
    turns: list[Turn] = []
    # Whether an unlabelled line continues the turn before it (computed once: per line, it
    # copied the whole text each time).
    head = text.lstrip()
    continues = bool(_TAG_LINE_RE.match(head) or _SPEAKER_LINE_RE.match(head))
    speakers: dict[str, Role] = {}

    def role_of(label: str) -> Role:
        name = label.strip().lower()
        if name.startswith("patient"):
            return "patient"
        if any(name.startswith(word) for word in _DOCTOR_WORDS):
            return "doctor"
        # Diarized labels: the first speaker is the clinician, every other one the patient.
        if name not in speakers:
            speakers[name] = "doctor" if not speakers else "patient"
        return speakers[name]

    for line in text.splitlines():
        deadline.check()
        if not line.strip():
            continue
        match = _TAG_LINE_RE.match(line) or _SPEAKER_LINE_RE.match(line)
        if match:
            turns.append(Turn(role_of(match.group(1)), match.group(2)))
        elif turns and continues:
            turns.append(Turn(turns[-1].role, line))
        else:
            turns.append(Turn("doctor", line))
    return turns


# --------------------------------------------------------------------------- cleaning

_CONTRACTIONS: Final = (
    (r"\bca n't\b|\bcan't\b", "cannot"),
    (r"\bwo n't\b|\bwon't\b", "will not"),
    (r"\bsha n't\b", "shall not"),
    (r"\b(\w+) n't\b", r"\1 not"),
    (r"\b(\w+)n't\b", r"\1 not"),
    (r"\bgon na\b|\bgonna\b", "going to"),
    (r"\bwan na\b|\bwanna\b", "want to"),
    (r"\bgot ta\b|\bgotta\b", "have to"),
    (r"\bkinda\b", "kind of"),
    (r"\bsorta\b", "sort of"),
    (r"\bwhats\b", "what's"),
    (r"\bthats\b", "that's"),
    (r"\bdont\b", "do not"),
    (r"\bim\b", "i'm"),
    (r"\bive\b", "i've"),
    (r"\bok\b", "okay"),
)
_CONTRACTION_RES: Final = tuple((re.compile(p, re.IGNORECASE), r) for p, r in _CONTRACTIONS)
_FILLER_RE: Final = re.compile(
    r"\b(?:uh-huh|mm-hmm|mhm|hmm+|mm+|uh+|um+|uhm|er|ah|erm)\b[,.]?\s*", re.IGNORECASE
)
_PHRASE_FILLER_RE: Final = re.compile(
    r"(?:^|(?<=[\s,]))(?:you know|i mean|let's see|sort of like|kind of like|"
    r"like|basically|actually|literally)\s*,\s*",
    re.IGNORECASE,
)
_ASSISTANT_RE: Final = re.compile(
    r"(?:hey|okay|ok)?\s*,?\s*\b(?:dragon|dax)\b\s*,?"
    r"(?:\s*(?:show me|order|finalize|please|go ahead)[^.?!]*)?",
    re.IGNORECASE,
)
_FALSE_START_RE: Final = re.compile(r"\b(\w+)-(?=\s|$)")
_REPEAT_RE: Final = re.compile(r"\b(\w+(?:'\w+)?)((?:\s*,)?\s+\1\b)+", re.IGNORECASE)
_REPEAT2_RE: Final = re.compile(
    r"\b(\w+\s+\w+)((?:\s*,)?\s+\1\b)+", re.IGNORECASE
)  # "in the , in the"
_SPACE_RE: Final = re.compile(r"\s+")
_LEADING_RE: Final = re.compile(
    r"^(?:(?:okay|alright|all right|so|and|well|yeah|yes|yep|no|nope|now|but|oh|"
    r"great|good|perfect|right|sure|um|uh|then|also|anyway|alrighty|got it|i see|"
    r"hey|wow|gosh|excellent|awesome|cool|fine)\b\s*[,.]?\s*)+",
    re.IGNORECASE,
)


_NUMBER_WORD_ALT: Final = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
    "fifty|sixty|seventy|eighty|ninety"
)


def clean(text: str) -> str:
    """Spoken text -> written text: no fillers, repeats, false starts or assistant commands."""
    out = text.replace("…", "...").replace("\u2019", "'")
    out = re.sub(
        r"\b(\d+|" + _NUMBER_WORD_ALT + r") \. (\d|" + _NUMBER_WORD_ALT + r")\b",
        r"\1 point \2",
        out,
        flags=re.IGNORECASE,
    )
    out = re.sub(r"\s+([,.;:?!])", r"\1", out)  # ACI-Bench spaces out punctuation
    out = re.sub(r"(\w) '(\w)", r"\1'\2", out)
    for pattern, replacement in _CONTRACTION_RES:
        out = pattern.sub(replacement, out)
    # Tag questions ("..., okay?") are statements.
    out = re.sub(
        r",?\s*\b(?:okay|ok|right|alright|all right|you know|does that sound good|"
        r"sound good|does that make sense|is that okay|how does that sound)\s*\?",
        ".",
        out,
        flags=re.IGNORECASE,
    )
    out = _ASSISTANT_RE.sub(" ", out)
    out = _FALSE_START_RE.sub(" ", out)
    out = _FILLER_RE.sub(" ", out)
    out = _PHRASE_FILLER_RE.sub(" ", out)
    out = re.sub(r"\.\.\.+(?=\s*$)", ".", out)
    out = re.sub(r"\.\.\.+", ",", out)
    for _ in range(2):
        out = _REPEAT2_RE.sub(r"\1", out)
        out = _REPEAT_RE.sub(r"\1", out)
    out = re.sub(r"\s+([,.;:?!])", r"\1", out)
    out = re.sub(r",\s*(?=[,.?!])", "", out)
    out = re.sub(r"^[\s,.;:]+", "", out)
    return _SPACE_RE.sub(" ", out).strip()


_SENTENCE_RE: Final = re.compile(r"[^.?!]+(?:[.?!]+|$)")


def _pieces(text: str) -> Iterator[str]:
    """text in pieces of at most MAX_TURN_CHARS, each cut after its last sentence end (else
    its last space); a turn that short is one piece, itself."""
    start = 0
    while len(text) - start > MAX_TURN_CHARS:
        end = start + MAX_TURN_CHARS
        cut = max(text.rfind(f"{mark} ", start, end) for mark in ".?!") + 1
        if cut <= start:
            cut = text.rfind(" ", start, end)
        if cut <= start:
            cut = end
        yield text[start:cut]
        start = cut
    yield text[start:]


def split_sentences(text: str) -> list[str]:
    # Keep decimals ("2.5") and titles ("dr.") together.
    guarded = re.sub(r"(\d)\.(\d)", r"\1<dot>\2", text)
    guarded = re.sub(r"\b(dr|mr|mrs|ms|st|vs)\.", r"\1<dot>", guarded, flags=re.IGNORECASE)
    return [
        s.replace("<dot>", ".").strip() for s in _SENTENCE_RE.findall(guarded) if s.strip(" .?!,")
    ]


# --------------------------------------------------------------------------- person

_THIRD_PERSON_IRREGULAR: Final = {
    "am": "is",
    "'m": "is",
    "have": "has",
    "'ve": "has",
    "do": "does",
    "go": "goes",
    "are": "is",
    "were": "was",
    "'re": "is",
}
# Adverbs kept as spoken; the tense rewrite also leaves them (and modals) unchanged.
_COMMON_ADVERBS: Final = _wordset(
    "also just still really never always usually sometimes only even already recently probably "
    "definitely"
)
_NO_CHANGE: Final = _COMMON_ADVERBS | _wordset(
    "was did had can could will would should might must may 'll 'd shall not kind sort"
)
_ADVERBS: Final = _COMMON_ADVERBS | _wordset(
    "actually mostly generally normally typically often certainly"
)


_IRREGULAR_PAST: Final = _wordset(
    "fell felt went came got took saw broke made said told gave ran began thought knew found "
    "left kept put set cut hit quit slept woke ate drank drove rode wore sat stood lost "
    "brought bought caught taught heard meant read spent sent threw tore bent"
)


def _conjugate(word: str) -> str:
    lower = word.lower()
    if lower in _THIRD_PERSON_IRREGULAR:
        return _THIRD_PERSON_IRREGULAR[lower]
    if (
        lower in _NO_CHANGE
        or lower in _IRREGULAR_PAST
        or not lower.isalpha()
        or lower.endswith("ed")
    ):
        return word
    if lower.endswith(("s", "sh", "ch", "x", "z", "o")):
        return word + "es" if not lower.endswith("s") else word
    if lower.endswith("y") and len(lower) > 2 and lower[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _pronouns(gender: Gender) -> tuple[str, str, str]:
    if gender == "male":
        return "he", "his", "him"
    if gender == "female":
        return "she", "her", "her"
    return "the patient", "their", "them"


_SUBJECT_RES: dict[str, re.Pattern[str]] = {
    "i": re.compile(r"\bi(?:('m|'ve|'ll|'d)|\s+(\w+))(?:\s+(\w+))?", re.IGNORECASE),
    "you": re.compile(r"\byou(?:('re|'ve|'ll|'d)|\s+(\w+))(?:\s+(\w+))?", re.IGNORECASE),
}
_CONTRACTED: Final = {"'m": "is", "'re": "is", "'ve": "has", "'ll": "will", "'d": "would"}
_NOT_VERBS: Final = frozenset(
    [
        "and",
        "or",
        "but",
        "to",
        "that",
        "the",
        "a",
        "an",
        "in",
        "on",
        "at",
        "for",
        "with",
        "of",
        "about",
        "because",
        "if",
        "when",
        "so",
        "think",
        "guess",
        "know",
        "mean",
    ]
) - {"think", "guess", "know", "mean"}


_SUBJECT_CONTEXT: Final = _wordset(
    "and but so if when because that since as while before after until where how what why "
    "whether though although once then or maybe like which who think thought guess know "
    "believe hope mean say said suspect worry worried glad see saw sure seems sounds looks "
    "unless whenever where"
)


def _sub_subjects(
    pattern: re.Pattern[str],
    repl: Callable[[re.Match[str]], str],
    sentence: str,
    obj: str,
) -> str:
    """Rewrite a pronoun as a subject only where a subject can stand (sentence or clause start);
    after a verb or preposition ("sent you", "for you") it is an object."""
    pieces: list[str] = []
    last = 0
    for match in pattern.finditer(sentence):
        before, previous = _word_before(sentence, match.start())
        is_subject = (
            not before or before[-1] in ",;:.?!" or previous.strip(",;") in _SUBJECT_CONTEXT
        )
        pieces.append(sentence[last : match.start()])
        if is_subject or match.group(1):
            pieces.append(repl(match))
        else:
            word = match.group(0)
            pronoun = word.split()[0] if " " in word else word
            pieces.append(obj + word[len(pronoun) :])
        last = match.end()
    pieces.append(sentence[last:])
    return "".join(pieces)


def _word_before(text: str, end: int) -> tuple[str, str]:
    """(the end of text[:end].rstrip(), "" if that is empty; its last word in lower case),
    reading back only as far as that word starts: copying and splitting the whole prefix, per
    pronoun, made a long sentence quadratic."""
    lookback = 64
    while True:
        start = max(0, end - lookback)
        before = text[start:end].rstrip()
        words = before.split()
        if start == 0 or len(words) >= 2:  # the window holds the whole last word
            return before, (words[-1].lower() if words else "")
        lookback *= 4


def to_third_person(sentence: str, person: Literal["i", "you"], gender: Gender) -> str:
    """'I feel'/'you feel' -> 'he feels'; 'my'/'your' -> 'his'; 'me'/'you' (object) -> 'him'."""
    subject, possessive, obj = _pronouns(gender)
    pattern = _SUBJECT_RES[person]

    def subject_repl(match: re.Match[str]) -> str:
        contraction, word, following = match.group(1), match.group(2), match.group(3)
        if contraction:
            verb = _CONTRACTED[contraction.lower()]
            if contraction.lower() == "'ve" and following and following.lower() == "got":
                verb = "has"
            tail = f" {following}" if following else ""
            return f"{subject} {verb}{tail}"
        assert word is not None
        lower = word.lower()
        if lower in _ADVERBS and following:
            return f"{subject} {word} {_conjugate(following)}"
        if lower in _NOT_VERBS:
            tail = f" {following}" if following else ""
            return f"{subject} {word}{tail}"
        verb = _conjugate(word)
        tail = f" {following}" if following else ""
        return f"{subject} {verb}{tail}"

    out = _sub_subjects(pattern, subject_repl, sentence, obj)
    first = "my|mine|myself" if person == "i" else "your|yours|yourself"
    out = re.sub(
        rf"\b({first})\b",
        lambda m: {
            "my": possessive,
            "your": possessive,
            "mine": possessive,
            "yours": possessive,
            "myself": obj + "self" if obj in ("him", "her") else "themselves",
            "yourself": obj + "self" if obj in ("him", "her") else "themselves",
        }[m.group(1).lower()],
        out,
        flags=re.IGNORECASE,
    )
    object_word = r"\bme\b" if person == "i" else r"\byou\b"
    out = re.sub(object_word, obj, out, flags=re.IGNORECASE)
    out = re.sub(r"\bwe(?='re|\s)", "we", out)
    return out


# --------------------------------------------------------------------------- cues

_GENDER_CUES: Final = (
    (re.compile(r"\b(?:year[- ]old|yo)\s+(?:male|man|gentleman|boy)\b|\bmr\.?\s", re.I), "male"),
    (
        re.compile(
            r"\b(?:year[- ]old|yo)\s+(?:female|woman|lady|girl)\b|\bm(?:r?s|iss)\.?\s", re.I
        ),
        "female",
    ),
)
_EXAM_START: Final = re.compile(
    r"physical exam|examin|on exam|take a look|listen to your (?:heart|lungs)|"
    r"vital signs|your vitals|feel your|press (?:on|here)|check (?:you|your) (?:out|heart|lungs)|"
    r"i'm going to look|lie back|let me look",
    re.I,
)
_EXAM_FINDING: Final = re.compile(
    r"\b(?:murmur|rub|gallop|lungs?|heart|clear|auscultation|crackles|rales|wheez\w*|tender\w*|"
    r"swell\w*|swollen|edema|effusion|range of motion|bruis\w*|erythema|pulses?|abdomen|"
    r"abdominal|palpat\w*|reflexes|strength|sensation|rash|lesion|exam\w*|vitals?|"
    r"blood pressure|temperature|oxygen|saturation|heart rate|normal|regular|jvd|"
    r"jugular|distension|distention|neck|throat|ears?|eyes?|skin|guarding|rebound|"
    r"pain to palpation|mass|lymph|nodes?|gait|neuro\w*|joint|spine|knee|shoulder|"
    r"ankle|wrist|hip|elbow|foot|hand|finger|back)\b",
    re.I,
)
_RESULTS_CUE: Final = re.compile(
    r"\b(?:x-?rays?|results?|labs?|blood work|bloodwork|mri|ct|cat scan|ultrasound|"
    r"echo\w*|ekg|ecg|a1c|hemoglobin|cholesterol|panel|imaging|biopsy|scan|"
    r"came back|showed|shows|demonstrat\w*|revealed|reviewed|levels?|count|culture|"
    r"urinalysis|pathology|test(?:s|ing)?)\b",
    re.I,
)
_PLAN_START: Final = re.compile(
    r"assessment|my plan|the plan|impression|diagnos\w*|for your (?:first|second|third|"
    r"last|next)|first problem|second problem|next problem|last problem|"
    r"what i want to do|what we're going to do|what we will do|"
    r"let's talk about (?:my |the |your )?(?:assessment|plan|diagnosis|treatment)|"
    r"so for (?:your|the)",
    re.I,
)
_PLAN_CUE: Final = re.compile(
    r"\b(?:prescri\w*|continue|increase|decrease|start\w*|stop\w*|refer\w*|recommend\w*|"
    r"order\w*|schedul\w*|follow[- ]?up|come back|return|mg|milligrams?|medication|"
    r"dose|daily|twice|once a day|therapy|physical therapy|surgery|injection|brace|"
    r"splint|ice|rest|avoid|monitor\w*|check|labs?|referral|plan|want you to|"
    r"going to|we will|we'll|i'll|let's|should|need to|make sure|see you|weeks?|months?|"
    r"diet|exercise|appointment|specialist|consult|x-?ray|mri|ultrasound|ekg|echo\w*)\b",
    re.I,
)
_ASSESSMENT_CUE: Final = re.compile(
    r"\b(?:impression|assessment|diagnos\w*|consistent with|likely|suspect|sounds like|"
    r"looks like|probably|concern\w*|think (?:this|that|it|you)|has a|have a|sprain|"
    r"strain|fracture|infection|controlled|uncontrolled|stable|worsening|improv\w*)\b",
    re.I,
)
_SYMPTOM_CUE: Final = re.compile(
    r"\b(?:pain\w*|hurt\w*|ache\w*|aching|sore\w*|swell\w*|swollen|fever\w*|chills|cough\w*|"
    r"tired|fatigue\w*|dizz\w*|lightheaded\w*|nause\w*|vomit\w*|diarrhea|constipat\w*|"
    r"bleed\w*|blood|short(?:ness)? of breath|breath\w*|headaches?|numb\w*|tingl\w*|"
    r"weak\w*|stiff\w*|rash|itch\w*|burn\w*|bloat\w*|cramp\w*|sleep\w*|weight|appetite|"
    r"started|began|since|ago|weeks?|days?|months?|years?|yesterday|worse|better|"
    r"taking|take|tried|medication\w*|ibuprofen|tylenol|advil|motrin|pills?|"
    r"history|diagnosed|surgery|injur\w*|fell|fall|twist\w*|happened|when i|"
    r"smok\w*|drink\w*|alcohol|exercis\w*|work\w*|diet|eat\w*|sugar\w*|pressure|"
    r"feel\w*|felt|noticed?|symptoms?|episodes?|attacks?|problem\w*|issues?)\b",
    re.I,
)
_SOCIAL_RE: Final = re.compile(
    r"\b(?:how are you|nice to (?:meet|see)|good to see|good morning|good afternoon|"
    r"thank you|thanks|bye|take care|have a (?:good|great|nice)|any questions|"
    r"finalize|let me know if|sounds good|that's it|i'm doing|doing well|doing okay|"
    r"hello|hi\b|how's it going|how have you been|see you)\b",
    re.I,
)
_NEGATION_ANSWER: Final = re.compile(r"^(?:no|nope|not really|nah|never|none|negative)\b", re.I)
_YES_ANSWER: Final = re.compile(r"^(?:yes|yeah|yep|yup|i do|i have|a little|sometimes)\b", re.I)
_ROS_QUESTION: Final = re.compile(
    r"\b(?:any|have you (?:had|noticed|experienced|been having)|do you have|"
    r"are you having|did you have|have you felt)\s+(?:any\s+)?(.+?)\??$",
    re.I,
)
_ROS_SYMPTOM: Final = re.compile(
    r"\b(?:pain\w*|hurt\w*|ache\w*|aching|sore\w*|swell\w*|swollen|fevers?|chills|cough\w*|"
    r"tired\w*|fatigue\w*|dizz\w*|lightheaded\w*|nause\w*|vomit\w*|diarrhea|constipat\w*|"
    r"bleed\w*|blood|short(?:ness)? of breath|breath\w*|headaches?|numb\w*|tingl\w*|"
    r"weak\w*|stiff\w*|rash\w*|itch\w*|burn\w*|bloat\w*|cramp\w*|palpitations?|"
    r"weight (?:loss|gain)|sweats?|congestion|wheez\w*|discharge|bruis\w*|injur\w*|"
    r"trouble \w+|difficulty \w+|problems? \w+|changes? in \w+|symptoms?|urinat\w*)\b",
    re.I,
)
_STOP_WORDS: Final = _wordset(
    "a an the and or but if of to in on at for with about from by as is are was were be been "
    "being it its this that these those i me my we our you your he him his she her they them "
    "their what which who whom do does did doing have has had having not no so just very can "
    "will would should could may might must there here then than too also some any all how "
    "when where why into out up down over again further once more most other such only own "
    "same s t don now okay yeah yes right well um uh like know think go going get got kind "
    "sort little bit thing things really"
)
_WORD_RE: Final = re.compile(r"[a-z0-9]+")


def _content_words(sentence: str) -> list[str]:
    return [w for w in _WORD_RE.findall(sentence.lower()) if w not in _STOP_WORDS]


def _key(sentence: str) -> str:
    return " ".join(_WORD_RE.findall(sentence.lower()))


def detect_gender(turns: Iterable[Turn]) -> Gender:
    votes = {"male": 0, "female": 0}
    for turn in turns:
        if turn.role != "doctor":
            continue
        for pattern, gender in _GENDER_CUES:
            votes[gender] += len(pattern.findall(turn.text))
    if votes["male"] == votes["female"]:
        return "unknown"
    return "male" if votes["male"] > votes["female"] else "female"


_UNIT_WORDS: Final = UNIT_WORDS
_TEN_WORDS: Final = TEN_WORDS
_NUMBER_RUN_RE: Final = re.compile(
    r"\b(?:(?:" + "|".join([*_TEN_WORDS, *_UNIT_WORDS, "hundred"]) + r")(?:[ -](?:and )?)?)+\b",
    re.IGNORECASE,
)
_COUNTABLE_RE: Final = re.compile(
    r"^\s*(?:days?|weeks?|months?|years?|hours?|minutes?|times?|mg|milligrams?|tablets?|"
    r"pills?|miles?|pounds?|units?|percent|cm|centimeters?|inches|drinks?|cups?|packs?|"
    r"glasses|beers|servings|puffs?|doses?|x)\b",
    re.IGNORECASE,
)


def _words_to_number(run: str) -> int | None:
    total = 0
    for word in re.findall(r"[a-z]+", run.lower()):
        if word == "and":
            continue
        if word in _UNIT_WORDS:
            total += _UNIT_WORDS[word]
        elif word in _TEN_WORDS:
            total += _TEN_WORDS[word]
        elif word == "hundred":
            total = max(total, 1) * 100
        else:
            return None
    return total


def digits_for_numbers(text: str) -> str:
    """'fifty eight year old' -> '58 year old'; 'one' only before a unit ('one week')."""

    def repl(match: re.Match[str]) -> str:
        run = match.group(0).rstrip(" -")
        trailing = match.group(0)[len(run) :]
        words = re.findall(r"[a-z]+", run.lower())
        if words and words[-1] == "and":  # "seventy two and ..." -> the run ends before "and"
            run = run[: run.lower().rindex("and")].rstrip(" -")
            trailing = match.group(0)[len(run) :]
            words = words[:-1]
        if not words:
            return match.group(0)
        value = _words_to_number(run)
        if (
            value is not None
            and len(words) > 1
            and words[0] in _UNIT_WORDS
            and 1 <= _UNIT_WORDS[words[0]] <= 9
            and words[1] in _TEN_WORDS
        ):
            rest_value = _words_to_number(" ".join(words[1:]))
            value = _UNIT_WORDS[words[0]] * 100 + (rest_value or 0)  # "one twenty" = 120
        if value is None:
            return match.group(0)
        rest = text[match.end() :]
        if value <= 1 and not _COUNTABLE_RE.match(rest):
            return match.group(0)
        return f"{value}{trailing}"

    out = _NUMBER_RUN_RE.sub(repl, text)
    out = re.sub(r"\b(\d+) (?:point|\.) (\d)\b", r"\1.\2", out)
    out = re.sub(r"\bmilligrams?\b", "mg", out, flags=re.IGNORECASE)
    out = re.sub(r"\b(\d+)[ -]year[ -]old\b", r"\1-year-old", out, flags=re.IGNORECASE)
    return out


def _finish(sentence: str) -> str:
    """Capitalised, one final full stop, 'i' -> 'I', tidy commas."""
    out = _LEADING_RE.sub("", sentence.strip())
    out = re.sub(r"^[\s,;:]+", "", out)
    out = re.sub(r"[\s,;:]+$", "", out)
    out = digits_for_numbers(out)
    out = re.sub(r"\bi\b", "I", out)
    out = re.sub(r"\b(dr|mr|mrs|ms)\.?\s", lambda m: m.group(1).capitalize() + ". ", out)
    out = re.sub(r"\.{2,}", ".", out)
    if not out:
        return ""
    out = out[0].upper() + out[1:]
    if out[-1] not in ".?!":
        out += "."
    return out


# --------------------------------------------------------------------------- the note

_INTRO_RE: Final = re.compile(
    r"\b(?:is an? \d+|is an? [a-z-]+ year[- ]old|\d+[- ]year[- ]old|year[- ]old)\b", re.I
)
_REASON_RE: Final = re.compile(
    r"\b(?:here (?:today )?for|presents? (?:today )?(?:for|with)|"
    r"here (?:today )?(?:to|with)|coming in (?:today )?for|in (?:today )?for|"
    r"referred (?:to me )?for)\s+(?:an? |the |his |her |their )?(.+)$",
    re.I,
)


@dataclass(frozen=True)
class _Sentence:
    role: Role
    text: str  # cleaned, first/second person intact
    zone: str
    turn: int
    question: bool


def _sentences(turns: list[Turn], deadline: Deadline = NO_DEADLINE) -> list[_Sentence]:
    """The first MAX_SENTENCES sentences, cleaned, with their speaker, zone and turn."""
    zone = "history"
    out: list[_Sentence] = []
    for index, turn in enumerate(turns):
        for piece in _pieces(turn.text):
            deadline.check()
            for raw in split_sentences(clean(piece)):
                if len(out) >= MAX_SENTENCES:
                    return out
                text = raw.strip()
                if turn.role == "doctor":
                    if _PLAN_START.search(text) and zone != "plan":
                        zone = "plan"
                    elif _EXAM_START.search(text) and zone == "history":
                        zone = "exam"
                out.append(_Sentence(turn.role, text, zone, index, text.rstrip().endswith("?")))
    return out


def _third_person(sentence: _Sentence, gender: Gender) -> str:
    text = sentence.text
    if sentence.role == "patient":
        text = to_third_person(text, "i", gender)
    else:
        text = to_third_person(text, "you", gender)
    return text


def _informative(text: str, minimum: int = 3) -> bool:
    return len(_content_words(text)) >= minimum and not _SOCIAL_RE.search(text)


class _Parsed:
    """A transcript's first MAX_SENTENCES sentences, read once for both the note and the
    statements (the note writer needs both), each put in note style once when first needed."""

    def __init__(self, transcript: str, deadline: Deadline) -> None:
        turns = parse_turns(transcript, deadline)
        self.gender = detect_gender(turns)
        self.sentences = _sentences(turns, deadline)
        # Without speaker labels (plain ASR output) nobody knows who said "I": keep first
        # person and take statements about symptoms and their history as they were said.
        self.labelled = any(
            _TAG_LINE_RE.match(line) or _SPEAKER_LINE_RE.match(line)
            for line in transcript.splitlines()
        )
        self.deadline = deadline
        self._styled: dict[int, str] = {}

    def styled(self, position: int) -> str:
        """The sentence in third person, finished."""
        text = self._styled.get(position)
        if text is None:
            sentence = self.sentences[position]
            text = self._styled[position] = _finish(_third_person(sentence, self.gender))
        return text

    def note(self) -> Note:
        note = Note()
        sentences = self.sentences
        for position, s in enumerate(sentences):
            self.deadline.check()
            if not self.labelled and s.zone == "history" and not s.question:
                plain = _finish(s.text)
                if plain and _informative(plain) and _SYMPTOM_CUE.search(s.text):
                    note.add(HPI, plain)
                continue
            if s.question:
                _review_of_systems(note, sentences, position, self.gender)
                continue
            text = self.styled(position)
            if text and _informative(text):
                _route(note, s, text)
        return note

    def statements(self) -> list[str]:
        out: list[str] = []
        for position, s in enumerate(self.sentences):
            self.deadline.check()
            if s.question:
                continue
            text = self.styled(position)
            if text and _informative(text, 2):
                out.append(text)
        return out


def build_note(transcript: str, deadline: Deadline = NO_DEADLINE) -> Note:
    """The note of a transcript's first MAX_SENTENCES sentences; deadline is checked per step."""
    return _Parsed(transcript, deadline).note()


def _route(note: Note, s: _Sentence, text: str) -> None:
    """A labelled statement (text: in note style) to its section, by speaker, zone and cues."""
    if s.role == "doctor" and _INTRO_RE.search(s.text):
        reason = _REASON_RE.search(s.text)
        if reason and not note.sections[CC]:
            note.add(CC, _finish(reason.group(1)))
        note.add(HPI, text)
        return
    if s.role == "doctor" and _RESULTS_CUE.search(s.text) and s.zone != "history":
        if (
            _PLAN_CUE.search(s.text)
            and s.zone == "plan"
            and not re.search(
                r"\b(?:showed|shows|came back|revealed|demonstrat\w*|results?)\b", s.text, re.I
            )
        ):
            _plan(note, text, s)
        else:
            note.add(RESULTS, text)
        return
    if s.zone == "exam":
        if s.role == "doctor" and _EXAM_FINDING.search(s.text):
            note.add(EXAM, text)
        elif s.role == "patient" and _SYMPTOM_CUE.search(s.text):
            note.add(HPI, text)
        return
    if s.zone == "plan":
        if s.role == "doctor" and (_PLAN_CUE.search(s.text) or _ASSESSMENT_CUE.search(s.text)):
            _plan(note, text, s)
        return
    # History.
    if (s.role == "patient" and (_SYMPTOM_CUE.search(s.text) or _informative(text, 5))) or (
        s.role == "doctor"
        and re.search(
            r"\b(?:sounds like|so you|you've been|you have been|you were|you had|you said|"
            r"you mentioned|you're|you are|you have)\b",
            s.text,
            re.I,
        )
    ):
        note.add(HPI, text)


def note_style_sentences(transcript: str, deadline: Deadline = NO_DEADLINE) -> list[str]:
    """Every statement of the transcript's first MAX_SENTENCES sentences (questions and small
    talk left out), in note style."""
    return _Parsed(transcript, deadline).statements()


def note_and_statements(
    transcript: str, deadline: Deadline = NO_DEADLINE
) -> tuple[Note, list[str]]:
    """build_note and note_style_sentences of one transcript, for the price of one."""
    parsed = _Parsed(transcript, deadline)
    return parsed.note(), parsed.statements()


def _plan(note: Note, text: str, s: _Sentence) -> None:
    note.add(AP, text)
    if _PLAN_CUE.search(s.text):
        note.plan.append(text)
    else:
        note.assessment.append(text)


def _review_of_systems(
    note: Note, sentences: list[_Sentence], position: int, gender: Gender
) -> None:
    """A doctor's 'any X?' answered 'no'/'yes' by the patient: 'Denies X.' / 'Endorses X.'"""
    question = sentences[position]
    if question.role != "doctor" or position + 1 >= len(sentences):
        return
    answer = sentences[position + 1]
    if answer.role != "patient" or answer.turn != question.turn + 1:
        return
    match = _ROS_QUESTION.search(question.text)
    if not match:
        return
    topic = match.group(1).strip(" ?.,")
    topic = re.sub(r"\b(?:at all|lately|recently|today|right now|or anything)\b", "", topic)
    topic = to_third_person(topic, "you", gender).strip(" ,")
    if (
        not topic
        or len(topic.split()) > 8
        or not _content_words(topic)
        or _SOCIAL_RE.search(topic)
        or re.search(r"\bquestions?\b", topic)
        or not _ROS_SYMPTOM.search(topic)
    ):
        return
    if _NEGATION_ANSWER.search(answer.text):
        note.add(ROS, _finish(f"denies {topic}"))
    elif _YES_ANSWER.search(answer.text):
        note.add(ROS, _finish(f"endorses {topic}"))


def render_summary(note: Note) -> str:
    blocks = [
        section + "\n\n" + "\n".join(note.sections[section])
        for section in SECTIONS
        if note.sections[section]
    ]
    return "\n\n".join(blocks)


def soap_fields(note: Note) -> tuple[SoapField, ...]:
    subjective = note.sections[CC] + note.sections[HPI] + note.sections[ROS]
    objective = note.sections[EXAM] + note.sections[RESULTS]
    values = {
        "Subjective": " ".join(subjective),
        "Objective": " ".join(objective),
        "Assessment": " ".join(note.assessment),
        "Plan": " ".join(note.plan),
    }
    return tuple(
        SoapField(name=name, description=SOAP_DESCRIPTIONS[name], value=value)
        for name, value in values.items()
    )


def check_transcript_size(text: str) -> None:
    """transcriptTooLarge over MAX_TRANSCRIPT_BYTES of UTF-8 (encoded only when the number of
    characters does not already decide)."""
    chars = len(text)
    if chars * 4 <= MAX_TRANSCRIPT_BYTES:
        return
    if (
        chars > MAX_TRANSCRIPT_BYTES
        or len(text.encode("utf-8", "surrogatepass")) > MAX_TRANSCRIPT_BYTES
    ):
        raise PermanentError(
            ErrorType.TRANSCRIPT_TOO_LARGE,
            f"the transcript is over the {MAX_TRANSCRIPT_BYTES} bytes a local summary reads",
        )


def summarize_text(
    transcript: str,
    output_format: Literal["SUMMARY", "SOAP_TEMPLATE"],
    deadline: Deadline = NO_DEADLINE,
) -> Summary:
    check_transcript_size(transcript)
    note = build_note(transcript, deadline)
    if output_format == "SOAP_TEMPLATE":
        return Summary(provider=PROVIDER, output_format="SOAP_TEMPLATE", fields=soap_fields(note))
    return Summary(provider=PROVIDER, output_format="SUMMARY", text=render_summary(note))


class LocalSummarizer:
    """SummaryProvider "local": extractive, offline, milliseconds per consultation.

    The work runs in a thread of its own pool, within budget_s (SCRIBE_LOCAL_SUMMARY_BUDGET_S):
    over it, summaryTimedOut (permanent: the same transcript would take as long again)."""

    name = PROVIDER

    def __init__(self, budget_s: float = DEFAULT_LOCAL_SUMMARY_BUDGET_S) -> None:
        self._budget_s = budget_s
        self._pool = CpuPool("scribe-local-summary")

    async def summarize(self, job: JobRequest, transcript: Transcript) -> Summary:
        text, output_format = transcript.text, job.summary.output_format
        try:
            return await self._pool.run(
                lambda deadline: summarize_text(text, output_format, deadline), self._budget_s
            )
        except BudgetExceeded:
            raise PermanentError(
                ErrorType.SUMMARY_TIMED_OUT,
                f"the local summary did not finish within its {self._budget_s:g} s budget",
            ) from None

    def close(self) -> None:
        self._pool.close()
