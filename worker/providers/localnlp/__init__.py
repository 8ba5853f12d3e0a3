"""The offline, rule-based NLP engine behind the "local" summarizer and note writer.

Why a package of its own: it was one 950-line module that the note writer reached into. Each
step is now a small module over one table of rules (rules.py: word lists, cue words and regular
expressions as data), so a rule can be read, tested and changed without the rest:

- turns: a transcript into speaker turns (and long turns into pieces); the patient's gender.
- cleaning: spoken text into written sentences (fillers, repeats, dictation commands).
- person: first and second person into third ("I have" -> "he has").
- numbers: number words into digits.
- cues: a sentence to its note section, by speaker, zone and cue words.
- note: the sectioned note of a transcript (and its statements), rendered or as SOAP fields.
- template: an Invox template filled from a summary, the transcript and documents.

worker.providers.local_summary and worker.providers.local_note are the providers over it.
Every loop takes a Deadline (worker.providers.local_budget) and checks it per step.
"""
