"""Speaker roles (issue 15, item 3): the shipped role model, per-speaker assignment from what is
said (never from who spoke first), Intron's SPEAKER_xx lines, unlabelled segments, the local
engine reading the same roles from speaker lines. Accuracy figures come from
`scribe-eval --roles` (docs/quality.md), not from here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schemas.jobs import Transcript, TranscriptSegment
from worker.providers.localnlp.turns import parse_turns
from worker.roles import (
    MODEL_PATH,
    UNLABELLED,
    assign_roles,
    labelled_by_role,
    load_model,
    sequence_roles,
    speaker_lines,
    with_roles,
)

MODEL_SHA256 = "6d4563af75aa6f36d77d478e32c5049e80aec2fd9d113f52e13ed7aa842edb37"
TRAIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "aci-bench" / "train.csv"

CLINICIAN = [
    "hi , i'm dr. baker . how are you doing today ?",
    "let me take a look at your knee . does it hurt when i press here ?",
    "on exam , your lungs are clear to auscultation bilaterally .",
    "i want you to take ibuprofen twice a day and we'll see you back in two weeks .",
    "any fever , chills or shortness of breath ?",
]
PATIENT = [
    "i've had this pain in my lower back for about two weeks and it hurts when i bend over .",
    "it started on sunday when i was skiing .",
    "yeah , my wife made me come in .",
    "no , i haven't had any fever .",
]

# A consultation in which the patient speaks first (and is SPEAKER_01, the first label).
PATIENT_FIRST = [
    ("SPEAKER_01", "hi , sorry i'm late , the parking was terrible ."),
    ("SPEAKER_02", "no problem . i'm dr. patel . what brings you in today ?"),
    ("SPEAKER_01", "my right knee has been swelling up since i fell last week ."),
    ("SPEAKER_02", "okay . does it hurt when you walk or climb stairs ?"),
    ("SPEAKER_01", "yes , it hurts going down the stairs , and i can't straighten it ."),
    (
        "SPEAKER_02",
        "let me examine it . i'm going to press on the joint line , tell me if it hurts .",
    ),
    ("SPEAKER_01", "ouch , yes , right there ."),
    ("SPEAKER_02", "i'd like to order an mri and start you on ibuprofen 600 milligrams ."),
]


def test_the_shipped_weights_are_the_ones_trained_and_reviewed() -> None:
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == MODEL_SHA256


@pytest.mark.skipif(not TRAIN.is_file(), reason="needs ../shared/data/aci-bench/train.csv")
def test_training_reproduces_the_shipped_weights(tmp_path: Path) -> None:
    """python -m ops.train_roles is deterministic: the same data gives the same bytes."""
    pytest.importorskip("numpy")
    from ops.train_roles import main

    out = tmp_path / "model.json"
    assert main(["--train", str(TRAIN), "--out", str(out)]) == 0
    assert out.read_bytes() == MODEL_PATH.read_bytes()


@pytest.mark.parametrize("text", CLINICIAN)
def test_clinician_sentences_score_as_the_clinician(text: str) -> None:
    score = load_model().score(text)
    assert score is not None
    assert score > 0


@pytest.mark.parametrize("text", PATIENT)
def test_patient_sentences_score_as_the_patient(text: str) -> None:
    score = load_model().score(text)
    assert score is not None
    assert score < 0


def test_no_words_is_no_score() -> None:
    assert load_model().score(" ... , ") is None


def test_the_patient_speaking_first_still_gets_the_patient_role() -> None:
    roles = assign_roles(PATIENT_FIRST)
    expected = ["patient" if s == "SPEAKER_01" else "clinician" for s, _ in PATIENT_FIRST]
    assert roles == expected


def test_roles_follow_what_is_said_not_the_label_or_the_order() -> None:
    """Swapping the labels, or the order of the turns, moves the roles with the words."""
    swapped = [("SPEAKER_02" if s == "SPEAKER_01" else "SPEAKER_01", t) for s, t in PATIENT_FIRST]
    roles = assign_roles(swapped)
    assert roles == ["patient" if s == "SPEAKER_02" else "clinician" for s, _ in swapped]
    reordered = PATIENT_FIRST[1:] + PATIENT_FIRST[:1]
    by_text = dict(zip((t for _, t in reordered), assign_roles(reordered), strict=True))
    assert by_text[PATIENT_FIRST[0][1]] == "patient"
    assert by_text[PATIENT_FIRST[1][1]] == "clinician"


def test_a_third_speaker_is_other() -> None:
    turns = [
        *PATIENT_FIRST,
        ("SPEAKER_03", "she's been limping around the house all week , doctor ."),
        ("SPEAKER_03", "okay ."),
    ]
    roles = dict(zip((s for s, _ in turns), assign_roles(turns), strict=False))
    assert sorted(roles.values()) == ["clinician", "other", "patient"]
    assert roles["SPEAKER_02"] == "clinician"


def test_a_lone_speaker_is_classified_by_what_they_say() -> None:
    assert set(assign_roles([("A", CLINICIAN[1]), ("A", CLINICIAN[2])])) == {"clinician"}
    assert set(assign_roles([("A", PATIENT[0]), ("A", PATIENT[1])])) == {"patient"}


def intron_transcript(lines: list[tuple[str, str]]) -> Transcript:
    """What worker.providers.intron makes of a diarized answer: one segment per line."""
    from worker.providers.intron import _speaker_segments

    text = [f"{speaker}: {words}" for speaker, words in lines]
    return Transcript(provider="intron", text="\n".join(text), segments=_speaker_segments(text))


def test_intron_speaker_lines_get_roles_from_what_each_speaker_says() -> None:
    transcript = with_roles(intron_transcript(PATIENT_FIRST))
    assert [s.speaker for s in transcript.segments] == [s for s, _ in PATIENT_FIRST]
    assert [s.role for s in transcript.segments] == assign_roles(PATIENT_FIRST)
    assert transcript.segments[0].role == "patient"
    assert transcript.text == intron_transcript(PATIENT_FIRST).text  # the text is untouched


def test_unlabelled_segments_get_the_unlabelled_speaker_and_a_role_each() -> None:
    """Invox's segments carry no speaker: each gets UNLABELLED and a role."""
    segments = (
        TranscriptSegment(start=0, end=2, text=CLINICIAN[1]),
        TranscriptSegment(start=2, end=4, text=PATIENT[0]),
        TranscriptSegment(start=4, end=5, text=" ... "),
    )
    transcript = with_roles(Transcript(provider="invox", text="x", segments=segments))
    assert [s.speaker for s in transcript.segments] == [UNLABELLED] * 3
    assert [s.role for s in transcript.segments] == ["clinician", "patient", "unknown"]


# Unlabelled turns in order; the patient's closing "okay ." alone reads as the clinician's.
UNLABELLED_TURNS = [
    "what brings you in today ?",
    "i've had this pain in my lower back for about two weeks .",
    "does it hurt when you bend over ?",
    "yes , it does .",
    "i want you to take ibuprofen twice a day and we'll see you back in two weeks .",
    "okay .",
]


def test_unlabelled_turns_in_order_are_read_as_a_conversation() -> None:
    """A short turn says little alone; its neighbours say who is talking."""
    score = load_model().score(UNLABELLED_TURNS[-1])
    assert score is not None
    assert score > 0  # alone: the clinician
    roles = assign_roles([(None, text) for text in UNLABELLED_TURNS])
    assert roles == ["clinician", "patient"] * 3


def test_the_chance_of_a_speaker_change_is_fitted_to_the_transcript() -> None:
    """Runs of eight segments per speaker (a transcriber cutting each turn into sentences), one
    weakly wrong segment in each: the fitted chain puts it with its run; alone, or under the
    alternation the chain starts from, it would not be."""
    run = [3.0, 2.0, 3.0, -0.3, 3.0, 2.0, 3.0, 3.0]
    scores = (run + [-v for v in run]) * 3
    truth = ([True] * 8 + [False] * 8) * 3
    assert [v > 0 for v in scores] != truth
    assert sequence_roles(scores) == truth


def test_sequence_roles_reads_both_ways_alike_and_one_segment_by_its_sign() -> None:
    scores = [2.0, -1.5, 0.4, 0.6, -2.0, 1.0, -0.2]
    assert sequence_roles(scores[::-1]) == sequence_roles(scores)[::-1]
    assert sequence_roles([-0.4]) == [False]
    assert sequence_roles([0.4]) == [True]
    assert sequence_roles([]) == []
    assert sequence_roles([-v for v in scores]) == [not r for r in sequence_roles(scores)]


def test_a_role_the_provider_set_is_kept() -> None:
    segment = TranscriptSegment(start=0, end=1, text=PATIENT[0], speaker="A", role="clinician")
    transcript = Transcript(provider="invox", text="x", segments=(segment,))
    assert with_roles(transcript) is transcript


def test_the_local_engine_reads_the_same_roles_from_speaker_lines() -> None:
    """The summary and note no longer take the first speaker for the clinician."""
    text = "\n".join(f"{speaker}: {words}" for speaker, words in PATIENT_FIRST)
    turns = parse_turns(text)
    assert [t.role for t in turns] == [
        "patient" if s == "SPEAKER_01" else "doctor" for s, _ in PATIENT_FIRST
    ]


def test_speaker_lines_join_each_run_of_one_speaker() -> None:
    segments = [
        TranscriptSegment(start=0, end=1, text="hello there", speaker="SPEAKER_00"),
        TranscriptSegment(start=1, end=2, text=" how are\nyou ", speaker="SPEAKER_00"),
        TranscriptSegment(start=2, end=3, text="fine", speaker="SPEAKER_01"),
    ]
    assert speaker_lines(segments) == "SPEAKER_00: hello there how are you\nSPEAKER_01: fine"
    assert speaker_lines([TranscriptSegment(start=0, end=1, text="hi")]) == ""


def test_diarized_labels_are_renamed_by_role() -> None:
    """SPEAKER_00 is the clinician whoever the diarizer met first, so the chunks of one long
    recording agree on the labels."""
    turns = [("SPEAKER_00" if s == "SPEAKER_01" else "SPEAKER_01", t) for s, t in PATIENT_FIRST]
    assert turns[0][0] == "SPEAKER_00"  # the patient, first heard
    renamed = labelled_by_role(turns)
    assert [role for _, role in renamed] == assign_roles(turns)
    assert {label for label, role in renamed if role == "clinician"} == {"SPEAKER_00"}
    assert {label for label, role in renamed if role == "patient"} == {"SPEAKER_01"}


def test_cross_validation_fits_on_the_other_folds_and_prints_each_figure(tmp_path: Path) -> None:
    """python -m ops.eval_roles --cv K: the tuning figures, from train only."""
    pytest.importorskip("numpy")
    import csv
    import io
    from contextlib import redirect_stdout

    from ops.eval_roles import main

    data = tmp_path / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["encounter_id", "dialogue"])
        for n in range(4):
            lines = [
                f"[doctor] {c}\n[patient] {p}" for c, p in zip(CLINICIAN[:4], PATIENT, strict=True)
            ]
            writer.writerow([f"D{n}", "\n".join(lines)])
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--cv", "2", "--train", str(data)]) == 0
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "train 2-fold per turn, each alone",
        "train 2-fold without labels, turns",
        "train 2-fold without labels, sentences",
    ]
    assert main(["--cv", "1", "--train", str(data)]) == 2
