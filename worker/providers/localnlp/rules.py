"""The engine's rules as data: caps, section names, word lists, cue words and the regular
expressions of every step, gathered here so that a rule is changed in one place and the steps
(turns, cleaning, person, numbers, cues, note, template) hold only logic.

The cue words and section names are the only things learned from ACI-Bench's train split (see
docs/quality.md); nothing here comes from any patient's note."""

from __future__ import annotations

import re
from typing import Final

from worker.numbers import TEN_WORDS as TEN_WORDS
from worker.numbers import UNIT_WORDS as UNIT_WORDS


def wordset(text: str) -> frozenset[str]:
    """The words of text, split on white space: long word lists read as prose."""
    return frozenset(text.split())


# --------------------------------------------------------------------------- caps

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
# Content words a statement needs to enter the note (fewer: small talk, "okay, that's fine").
MIN_NOTE_WORDS: Final = 3

# --------------------------------------------------------------------------- sections

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


# --------------------------------------------------------------------------- speaker turns

TAG_LINE_RE: Final = re.compile(r"^\s*\[([A-Za-z_ 0-9-]+)\]\s*(.*)$")
SPEAKER_LINE_RE: Final = re.compile(
    r"^\s*(SPEAKER[ _]?\d+|doctor|patient|clinician|dr|physician|nurse)\s*:\s*(.*)$",
    re.IGNORECASE,
)
DOCTOR_WORDS: Final = ("doctor", "clinician", "dr", "physician", "nurse", "provider")

# --------------------------------------------------------------------------- cleaning

CONTRACTIONS: Final = (
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
CONTRACTION_RES: Final = tuple((re.compile(p, re.IGNORECASE), r) for p, r in CONTRACTIONS)
FILLER_RE: Final = re.compile(
    r"(?:, ?)?\b(?:uh-huh|mm-hmm|mhm|hmm+|mm+|uh+|um+|uhm|er|ah|erm)\b[,.]?\s*", re.IGNORECASE
)
# The clinician announcing the next step ("let's go ahead and do a quick physical exam"): it
# moves the visit on (zones) but says nothing for the note; left out when this short.
ANNOUNCEMENT_RE: Final = re.compile(
    r"^(?:so,? |okay,? |now,? |and,? )*(?:let's|let me|i'm going to|i am going to|i want to|"
    r"i'd like to|we're going to|we are going to)\s+(?:go ahead and\s+)?(?:just\s+)?"
    r"(?:do|take|have|look|check|review|go over|talk|examine|listen|start|get)\b",
    re.IGNORECASE,
)
MAX_ANNOUNCEMENT_WORDS: Final = 12
# Words to the dictation system or the record, not about the patient: the sentence is left out.
DICTATION_RE: Final = re.compile(
    r"\b(?:show me (?:the |my |his |her |their )?(?:\w+ )?(?:vital|vitals|results|x-?rays?|"
    r"labs?|report|images?|scans?|echo\w*|ekg|mri|ct|ultrasound)|"
    r"end of (?:dictation|note|recording)|next patient is|dictating on|date of birth|"
    r"medical record number|mrn|finalize (?:the )?note|sign (?:the )?note|"
    r"(?:use|using) (?:the |my )?(?:normal )?(?:new patient )?\w* ?(?:exam )?template)\b",
    re.IGNORECASE,
)
PHRASE_FILLER_RE: Final = re.compile(
    r"(?:^|(?<=[\s,]))(?:you know|i mean|let's see|sort of like|kind of like|"
    r"like|basically|actually|literally)\s*,\s*",
    re.IGNORECASE,
)
# Spoken scaffolding with no content, wherever it stands ("i want to go ahead and order",
# "it's kind of sore", "what i'm going to do is refer you").
SCAFFOLD_RE: Final = re.compile(
    r"\b(?:go ahead and|just|actually|basically|obviously|literally|really|pretty much|"
    r"(?<!let )(?<!do )(?<!you )you know|i mean|(?<!what )(?<!this )kind of|"
    r"(?<!what )(?<!this )sort of|what (?:i'm|we're|i am|we are|i'd like to|i want to) "
    r"(?:going to )?do (?:is|for (?:that|this|you) is))\s+",
    re.IGNORECASE,
)
ASSISTANT_RE: Final = re.compile(
    r"(?:hey|okay|ok)?\s*,?\s*\b(?:dragon|dax)\b\s*,?"
    r"(?:\s*(?:show me|order|finalize|please|go ahead)[^.?!]*)?",
    re.IGNORECASE,
)
# A false start: a cut-off word of one or two letters ("f- felt") or a word the next one
# repeats ("t- taking"). A longer word cut off at a turn's end ("the past-") is kept, unhyphenated.
FALSE_START_RE: Final = re.compile(r"\b(?:(\w+)-(?=\s+\1)|\w{1,2}-(?=[\s,.?!]|$))")
DANGLING_HYPHEN_RE: Final = re.compile(r"(?<=\w)-(?=[\s,.?!]|$)")
REPEAT_RE: Final = re.compile(r"\b(\w+(?:'\w+)?)((?:\s*,)?\s+\1\b)+", re.IGNORECASE)
REPEAT2_RE: Final = re.compile(
    r"\b(\w+\s+\w+)((?:\s*,)?\s+\1\b)+", re.IGNORECASE
)  # "in the , in the"
SPACE_RE: Final = re.compile(r"\s+")
# Words that open a spoken sentence and say nothing; "no" only as an answer ("no, i have
# not", "no i have not"), never where it negates what follows ("no numbness"); "right",
# "good" and the like only when a mark follows ("right, so"; "right knee pain" keeps it).
LEADING_RE: Final = re.compile(
    r"^(?:(?:(?:okay|alright|all right|so|and|well|yeah|yes|yep|now|but|oh|"
    r"sure|um|uh|then|also|anyway|alrighty|got it|i see|hey|wow|gosh)\b|"
    r"(?:great|good|perfect|right|excellent|awesome|cool|fine)\b(?=\s*[,.!])|"
    r"(?:no|nope)\b(?=\s*[,.]|\s+(?:i|i'm|i've|"
    r"he|she|it|it's|we|they|you|the patient|not|no)\b))\s*[,.!]?\s*)+",
    re.IGNORECASE,
)


NUMBER_WORD_ALT: Final = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|"
    "fifty|sixty|seventy|eighty|ninety"
)


SENTENCE_RE: Final = re.compile(r"[^.?!]+(?:[.?!]+|$)")

# Unpunctuated speech (half of ACI-Bench's dialogues, some ASR output): a turn without a
# sentence end is cut into clauses before a discourse marker or a question's opening words,
# each clause at least MIN_CLAUSE_WORDS long and never cut after a question word ("how long |
# has it been"); a clause that opens like a question ends with "?" (and so reads as a
# question, not a fact), any other with ".".
MIN_CLAUSE_WORDS: Final = 3
OPEN_QUESTION_END_RE: Final = re.compile(
    r"\b(?:how|what|why|where|when|which|who|long|much|often|many|kind|type|sort|bad|far|"
    r"old)$",
    re.IGNORECASE,
)
SENTENCE_END_RE: Final = re.compile(r"[?!]|(?<!\bdr)(?<!\bmr)(?<!\bms)(?<!\bmrs)\.(?=\s|$)")
_QUESTION_OPENING: Final = (
    r"(?:do|does|did|are|is|have|has|can|could|would|were|was|will)\s+(?:you|your|it|there|"
    r"that|they|he|she|we|the|any)\b|"
    r"how\s+(?:long|much|often|many|are|is|did|do|does|have|has|about|bad|far|old)\b|"
    r"what\s+(?:is|are|do|does|did|have|has|kind|about|type|sort|medications?|brings)\b|"
    r"when\s+(?:did|does|do|was|is)\b|where\s+(?:is|does|do|did|was)\b|"
    r"any\s+(?:other\s+)?\w+"
)
# A new main clause of the speaker's own ("... the rice protocol and i'm going to give ..."),
# not one a subordinating word leads ("because i", "that i", "when i").
_OWN_CLAUSE: Final = (
    r"(?:(?:and|but)\s+)?(?:i|we)(?:'m|'ll|'d|'ve|'re|\s+(?:am|are|will|would|want|think|"
    r"do|did|have|had|was|were|just|also|don't|can|could|need|feel|felt|know|see|got))\b"
)
CLAUSE_BOUNDARY_RE: Final = re.compile(
    r"(?<!\bbecause)(?<!\bthat)(?<!\bwhen)(?<!\bif)(?<!\bwhere)(?<!\bbefore)(?<!\bafter)"
    r"(?<!\bsince)(?<!\bwhich)(?<!\buntil)(?<!\bwhat)(?<!\bhow)(?<!\bwhy)(?<!\bwho)"
    r"\s+(?=(?:okay|ok|alright|all right|so|now|and then|anyway|um|uh)\b|"
    + _QUESTION_OPENING
    + "|"
    + _OWN_CLAUSE
    + ")",
    re.IGNORECASE,
)
QUESTION_OPENING_RE: Final = re.compile(
    r"^(?:(?:okay|ok|alright|all right|so|now|and|um|uh)\s+)*(?:" + _QUESTION_OPENING + ")",
    re.IGNORECASE,
)


SPOKEN_POINT_RE: Final = re.compile(  # "two . five" (ACI-Bench) -> "two point five"
    r"\b(\d+|" + NUMBER_WORD_ALT + r") \. (\d|" + NUMBER_WORD_ALT + r")\b", re.IGNORECASE
)
SPACE_BEFORE_MARK_RE: Final = re.compile(r"\s+([,.;:?!])")
SPACED_APOSTROPHE_RE: Final = re.compile(r"(\w) '(\w)")
# Tag questions ("..., okay?") are statements.
TAG_QUESTION_RE: Final = re.compile(
    r",?\s*\b(?:okay|ok|right|alright|all right|you know|does that sound good|"
    r"sound good|does that make sense|is that okay|how does that sound)\s*\?",
    re.IGNORECASE,
)
FINAL_ELLIPSIS_RE: Final = re.compile(r"\.\.\.+(?=\s*$)")
ELLIPSIS_RE: Final = re.compile(r"\.\.\.+")
COMMA_BEFORE_MARK_RE: Final = re.compile(r",\s*(?=[,.?!])")
LEADING_MARKS_RE: Final = re.compile(r"^[\s,.;:]+")
# Sentence splitting keeps decimals ("2.5") and titles ("dr.") together.
DECIMAL_POINT_RE: Final = re.compile(r"(\d)\.(\d)")
TITLE_DOT_RE: Final = re.compile(r"\b(dr|mr|mrs|ms|st|vs)\.", re.IGNORECASE)
# A finished sentence.
LEADING_PUNCTUATION_RE: Final = re.compile(r"^[\s,;:]+")
TRAILING_PUNCTUATION_RE: Final = re.compile(r"[\s,;:]+$")
LOWER_I_RE: Final = re.compile(r"\bi\b")
TITLE_RE: Final = re.compile(r"\b(dr|mr|mrs|ms)\.?\s")
DOTS_RE: Final = re.compile(r"\.{2,}")

# --------------------------------------------------------------------------- person

THIRD_PERSON_IRREGULAR: Final = {
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
COMMON_ADVERBS: Final = wordset(
    "also just still really never always usually sometimes only even already recently probably "
    "definitely"
)
NO_CHANGE: Final = COMMON_ADVERBS | wordset(
    "was did had can could will would should might must may 'll 'd shall not kind sort"
)
ADVERBS: Final = COMMON_ADVERBS | wordset(
    "actually mostly generally normally typically often certainly"
)
# Words in -ly that are verbs, not adverbs ("I apply", "I rely").
LY_VERBS: Final = wordset("apply reply rely supply comply multiply fly ally bully")


IRREGULAR_PAST: Final = wordset(
    "fell felt went came got took saw broke made said told gave ran began thought knew found "
    "left kept put set cut hit hurt quit slept woke ate drank drove rode wore sat stood lost "
    "brought bought caught taught heard meant read spent sent threw tore bent"
)


SUBJECT_RES: dict[str, re.Pattern[str]] = {
    "i": re.compile(r"\bi(?:('m|'ve|'ll|'d)|\s+(\w+))(?:\s+(\w+))?", re.IGNORECASE),
    "you": re.compile(r"\byou(?:('re|'ve|'ll|'d)|\s+(\w+))(?:\s+(\w+))?", re.IGNORECASE),
}
CONTRACTED: Final = {"'m": "is", "'re": "is", "'ve": "has", "'ll": "will", "'d": "would"}
NOT_VERBS: Final = frozenset(
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


SUBJECT_CONTEXT: Final = wordset(
    "and but so if when because that since as while before after until where how what why "
    "whether though although once then or maybe like which who think thought guess know "
    "believe hope mean say said suspect worry worried glad sure seems sounds looks remember "
    "unless whenever where"
)


# A "you" these follow is a subject wherever it stands ("on exam you have ...").
FINITE_VERBS: Final = wordset(
    "have had are were can could did do don't didn't will would should need may might must "
    "got feel felt look seem still also"
)


POSSESSIVE_RES: Final = {
    "i": re.compile(r"\b(my|mine|myself)\b", re.IGNORECASE),
    "you": re.compile(r"\b(your|yours|yourself)\b", re.IGNORECASE),
}
OBJECT_RES: Final = {
    "i": re.compile(r"\bme\b", re.IGNORECASE),
    "you": re.compile(r"\byou\b", re.IGNORECASE),
}

# --------------------------------------------------------------------------- cues

GENDER_CUES: Final = (
    (re.compile(r"\b(?:year[- ]old|yo)\s+(?:male|man|gentleman|boy)\b|\bmr\.?\s", re.I), "male"),
    (
        re.compile(
            r"\b(?:year[- ]old|yo)\s+(?:female|woman|lady|girl)\b|\bm(?:r?s|iss)\.?\s", re.I
        ),
        "female",
    ),
)
EXAM_START: Final = re.compile(
    r"physical exam|examin|on exam|take a look(?! (?:here )?at (?:my|the|your) (?:notes|chart))|"
    r"listen to your (?:heart|lungs)|"
    r"vital signs|your vitals|feel your|press (?:on|here)|check (?:you|your) (?:out|heart|lungs)|"
    r"i'm going to look|lie back|let me look|lay back|hop up|\b(?:your|this|the|an?) exam\b|"
    r"examine you|take a (?:quick )?look at (?:you|your)",
    re.I,
)
EXAM_FINDING: Final = re.compile(
    r"\b(?:murmur|rub|gallop|lungs?|heart|clear|auscultation|crackles|rales|wheez\w*|tender\w*|"
    r"swell\w*|swollen|edema|effusion|range of motion|bruis\w*|erythema|pulses?|abdomen|"
    r"abdominal|palpat\w*|reflexes|strength|sensation|rash|lesion|exam\w*|vitals?|"
    r"blood pressure|temperature|oxygen|saturation|heart rate|normal|regular|jvd|"
    r"jugular|distension|distention|neck|throat|ears?|eyes?|skin|guarding|rebound|"
    r"pain to palpation|mass|lymph|nodes?|gait|neuro\w*|joint|spine|knee|shoulder|"
    r"ankle|wrist|hip|elbow|foot|hand|finger|back)\b",
    re.I,
)
RESULTS_CUE: Final = re.compile(
    r"\b(?:x-?rays?|results?|labs?|blood work|bloodwork|mri|ct|cat scan|ultrasound|"
    r"echo\w*|ekg|ecg|a1c|hemoglobin|cholesterol|panel|imaging|biopsy|scan|"
    r"came back|showed|shows|demonstrat\w*|revealed|reviewed|levels?|count|culture|"
    r"urinalysis|pathology|test(?:s|ing)?)\b",
    re.I,
)
PLAN_START: Final = re.compile(
    r"assessment|my plan|the plan|impression|diagnos\w*|for your (?:first|second|third|"
    r"last|next)|first problem|second problem|next problem|last problem|"
    r"what i want to do|what we're going to do|what we will do|"
    r"let's talk about (?:my |the |your )?(?:assessment|plan|diagnosis|treatment)|"
    r"so for (?:your|the)",
    re.I,
)
PLAN_CUE: Final = re.compile(
    r"\b(?:prescri\w*|continue|increase|decrease|start\w*|stop\w*|refer\w*|recommend\w*|"
    r"order\w*|schedul\w*|follow[- ]?up|come back|return|mg|milligrams?|medication|"
    r"dose|daily|twice|once a day|therapy|physical therapy|surgery|injection|brace|"
    r"splint|ice|rest|avoid|monitor\w*|check|labs?|referral|plan|want you to|"
    r"going to|we will|we'll|i'll|let's|should|need to|make sure|see you|weeks?|months?|"
    r"diet|exercise|appointment|specialist|consult|x-?ray|mri|ultrasound|ekg|echo\w*)\b",
    re.I,
)
PLAN_IN_EXAM_RE: Final = re.compile(
    r"\b(?:prescri\w*|recommend\w*|refer(?:ral|ring)?|follow up|come back|schedul\w*|"
    r"(?:i'm|we're|i am|we are) going to (?:get|order|start|send|prescribe|put|give|refer)|"
    r"(?:we'll|i'll|we will|i will) (?:get|start|order|put|send|give|refer|see)|"
    r"proceed with|options include|start (?:you|her|him|them) on)\b",
    re.I,
)
ASSESSMENT_CUE: Final = re.compile(
    r"\b(?:impression|assessment|diagnos\w*|consistent with|likely|suspect|sounds like|"
    r"looks like|probably|concern\w*|think (?:this|that|it|you)|has a|have a|sprain|"
    r"strain|fracture|infection|controlled|uncontrolled|stable|worsening|improv\w*)\b",
    re.I,
)
SYMPTOM_CUE: Final = re.compile(
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
SOCIAL_RE: Final = re.compile(
    r"\b(?:how are you|nice to (?:meet|see)|good to see|good morning|good afternoon|"
    r"thank you|thanks|bye|take care|have a (?:good|great|nice)|any questions|"
    r"finalize|let me know if|sounds good|that's it|i'm doing|doing well|doing okay|"
    r"hello|hi\b|how's it going|how have you been|see you)\b",
    re.I,
)
NEGATION_ANSWER: Final = re.compile(r"^(?:no|nope|not really|nah|never|none|negative)\b", re.I)
YES_ANSWER: Final = re.compile(
    r"^(?:\w+,\s*)?(?:yes|yeah|yep|yup|i do|i have|i did|a little|a bit|sometimes|i think i do|"
    r"i think so|"
    r"definitely|occasionally)\b",
    re.I,
)
ROS_QUESTION: Final = re.compile(
    r"\b(?:any|have you (?:had|noticed|experienced|been having)|do you have|"
    r"are you having|did you have|have you felt)\s+(?:any\s+)?(.+?)\??$",
    re.I,
)
ROS_SYMPTOM: Final = re.compile(
    r"\b(?:pain\w*|hurt\w*|ache\w*|aching|sore\w*|swell\w*|swollen|fevers?|chills|cough\w*|"
    r"tired\w*|fatigue\w*|dizz\w*|lightheaded\w*|nause\w*|vomit\w*|diarrhea|constipat\w*|"
    r"bleed\w*|blood|short(?:ness)? of breath|breath\w*|headaches?|numb\w*|tingl\w*|"
    r"weak\w*|stiff\w*|rash\w*|itch\w*|burn\w*|bloat\w*|cramp\w*|palpitations?|"
    r"weight (?:loss|gain)|sweats?|congestion|wheez\w*|discharge|bruis\w*|injur\w*|"
    r"trouble \w+|difficulty \w+|problems? \w+|changes? in \w+|symptoms?|urinat\w*)\b",
    re.I,
)

# The patient's own statement in the history is attributed ("He reports ..."): unless it
# already has the patient as its subject; a statement opening with "no" is a denial.
DENIAL_LEAD_RE: Final = re.compile(
    r"^(?:No|Not any|Never had)\s+(?!(?:he|she|the|it|they|that|this|one)\b)(?=\w)"
)
PATIENT_SUBJECT_RE: Final = re.compile(r"^(?:He|She|The patient)\b")

# The review of systems by body system, as notes write it ("Neurological: Denies numbness."):
# the first system whose words a line has (specific before general: chest pain is
# cardiovascular, other pain musculoskeletal). Only the system names most notes use.
ROS_SYSTEMS: Final = (
    (
        "Cardiovascular",
        re.compile(r"\b(?:chest pain|palpitations?|swelling in \w+ (?:legs|ankles|feet))\b", re.I),
    ),
    (
        "Respiratory",
        re.compile(r"\b(?:cough\w*|short(?:ness)? of breath|wheez\w*|breathing)\b", re.I),
    ),
    (
        "Constitutional",
        re.compile(
            r"\b(?:fevers?|chills|fatigue\w*|tired\w*|weight (?:loss|gain)|night sweats|sweats|"
            r"appetite)\b",
            re.I,
        ),
    ),
    (
        "Neurological",
        re.compile(
            r"\b(?:numb\w*|tingl\w*|headaches?|dizz\w*|lightheaded\w*|seizures?|weakness)\b", re.I
        ),
    ),
    (
        "Musculoskeletal",
        re.compile(
            r"\b(?:joint|back|neck|knee|shoulder|hip|ankle|wrist|elbow|foot|feet|hand|finger|toe|"
            r"arm|leg|muscle)s?\b.*\b(?:pain|ache|swelling|stiffness|injury|sprain)\b|"
            r"\b(?:pain|ache|swelling|stiffness|injury|sprain)\b.*\b(?:joint|back|neck|knee|"
            r"shoulder|hip|ankle|wrist|elbow|foot|feet|hand|finger|toe|arm|leg|muscle)s?\b",
            re.I,
        ),
    ),
)

# Exam findings by system, the same way ("Respiratory: Crackles in the right lower lobe.").
EXAM_SYSTEMS: Final = (
    (
        "Cardiovascular",
        re.compile(r"\b(?:heart|murmurs?|gallops?|rubs?|pulses?|rhythm|carotid)\b", re.I),
    ),
    ("Respiratory", re.compile(r"\b(?:lungs?|crackles|rales|wheez\w*|breath sounds)\b", re.I)),
    ("Abdomen", re.compile(r"\b(?:abdomen|abdominal|bowel sounds)\b", re.I)),
    (
        "Neurological",
        re.compile(r"\b(?:neuro\w*|sensation|reflexes|cranial nerves|gait)\b", re.I),
    ),
    (
        "Musculoskeletal",
        re.compile(
            r"\b(?:range of motion|joint|spine|lumbar|knee|shoulder|hip|ankle|wrist|elbow|"
            r"tenderness|strength|straight leg raise)\b",
            re.I,
        ),
    ),
)

# A results sentence that reports a finding (not a plan to order the test).
FINDING_REPORTED_RE: Final = re.compile(
    r"\b(?:showed|shows|came back|revealed|demonstrat\w*|results?)\b", re.I
)
# The clinician recapping the history to the patient.
HISTORY_RECAP_RE: Final = re.compile(
    r"\b(?:sounds like|so you|you've been|you have been|you were|you had|you said|"
    r"you mentioned|you're|you are|you have)\b",
    re.I,
)
ROS_TOPIC_NOISE_RE: Final = re.compile(
    r"\b(?:at all|lately|recently|today|right now|or anything)\b"
)
QUESTIONS_RE: Final = re.compile(r"\bquestions?\b")
# "any other symptoms like chest pain, any swelling?" -> "chest pain, swelling".
ROS_TOPIC_LEAD_RE: Final = re.compile(
    r"^(?:other\s+)?(?:symptoms?\s+(?:like|such as)|problems?\s+with|issues?\s+with)\s+", re.I
)
ROS_INNER_ANY_RE: Final = re.compile(r"(?<=\s)(?:any|other)\s+", re.I)
MAX_ROS_TOPIC_WORDS: Final = 14
MAX_ROS_STATEMENT_WORDS: Final = 16
# The chief complaint when no introduction names it: looked for in the first sentences.
CC_SEARCH_SENTENCES: Final = 40
MAX_CC_REASON_WORDS: Final = 12
CC_PHRASE_RE: Final = re.compile(
    r"\b(?:(?:left|right|lower|upper)\s+)?(?:[a-z]+\s+)?(?:pain|swelling|rash|cough|"
    r"headaches?|numbness|tingling|fatigue|dizziness|fevers?|nausea|vomiting|diarrhea|"
    r"constipation|shortness of breath|bleeding|weakness|palpitations|heartburn|"
    r"anxiety|depression|insomnia|lump|mass|wound|infection|injury|sprain|fracture)\b",
    re.I,
)

# --------------------------------------------------------------------------- words

# The one stop-word list: NLTK's English list (embedded: the corpus would otherwise need a
# download). scribe-eval's content-token metrics use it as it is; the engine's two uses below
# are derived from it, each with the words its purpose needs kept or added (the same sets as
# when they were three separate lists: the outputs are byte for byte the same).
STOP_WORDS: Final = wordset(
    "i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself "
    "yourselves he him his himself she she's her hers herself it it's its itself they them "
    "their theirs themselves what which who whom this that that'll these those am is are was "
    "were be been being have has had having do does did doing a an the and but if or because "
    "as until while of at by for with about against between into through during before after "
    "above below to from up down in out on off over under again further then once here there "
    "when where why how all any both each few more most other some such no nor not only own "
    "same so than too very s t can will just don don't should should've now d ll m o re ve y "
    "ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven "
    "haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn "
    "shouldn't wasn wasn't weren weren't won won't wouldn wouldn't"
)

# Kept as content in a spoken sentence: with them a clause still counts towards an informative
# one.
_KEPT_IN_SPEECH: Final = wordset(
    "above after against ain am aren aren't because before below between both couldn couldn't "
    "d didn didn't doesn doesn't don't during each few hadn hadn't hasn hasn't haven haven't "
    "hers herself himself isn isn't it's itself ll m ma mightn mightn't mustn mustn't myself "
    "needn needn't nor o off ours ourselves re shan shan't she's should've shouldn shouldn't "
    "that'll theirs themselves through under until ve wasn wasn't weren weren't while won "
    "won't wouldn wouldn't y you'd you'll you're you've yours yourself yourselves"
)

# Spoken fillers and hedges that carry nothing in a consultation.
_SPEECH_WORDS: Final = wordset(
    "also bit could get go going got kind know like little may might must okay really right "
    "sort thing things think uh um well would yeah yes"
)

# The summarizer's measure of an informative sentence: its words not in this set.
SPEECH_STOP_WORDS: Final = (STOP_WORDS - _KEPT_IN_SPEECH) | _SPEECH_WORDS

# The stop words a template field's name is searched without (articles, prepositions,
# copulas); its other words are its key words.
_FIELD_FUNCTION_WORDS: Final = wordset(
    "a all an and any are as at be been by for from if in is it its no not of on or other "
    "that the these this those to was were with"
)

# Words of template prose ("Enter the patient's current ...") that name no finding.
_TEMPLATE_WORDS: Final = wordset(
    "current describe document documented e eg enter etc field free g include including list "
    "main none note overall past patient patient's patients per please present report "
    "reported text type value values yes"
)

FIELD_STOP_WORDS: Final = (STOP_WORDS & _FIELD_FUNCTION_WORDS) | _TEMPLATE_WORDS

WORD_RE: Final = re.compile(r"[a-z0-9]+")

# --------------------------------------------------------------------------- numbers

NUMBER_RUN_RE: Final = re.compile(
    r"\b(?:(?:" + "|".join([*TEN_WORDS, *UNIT_WORDS, "hundred"]) + r")(?:[ -](?:and )?)?)+\b",
    re.IGNORECASE,
)
COUNTABLE_RE: Final = re.compile(
    r"^\s*(?:days?|weeks?|months?|years?|hours?|minutes?|times?|mg|milligrams?|tablets?|"
    r"pills?|miles?|pounds?|units?|percent|cm|centimeters?|inches|drinks?|cups?|packs?|"
    r"glasses|beers|servings|puffs?|doses?|x)\b",
    re.IGNORECASE,
)


LETTERS_RE: Final = re.compile(r"[a-z]+")
POINT_RE: Final = re.compile(r"\b(\d+) (?:point|\.) (\d)\b")
MILLIGRAMS_RE: Final = re.compile(r"\bmilligrams?\b", re.IGNORECASE)
YEAR_OLD_RE: Final = re.compile(r"\b(\d+)[ -]year[ -]old\b", re.IGNORECASE)

# --------------------------------------------------------------------------- the note

INTRO_RE: Final = re.compile(
    r"\b(?:is an? \d+|is an? [a-z-]+ year[- ]old|\d+[- ]year[- ]old|year[- ]old)\b", re.I
)
REASON_RE: Final = re.compile(
    r"\b(?:here (?:today )?for|presents? (?:today )?(?:for|with)|"
    r"here (?:today )?(?:to|with)|coming in (?:today )?for|in (?:today )?for|"
    r"referred (?:to me )?for|(?:called|came|come) (?:in )?for|chief complaint (?:is|of)|"
    r"here (?:today )?because of|referred by [\w. ]{1,40}? for)\s+"
    r"(?:an? |the |his |her |their |your |my |some |a little bit of )?(.+)$",
    re.I,
)


# --------------------------------------------------------------------------- templates

# Section names a field may point at, by key phrase (English, Spanish, Catalan, Portuguese).
SECTION_KEYS: Final = (
    (("chief complaint", "reason for visit", "reason for consultation", "motivo", "queixa"), "cc"),
    (("review of systems", "ros"), "ros"),
    (
        (
            "history of present illness",
            "present illness",
            "hpi",
            "enfermedad actual",
            "anamnesis",
        ),
        "hpi",
    ),
    (("subjective", "subjetivo"), "subjective"),
    (("physical exam", "examination", "exam", "exploracion", "exploración", "exame"), "exam"),
    (("objective", "objetivo"), "objective"),
    (("results", "investigations", "labs", "imaging", "pruebas", "resultados"), "results"),
    (("assessment and plan", "a&p"), "ap"),
    (("assessment", "impression", "diagnosis", "diagnoses", "diagnóstico", "diagnostico"), "a"),
    (
        (
            "plan",
            "treatment",
            "recommendation",
            "management",
            "instructions",
            "tratamiento",
        ),
        "p",
    ),
)
# The same phrases as patterns, each matched as words of its own.
SECTION_KEY_RES: Final = tuple(
    (tuple(re.compile(rf"(?<![a-z]){re.escape(p)}(?![a-z])") for p in phrases), key)
    for phrases, key in SECTION_KEYS
)
SYNONYMS: Final = {
    "medication": ("mg", "medication", "medicine", "taking", "prescri", "tablet", "pill", "dose"),
    "allergi": ("allerg",),
    "smok": ("smok", "cigarette", "tobacco", "pack"),
    "alcohol": ("alcohol", "drink", "beer", "wine"),
    "heart rate": ("heart rate", "pulse"),
    "pulse": ("heart rate", "pulse"),
    "temperature": ("temperature", "fever"),
    "blood pressure": ("blood pressure", "over"),
    "systolic": ("blood pressure",),
    "diastolic": ("blood pressure",),
    "pain": ("pain", "hurt", "ache", "sore"),
    "weight": ("weight", "pound", "kilogram"),
    "age": ("year-old", "year old", "years old"),
    "follow": ("follow up", "follow-up", "come back", "see you", "return"),
    "referral": ("refer", "specialist"),
    "symptom": ("pain", "hurt", "swell", "fever", "cough", "nause", "tired", "dizz"),
    "diagnos": ("diagnos", "impression", "assessment", "consistent with", "likely"),
    "respiratory rate": ("respirat", "breaths"),
    "oxygen": ("oxygen", "saturation", "pulse ox"),
}
NEGATION_RE: Final = re.compile(
    r"\b(?:denies|denied|no|not|never|without|negative|none|nor|quit|stopped)\b", re.IGNORECASE
)

AGE_RE: Final = re.compile(r"\b(\d{1,3})[- ]years?[- ]old\b", re.IGNORECASE)
AGE_FIELD_RE: Final = re.compile(r"\bage\b|\bedad\b|\bidade\b")
INLINE_HEADER_RE: Final = re.compile(r"^([A-Za-z][A-Za-z &/-]{2,40}):\s+(.+)$")  # "Plan: rest."
PRESSURE_RE: Final = re.compile(r"(\d+)\s*(?:over|/)\s*(\d+)")  # "120 over 80", "120/80"
NUMBER_AFTER_KEYWORD_RE: Final = re.compile(r"^[^.;\d]{0,30}?(\d+(?:\.\d+)?)(?![\w])")
