# ruff: noqa: E501 - the test dialogues keep one turn per line
"""The local note's prose and sections (issue 16): unpunctuated speech cut into clauses, swapped
speaker labels, false starts and adverbs in the third-person rewrite."""

from __future__ import annotations

from worker.providers.localnlp.cleaning import clean, finish, punctuate, split_sentences
from worker.providers.localnlp.note import build_note
from worker.providers.localnlp.person import to_third_person
from worker.providers.localnlp.rules import CC, EXAM, HPI, ROS
from worker.providers.localnlp.turns import parse_turns


def test_unpunctuated_speech_is_cut_into_clauses_and_questions() -> None:
    text = "okay so how long has the knee been hurting okay it started two weeks ago after i fell"
    assert punctuate(text) == (
        "okay so how long has the knee been hurting? okay it started two weeks ago after i fell."
    )
    assert split_sentences(clean(text)) == [
        "okay so how long has the knee been hurting?",
        "okay it started two weeks ago after i fell.",
    ]


def test_punctuated_text_is_left_as_it_is_and_a_short_turn_is_one_clause() -> None:
    assert punctuate("it hurts. okay so how long has it been going on") == (
        "it hurts. okay so how long has it been going on"
    )
    assert punctuate("okay so it hurts") == "okay so it hurts."
    assert punctuate("any fever") == "any fever?"


def test_a_clause_is_never_shorter_than_three_words() -> None:
    assert punctuate("so okay so the pain is in my left knee okay now") == (
        "so okay so the pain is in my left knee okay now."
    )


UNPUNCTUATED = "".join(
    line + "\n"
    for line in (
        "[doctor] hi there how are you doing today",
        "[patient] i'm okay but my left knee has been really swollen for about two weeks now",
        "[doctor] okay any fever or chills",
        "[patient] no",
        "[doctor] alright so let's go ahead and do a quick physical exam on exam of your left knee there is an effusion and tenderness along the medial joint line",
    )
)


def test_an_unpunctuated_dialogue_gets_history_review_and_exam() -> None:
    note = build_note(UNPUNCTUATED)
    assert any("swollen" in s for s in note.sections[HPI])
    assert note.sections[ROS] == ["Constitutional: Denies fever or chills."]
    assert any("effusion" in s for s in note.sections[EXAM])
    assert not any("effusion" in s for s in note.sections[HPI])


SWAPPED = "".join(
    line + "\n"
    for line in (
        "[patient] hi , how are you doing today ? what brings you in ?",
        "[doctor] my knee has been hurting me for two weeks and i can't sleep .",
        "[patient] okay . any fever ?",
        "[doctor] no .",
        "[patient] let me examine your knee . on exam , there is tenderness over the medial joint line .",
        "[patient] my assessment is a medial meniscus tear . i'm going to order an mri of your knee and refer you to physical therapy .",
        "[doctor] okay , thank you .",
    )
)


def test_swapped_doctor_and_patient_labels_are_read_by_what_each_says() -> None:
    turns = parse_turns(SWAPPED)
    assert [t.role for t in turns] == [
        "doctor",
        "patient",
        "doctor",
        "patient",
        "doctor",
        "doctor",
        "patient",
    ]
    note = build_note(SWAPPED)
    assert any("tenderness" in s for s in note.sections[EXAM])


def test_labels_the_right_way_round_are_kept() -> None:
    fixed = SWAPPED.replace("[patient]", "[tmp]").replace("[doctor]", "[patient]")
    turns = parse_turns(fixed.replace("[tmp]", "[doctor]"))
    assert [t.role for t in turns[:2]] == ["doctor", "patient"]


def test_false_starts_go_and_a_cut_off_word_keeps_its_word() -> None:
    assert clean("i f- felt the pop , t- taking my pills .") == "i felt the pop, taking my pills."
    assert clean("which we've heard in the past- .") == "which we've heard in the past."


def test_adverbs_in_ly_keep_the_verb_after_them() -> None:
    assert to_third_person("i immediately had to sit down", "i", "male") == (
        "he immediately had to sit down"
    )
    assert to_third_person("i hurt my back", "i", "female") == "she hurt her back"
    assert to_third_person("i want to see you again", "you", "male") == ("i want to see him again")
    assert to_third_person("i remember you have a sweet tooth", "you", "male") == (
        "i remember he has a sweet tooth"
    )


def test_a_spoken_decimal_is_no_sentence_end() -> None:
    assert split_sentences(clean("it was four . four centimeters okay how are you feeling")) == [
        "it was four point four centimeters.",
        "okay how are you feeling?",
    ]


INTRODUCED = "".join(
    line + "\n"
    for line in (
        "[doctor] so beverly is a 53-year-old female with a recent diagnosis of lung cancer who presents for follow-up .",
        "[doctor] so let me take a look here at my notes .",
        "[patient] i have had a minimal cough and a sore throat since my treatment .",
        "[doctor] okay . on exam , your lungs have some crackles bilaterally .",
    )
)


def test_an_introduction_and_a_look_at_the_notes_keep_the_visit_in_the_history() -> None:
    note = build_note(INTRODUCED)
    assert note.sections[CC] == ["Follow-up."]
    assert any("sore throat" in s for s in note.sections[HPI])
    assert any("crackles" in s for s in note.sections[EXAM])


def test_the_reason_a_referral_gives_is_the_chief_complaint() -> None:
    note = build_note(
        "[doctor] ms. cooper is a new patient who was referred by diane nelson for a long-standing iron deficiency anemia .\n"
        "[patient] i get tired all the time .\n"
    )
    assert note.sections[CC] == ["Long-standing iron deficiency anemia."]


def test_spoken_scaffolding_goes() -> None:
    assert clean("i want to go ahead and prescribe meloxicam , it's kind of sore .") == (
        "i want to prescribe meloxicam, it's sore."
    )
    assert clean("what i'm going to do is refer you to physical therapy .") == (
        "refer you to physical therapy."
    )
    assert clean("what kind of pain is it ? i'll let you know .") == (
        "what kind of pain is it? i'll let you know."
    )


def test_the_patients_words_are_attributed() -> None:
    note = build_note(
        "[doctor] mr. quxley is a 52-year-old male here for knee pain .\n"
        "[patient] it's been killing me for a couple of days now .\n"
        "[patient] i have been taking ibuprofen for the pain .\n"
        "[patient] no trouble at all with my other knee when i go up the stairs or when i play tennis .\n"
        "[patient] no numbness or tingling in my leg .\n"
    )
    assert note.sections[HPI][1:] == [
        "He reports it's been killing him for a couple of days now.",
        "He has been taking ibuprofen for the pain.",
        "He denies trouble at all with his other knee when he goes up the stairs or when he plays tennis.",
    ]
    assert note.sections[ROS] == [
        "Musculoskeletal: Reports knee pain.",
        "Neurological: Denies numbness or tingling in his leg.",
    ]


def test_a_leading_no_goes_only_as_an_answer() -> None:
    assert finish("no numbness or tingling") == "No numbness or tingling."
    assert finish("no , i have not") == "I have not."
    assert finish("okay no i have not had surgery") == "I have not had surgery."


def test_the_review_of_systems_is_by_system_with_the_complaint_among_them() -> None:
    note = build_note(
        "[doctor] mr. quxley is a 52-year-old male here for right knee pain .\n"
        "[doctor] any numbness or tingling ?\n"
        "[patient] no .\n"
        "[doctor] any fever ?\n"
        "[patient] no .\n"
    )
    assert note.sections[ROS] == [
        "Musculoskeletal: Reports right knee pain.",
        "Neurological: Denies numbness or tingling.",
        "Constitutional: Denies fever.",
    ]
    # Every line keeps the evidence of what it came from.
    assert all(note.origin[line] for line in note.sections[ROS])


def test_a_you_before_a_finite_verb_is_a_subject() -> None:
    assert to_third_person("on your left shoulder exam you have limited motion", "you", "male") == (
        "on his left shoulder exam he has limited motion"
    )


def test_exam_findings_are_by_system() -> None:
    note = build_note(
        "[doctor] let's do a quick physical exam .\n"
        "[doctor] on exam , your lungs have crackles in the right lower lobe .\n"
        "[doctor] your abdomen has some tenderness to palpation in the right lower quadrant .\n"
        "[doctor] there is tenderness over the medial joint line of your left knee .\n"
    )
    assert note.sections[EXAM] == [
        "Respiratory: On exam, their lungs have crackles in the right lower lobe.",
        "Abdomen: Their abdomen has some tenderness to palpation in the right lower quadrant.",
        "Musculoskeletal: There is tenderness over the medial joint line of their left knee.",
    ]
    assert all(note.origin[line] for line in note.sections[EXAM])


def test_the_chief_complaint_is_found_after_an_early_look() -> None:
    note = build_note(
        "[doctor] let me take a look at your knee . so i see you're coming in for some right knee pain .\n"
        "[patient] yes , it has been hurting for a week .\n"
    )
    assert note.sections[CC] == ["Right knee pain."]


def test_dictation_commands_naming_a_study_are_left_out() -> None:
    note = build_note(
        "[doctor] on exam , your lungs have some crackles at the bases .\n"
        "[doctor] okay , show me the chest x-ray .\n"
        "[doctor] the chest x-ray shows some mild radiation pneumonitis in both lungs .\n"
    )
    written = [line for lines in note.sections.values() for line in lines]
    assert not any("show me" in line.lower() for line in written)
    assert any("pneumonitis" in line for line in written)
