"""scribe-eval on a tiny CSV made here: the rows it prints and the exact last line."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from ops import eval as scribe_eval
from tests.unit.test_local_summary import DIALOGUE

pytest.importorskip("rouge_score", reason="needs the 'local' extra")

NOTE = (
    "CHIEF COMPLAINT\n\nLeft wrist pain.\n\nHISTORY OF PRESENT ILLNESS\n\n"
    "The patient is a 52-year-old male who fell off his bicycle and hurt his left wrist.\n"
    "He takes ibuprofen 600 mg twice a day.\n\nASSESSMENT AND PLAN\n\n"
    "Left wrist sprain. Splint for 2 weeks, follow up in 2 weeks. Recheck in 9 weeks."
)


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", "encounter_id", "dialogue", "note"])
        for encounter, dialogue, note in rows:
            writer.writerow(["test", encounter, dialogue, note])
    return path


def test_prints_three_rows_and_the_exact_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "valid.csv", [("E1", DIALOGUE, NOTE), ("E2", DIALOGUE, NOTE)])
    train = write_csv(tmp_path / "train.csv", [("T1", "[doctor] hi .", NOTE)])
    assert scribe_eval.main(["--data", str(data), "--train", str(train)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    transcript_line, human_line, evidence_line, last = lines[-4:]
    assert transcript_line.startswith("transcript rouge1=")
    assert human_line.startswith("human rouge1=100.00 rouge2=100.00 rougeLsum=100.00 ")
    assert re.fullmatch(
        r"ours rouge1=\d+\.\d\d rouge2=\d+\.\d\d rougeLsum=\d+\.\d\d "
        r"unsupported=\d+\.\d\d% stray_numbers=\d+\.\d\d",
        last,
    ), last
    ours = float(last.split()[1].split("=")[1])
    transcript = float(transcript_line.split()[1].split("=")[1])
    assert ours > transcript
    # With train notes identical to the references, every reference stem is "common".
    assert " unsupported=0.00% " in human_line
    # "9" (weeks) is never said in the dialogue: one stray number per human note.
    assert human_line.endswith("stray_numbers=1.00")
    # Every sentence of ours has its evidence (issue 16).
    assert evidence_line.startswith("evidence share=100.00% section_coverage=")


def test_numbers_said_in_words_are_not_stray() -> None:
    said = scribe_eval.numbers_in("he is fifty eight , bp one twenty eight over seventy two")
    assert {58.0, 128.0, 72.0} <= said
    assert scribe_eval.numbers_in("temperature ninety eight . six") >= {98.6}
    assert scribe_eval.Grounding.stray_numbers("BP 128/72, age 58, 98.6 F", "x") == 4


def test_missing_data_file_is_a_usage_error(tmp_path: Path) -> None:
    assert scribe_eval.main(["--data", str(tmp_path / "nope.csv")]) == 2
