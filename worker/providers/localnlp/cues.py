"""A sentence to its note section: by speaker, zone (history, exam, plan) and cue words; the
review of systems from a question and its answer."""

from __future__ import annotations

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
        note.add(HPI, text)


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
    if s.role == "doctor" and rules.EXAM_FINDING.search(s.text):
        note.add(EXAM, text)
    elif s.role == "patient" and rules.SYMPTOM_CUE.search(s.text):
        note.add(HPI, text)


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
    match = rules.ROS_QUESTION.search(question.text)
    if not match:
        return
    topic = match.group(1).strip(" ?.,")
    topic = rules.ROS_TOPIC_NOISE_RE.sub("", topic)
    topic = to_third_person(topic, "you", gender).strip(" ,")
    if (
        not topic
        or len(topic.split()) > 8
        or not content_words(topic)
        or rules.SOCIAL_RE.search(topic)
        or rules.QUESTIONS_RE.search(topic)
        or not rules.ROS_SYMPTOM.search(topic)
    ):
        return
    if rules.NEGATION_ANSWER.search(answer.text):
        note.add(ROS, finish(f"denies {topic}"))
    elif rules.YES_ANSWER.search(answer.text):
        note.add(ROS, finish(f"endorses {topic}"))
