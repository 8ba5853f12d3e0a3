"""The console's pages as HTML text. Every value is escaped where it is written; pages use
native links, forms and tables (keyboard reachable, each control with a label), and state is
never told by colour alone."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from ops import dlq
from ops.console import charts
from ops.console.data import DeadLetterView, QueueDepth, RateLimitUse, StageActivity
from ops.runbook import advice
from schemas.errors import ERROR_CATALOGUE, ErrorType
from schemas.status import JOB_OUTCOMES, JobStatus, JobSummary
from worker.constants import STAGES


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their name, what they may do, and their form token."""

    user: str
    csrf: str
    operator: bool
    patient_text: bool


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _time(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


def layout(title: str, body: str, viewer: Viewer | None) -> str:
    nav = ""
    if viewer is not None:
        nav = (
            '<nav aria-label="Console"><ul>'
            '<li><a href="/">Overview</a></li><li><a href="/jobs">Jobs</a></li>'
            '<li><a href="/dead-letters">Dead letters</a></li></ul>'
            f'<form method="post" action="/logout" class="logout">{csrf_field(viewer)}'
            f"<span>Signed in as {_e(viewer.user)}</span> "
            '<button type="submit">Log out</button></form></nav>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · scribe console</title>"
        '<link rel="stylesheet" href="/static/console.css"></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="brand">scribe console</p>{nav}</header>'
        f'<main id="main"><h1>{_e(title)}</h1>{body}</main></body></html>'
    )


def csrf_field(viewer: Viewer) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(viewer.csrf)}">'


def table(caption: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body or f'<tr><td colspan={len(header)}>none</td></tr>'}</tbody></table>"
    )


def login_page(login_token: str, failed: bool) -> str:
    error = '<p role="alert" class="error">Wrong name or password.</p>' if failed else ""
    body = (
        f'{error}<form method="post" action="/login">'
        f'<input type="hidden" name="login_token" value="{_e(login_token)}">'
        '<p><label for="name">Name</label> '
        '<input id="name" name="name" autocomplete="username" required maxlength="64"></p>'
        '<p><label for="password">Password</label> <input id="password" name="password" '
        'type="password" autocomplete="current-password" required maxlength="1024"></p>'
        '<p><button type="submit">Log in</button></p></form>'
    )
    return layout("Log in", body, None)


def _number(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    return _e(text + unit)


@dataclass(frozen=True)
class Overview:
    queues: Sequence[QueueDepth]
    activity: Sequence[StageActivity] | None
    dead: DeadLetterView | None
    limits: Sequence[RateLimitUse] | None
    depth_series: Mapping[str, charts.Series]
    duration_series: Mapping[str, charts.Series] | None


def _stage_rows(overview: Overview) -> list[list[str]]:
    activity = {a.stage: a for a in overview.activity or ()}
    rows = []
    for depth in overview.queues:
        if depth.kind != "stage" or depth.stage is None:
            continue
        act = activity.get(depth.stage)
        rows.append(
            [
                _e(depth.stage),
                _number(depth.messages) if depth.present else "absent",
                _number(depth.consumers),
                _number(act.running) if act else "-",
                _number(act.per_minute) if act else "-",
                _number(act.median_duration_ms, " ms") if act else "-",
            ]
        )
    return rows


def overview_page(overview: Overview, viewer: Viewer) -> str:
    stages = table(
        "Stages: ready messages, consumers, finished per minute (last 5 minutes, job index)",
        ["Stage", "Ready", "Consumers", "Running jobs here", "Done per minute", "Median duration"],
        _stage_rows(overview),
    )
    others = table(
        "Delay tiers, dead letters and unrouted events",
        ["Queue", "Kind", "Messages"],
        [
            [_e(d.name), _e(d.kind), _number(d.messages) if d.present else "absent"]
            for d in overview.queues
            if d.kind != "stage"
        ],
    )
    parts = [stages, others, _dead_summary(overview.dead), _limits(overview.limits)]
    parts.append("<h2>Queue depth, last hour</h2>")
    parts.append(charts.line_chart("Ready messages per stage queue", overview.depth_series, "msgs"))
    if overview.duration_series is not None:
        parts.append("<h2>Stage duration, last hour</h2>")
        parts.append(
            charts.line_chart(
                "Mean stage duration (5-minute buckets)", overview.duration_series, "ms"
            )
        )
    return layout("Overview", "".join(parts), viewer)


def _dead_summary(dead: DeadLetterView | None) -> str:
    if dead is None:
        return "<p>Dead letters: unavailable.</p>"
    by_type = dead.by_error_type()
    return (
        "<h2>Dead letters by errorType</h2>"
        + charts.bar_chart("Dead letters by errorType", by_type)
        + table(
            "Dead letters by errorType",
            ["errorType", "Count"],
            [
                [f'<a href="/dead-letters?errorType={_e(t)}">{_e(t)}</a>', str(n)]
                for t, n in by_type.items()
            ],
        )
        + table(
            "Dead letters by stage",
            ["Stage", "Count"],
            [[_e(s), str(n)] for s, n in dead.by_stage().items()],
        )
    )


def _limits(limits: Sequence[RateLimitUse] | None) -> str:
    if limits is None:
        return (
            "<p>Vendor rate limits: no shared limiter (SCRIBE_REDIS_URL unset) "
            "or Redis unavailable.</p>"
        )
    return table(
        "Vendor rate limits: calls per minute allowed, and how far ahead the limiter is booked",
        ["Vendor endpoint", "Limit per minute", "Booked ahead", "Calls waiting"],
        [
            [
                _e(u.endpoint),
                str(u.per_minute),
                _number(u.booked_ahead_s, " s"),
                str(u.queued_calls),
            ]
            for u in limits
        ],
    )


def _select(name: str, label: str, options: Sequence[str], chosen: str | None) -> str:
    items = "".join(
        f'<option value="{_e(o)}"{" selected" if o == chosen else ""}>{_e(o) or "any"}</option>'
        for o in ("", *options)
    )
    return (
        f'<label for="{name}">{_e(label)}</label> '
        f'<select id="{name}" name="{name}">{items}</select> '
    )


def _text_input(name: str, label: str, value: str | None) -> str:
    return (
        f'<label for="{name}">{_e(label)}</label> '
        f'<input id="{name}" name="{name}" value="{_e(value or "")}" maxlength="64"> '
    )


def jobs_page(jobs: Sequence[JobSummary] | None, query: Mapping[str, str], viewer: Viewer) -> str:
    form = (
        '<form method="get" action="/jobs" class="filters">'
        + _select("stage", "Stage", STAGES, query.get("stage"))
        + _select("outcome", "Outcome", JOB_OUTCOMES, query.get("outcome"))
        + _text_input("errorType", "errorType", query.get("errorType"))
        + _text_input("provider", "Provider", query.get("provider"))
        + _text_input("since", "Since (ISO 8601)", query.get("since"))
        + _text_input("until", "Until (ISO 8601)", query.get("until"))
        + '<button type="submit">Filter</button></form>'
    )
    if jobs is None:
        return layout(
            "Jobs", form + "<p>The job index is unavailable (SCRIBE_DATABASE_URL).</p>", viewer
        )
    rows = [
        [
            f'<a href="/jobs/{_e(j.job_id)}">{_e(j.job_id)}</a>',
            _e(j.stage),
            _e(j.outcome),
            _e(j.provider),
            str(j.attempts),
            _e(j.error_type),
            _e(_time(j.updated_at)),
        ]
        for j in jobs
    ]
    listing = table(
        "Jobs, newest first",
        ["Job", "Stage", "Outcome", "Provider", "Attempts", "errorType", "Updated"],
        rows,
    )
    return layout("Jobs", form + listing, viewer)


def job_page(job: JobStatus, viewer: Viewer) -> str:
    rows = [
        [
            _e(_time(t.at)),
            _e(t.stage),
            _e(t.kind),
            _e(t.provider),
            str(t.attempts),
            _number(t.duration_ms, " ms"),
            _e(t.error_type),
        ]
        for t in job.transitions
    ]
    summary = (
        f'<p class="outcome outcome-{_e(job.outcome)}">Outcome: <strong>{_e(job.outcome)}</strong>'
        f" at stage {_e(job.stage)}; errorType {_e(job.error_type or '-')}.</p>"
    )
    timeline = table(
        "Timeline",
        ["At", "Stage", "Transition", "Provider", "Attempts", "Duration", "errorType"],
        rows,
    )
    return layout(f"Job {job.job_id}", summary + timeline, viewer)


def _meaning(error_type: str) -> str:
    try:
        return ERROR_CATALOGUE[ErrorType(error_type)]
    except ValueError:
        return "Outside the catalogue: a vendor's own errorType (for example a 403 permission)."


def _filter_fields(filters: Mapping[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">'
        for k, v in sorted(filters.items())
        if v
    )


def dead_letters_page(view: DeadLetterView, filters: Mapping[str, str], viewer: Viewer) -> str:
    form = (
        '<form method="get" action="/dead-letters" class="filters">'
        + _text_input("errorType", "errorType", filters.get("errorType"))
        + _select("stage", "Stage", STAGES, filters.get("stage"))
        + _text_input("jobId", "Job id", filters.get("jobId"))
        + '<button type="submit">Filter</button></form>'
    )
    groups = []
    for error_type, count in view.by_error_type().items():
        letters = [
            letter for letter in view.letters if (letter.error_type or "unknown") == error_type
        ]
        rows = [
            [
                f'<a href="/dead-letters/{_e(letter.identity)}">{_e(letter.job_id or "-")}</a>',
                _e(letter.stage),
                _e(letter.attempts),
                _e(_time(letter.last_failure_at)),
                _e(letter.made_by),
            ]
            for letter in letters
        ]
        catalogued = error_type in {e.value for e in ErrorType}
        runbook = advice(error_type if catalogued else "other")
        groups.append(
            f'<section aria-labelledby="g-{_e(error_type)}"><h2 id="g-{_e(error_type)}">'
            f"{_e(error_type)} ({count})</h2>"
            f"<p><strong>Meaning:</strong> {_e(_meaning(error_type))}</p>"
            f"<p><strong>What to do:</strong> {_e(runbook or '-')}</p>"
            + table(
                f"Dead letters with errorType {error_type}",
                ["Job", "Stage", "Attempts", "Last failure", "Dead-lettered by"],
                rows,
            )
            + "</section>"
        )
    actions = _actions(filters, viewer) if view.letters else ""
    return layout(
        "Dead letters",
        form + actions + ("".join(groups) or "<p>No dead letters match.</p>"),
        viewer,
    )


def _actions(filters: Mapping[str, str], viewer: Viewer) -> str:
    if not viewer.operator:
        return "<p>Replay and purge need the operator permission.</p>"
    return (
        '<div class="actions">'
        '<form method="post" action="/dead-letters/replay">'
        f"{csrf_field(viewer)}{_filter_fields(filters)}"
        '<label for="toStage">Replay to stage</label> '
        + _select("toStage", "", STAGES, None).split("</label> ", 1)[1]
        + '<button type="submit">Dry run a replay of these</button></form>'
        '<form method="post" action="/dead-letters/purge">'
        f"{csrf_field(viewer)}{_filter_fields(filters)}"
        '<button type="submit">Review a purge of these</button></form></div>'
    )


def plan_page(
    action: str,
    letters: Sequence[tuple[dlq.DeadLetter, str | None]],
    filters: Mapping[str, str],
    viewer: Viewer,
) -> str:
    """What a replay or purge would touch, and the confirmation that does exactly that."""
    shown = ", ".join(f"{_e(k)}={_e(v)}" for k, v in sorted(filters.items()) if v) or "none (all)"
    rows = [
        [_e(letter.job_id or "-"), _e(letter.error_type), _e(letter.stage), _e(stage or "-")]
        for letter, stage in letters
    ]
    identities = "".join(
        f'<input type="hidden" name="identity" value="{_e(letter.identity)}">'
        for letter, _ in letters
    )
    verb = "Replay" if action == "replay" else "Purge"
    confirm = (
        f'<form method="post" action="/dead-letters/{action}/confirm">'
        f"{csrf_field(viewer)}{identities}{_filter_fields(filters)}"
        f'<button type="submit">{verb} these {len(letters)} dead letters</button>'
        "</form>"
        if letters
        else ""
    )
    body = (
        f"<p>Filters: {shown}</p><p>Dry run: {len(letters)} dead letter(s) would be "
        f"{'replayed' if action == 'replay' else 'deleted'}. Nothing has changed yet.</p>"
        + table("What would move", ["Job", "errorType", "From stage", "To stage"], rows)
        + confirm
        + '<p><a href="/dead-letters">Cancel</a></p>'
    )
    return layout(f"{verb}: dry run", body, viewer)


def done_page(action: str, summary: str, viewer: Viewer) -> str:
    body = (
        f'<p role="status">{_e(summary)}</p><p><a href="/dead-letters">Back to dead letters</a></p>'
    )
    return layout(f"{action.capitalize()} done", body, viewer)


def letter_page(letter: dlq.DeadLetter, viewer: Viewer) -> str:
    redacted = not viewer.patient_text
    record = {
        **letter.summary(),
        "headers": dlq.shown_headers(letter, redacted=redacted),
        "body": dlq.shown_body(letter, redacted=redacted),
    }
    note = (
        "<p>Patient text is redacted: seeing it needs the patientText permission.</p>"
        if redacted
        else "<p><strong>Unredacted:</strong> this page shows patient text.</p>"
    )
    text = json.dumps(_printable(record), indent=2, ensure_ascii=True, default=str)
    return layout("Dead letter", note + f"<pre>{_e(text)}</pre>", viewer)


def _printable(value: Any) -> Any:
    return dlq.jsonable(value)


def message_page(title: str, text: str, viewer: Viewer | None, status: str = "alert") -> str:
    return layout(title, f'<p role="{status}">{_e(text)}</p>', viewer)
