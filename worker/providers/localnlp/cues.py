"""A sentence to its note section: by speaker, zone (history, exam, plan) and cue words; the
review of systems from a question and its answer."""

from __future__ import annotations

import re

from worker.providers.localnlp import rules
from worker.providers.localnlp.cleaning import content_words, finish
from worker.providers.localnlp.model import Gender, Note, Sentence
from worker.providers.localnlp.person import to_third_person
from worker.providers.localnlp.rules import AP, CC, EXAM, HPI, RESULTS, ROS


def informative(text: str, minimum: int = 3) -> bool:
    return len(content_words(text)) >= minimum and not rules.SOCIAL_RE.search(text)


def route(note: Note, s: Sentence, text: str) -> None:
    """A labelled statement (text: in note style) to its section, by speaker, zone and cues."""
    if s.role == "doctor" and rules.INTRO_RE.search(s.text):
        _introduction(note, s, text)
    elif s.role == "doctor" and rules.RESULTS_CUE.search(s.text) and s.zone != "history":
        _result(note, s, text)
    elif s.zone == "exam":
        _exam_zone(note, s, text)
    elif s.zone == "plan":
        if s.role == "doctor" and (
            rules.PLAN_CUE.search(s.text) or rules.ASSESSMENT_CUE.search(s.text)
        ):
            _plan(note, text, s)
    elif _history_statement(s, text):
        if _denied_symptom(s):
            denial = rules.DENIAL_LEAD_RE.match(text)
            note.add(ROS, f"Denies {text[denial.end() :]}" if denial else text)
        else:
            note.add(HPI, attributed(note, s, text))


def attributed(note: Note, s: Sentence, text: str) -> str:
    """The patient's statement as reported speech: "He reports ...", "She denies ..."; the
    clinician's sentences, and the patient's that already have the patient as subject, as
    they are."""
    if s.role != "patient" or rules.PATIENT_SUBJECT_RE.match(text):
        return text
    denial = rules.DENIAL_LEAD_RE.match(text)
    if denial:
        return f"{note.subject} denies {text[denial.end() :]}"
    return f"{note.subject} reports {text[:1].lower()}{text[1:]}"


def chief_complaint(note: Note, sentences: list[Sentence]) -> None:
    """Without an introduction naming it: the reason the clinician gives for the visit before
    the plan (an early "let me take a look" does not end the search), else the first symptom
    the patient names ("right knee pain")."""
    history = [
        s for s in sentences[: rules.CC_SEARCH_SENTENCES] if s.zone != "plan" and not s.question
    ]
    for s in history:
        reason = rules.REASON_RE.search(s.text) if s.role == "doctor" else None
        if reason and len(reason.group(1).split()) <= rules.MAX_CC_REASON_WORDS:
            note.sources = (s.span,)
            note.add(CC, finish(reason.group(1)))
            return
    for s in history:
        phrase = rules.CC_PHRASE_RE.search(s.text)
        if phrase and not rules.NEGATION_RE.search(s.text):
            words = phrase.group(0).split()
            while words and words[0].lower() in rules.SPEECH_STOP_WORDS:
                words.pop(0)
            note.sources = (s.span,)
            note.add(CC, finish(" ".join(words)))
            return


def _denied_symptom(s: Sentence) -> bool:
    """A short statement of the patient's that denies a symptom ("no belly pain though")
    belongs to the review of systems."""
    return (
        s.role == "patient"
        and len(s.text.split()) <= rules.MAX_ROS_STATEMENT_WORDS
        and bool(rules.NEGATION_RE.search(s.text))
        and bool(rules.ROS_SYMPTOM.search(s.text))
    )


def _introduction(note: Note, s: Sentence, text: str) -> None:
    """The clinician's opening names the reason for the visit: the chief complaint."""
    reason = rules.REASON_RE.search(s.text)
    if reason and not note.sections[CC]:
        note.add(CC, finish(reason.group(1)))
    note.add(HPI, text)


def _result(note: Note, s: Sentence, text: str) -> None:
    """A result the clinician cites, unless it is the plan speaking about a result to come."""
    planned = (
        rules.PLAN_CUE.search(s.text)
        and s.zone == "plan"
        and not rules.FINDING_REPORTED_RE.search(s.text)
    )
    if planned:
        _plan(note, text, s)
    else:
        note.add(RESULTS, text)


def _exam_zone(note: Note, s: Sentence, text: str) -> None:
    # A visit that never announces its plan still states one (prescribing, referring, ...).
    if s.role == "doctor" and rules.PLAN_IN_EXAM_RE.search(s.text):
        _plan(note, text, s)
    elif s.role == "doctor" and rules.EXAM_FINDING.search(s.text):
        note.add(EXAM, text)
    elif s.role == "patient" and rules.SYMPTOM_CUE.search(s.text):
        note.add(HPI, attributed(note, s, text))


def _history_statement(s: Sentence, text: str) -> bool:
    if s.role == "patient":
        return bool(rules.SYMPTOM_CUE.search(s.text) or informative(text, 5))
    return s.role == "doctor" and bool(rules.HISTORY_RECAP_RE.search(s.text))


def _plan(note: Note, text: str, s: Sentence) -> None:
    note.add(AP, text)
    if rules.PLAN_CUE.search(s.text):
        note.plan.append(text)
    else:
        note.assessment.append(text)


def review_of_systems(note: Note, sentences: list[Sentence], position: int, gender: Gender) -> None:
    """A doctor's 'any X?' answered 'no'/'yes' by the patient: 'Denies X.' / 'Endorses X.'"""
    question = sentences[position]
    if question.role != "doctor" or position + 1 >= len(sentences):
        return
    answer = sentences[position + 1]
    if answer.role != "patient" or answer.turn != question.turn + 1:
        return
    topic = _ros_topic(question.text, gender)
    if topic is None:
        return
    verdict = _ros_verdict(answer.text, topic)
    if verdict:
        note.add(ROS, finish(f"{verdict} {topic}"))


def _ros_topic(question: str, gender: Gender) -> str | None:
    """The symptoms a clinician's 'any X?' asks about, in third person, or None."""
    match = rules.ROS_QUESTION.search(question)
    if not match:
        return None
    topic = match.group(1).strip(" ?.,")
    topic = rules.ROS_TOPIC_NOISE_RE.sub("", topic)
    topic = rules.ROS_TOPIC_LEAD_RE.sub("", topic)
    topic = rules.ROS_INNER_ANY_RE.sub(" ", topic)
    topic = rules.SPACE_RE.sub(" ", to_third_person(topic, "you", gender)).strip(" ,")
    if (
        not topic
        or len(topic.split()) > rules.MAX_ROS_TOPIC_WORDS
        or not content_words(topic)
        or rules.SOCIAL_RE.search(topic)
        or rules.QUESTIONS_RE.search(topic)
        or not rules.ROS_SYMPTOM.search(topic)
    ):
        return None
    return topic


def _ros_verdict(answer: str, topic: str) -> str | None:
    """'denies' for a no, 'endorses' for a yes or an answer that names the symptom unnegated."""
    if rules.NEGATION_ANSWER.search(answer):
        return "denies"
    if rules.YES_ANSWER.search(answer):
        return "endorses"
    named = set(content_words(answer)) & set(content_words(topic))
    if named and not rules.NEGATION_RE.search(answer):
        return "endorses"
    return None


def label_review(note: Note) -> None:
    """The review of systems by system ("Neurological: Denies numbness."), the presenting
    complaint among them ("Musculoskeletal: Reports left knee pain."), each line keeping the
    evidence of the sentence it came from."""
    lines = list(note.sections[ROS])
    complaint = note.sections[CC][0] if note.sections[CC] else ""
    if complaint and _system(complaint):
        reported = f"Reports {complaint[:1].lower()}{complaint[1:]}"
        note.origin.setdefault(reported, note.origin.get(complaint, ()))
        lines.insert(0, reported)
    note.sections[ROS] = _labelled(note, lines, rules.ROS_SYSTEMS)
    note.sections[EXAM] = _labelled(note, note.sections[EXAM], rules.EXAM_SYSTEMS)


def _labelled(
    note: Note, lines: list[str], systems: tuple[tuple[str, re.Pattern[str]], ...]
) -> list[str]:
    """Each line with the first system whose words it has in front ("Respiratory: ..."), its
    evidence that of the line."""
    out: list[str] = []
    for line in lines:
        system = next((name for name, words in systems if words.search(line)), None)
        text = f"{system}: {line}" if system else line
        note.origin.setdefault(text, note.origin.get(line, ()))
        out.append(text)
    return out


def _system(line: str) -> str | None:
    return next((name for name, words in rules.ROS_SYSTEMS if words.search(line)), None)
