"""scribe-chaos's accounting (issue 13, items 4 and 16): what its report counts and when it fails,
from a hand-made record of a run."""

from __future__ import annotations

from typing import Any

from ops.chaos import DeadLetter, Drain, Ledger, report

A, B, C = (f"00000000-0000-4000-8000-00000000000{n}" for n in range(1, 4))
T0 = 1_800_000_000.0


def run(**changes: Any) -> Ledger:
    ledger = Ledger(submitted={A, B, C}, audio={A: "sha-a", B: "sha-b", C: "sha-c"})
    ledger.outcomes[A] += [("job.completed", "e-a", "m1"), ("job.completed", "e-a", "m2")]
    ledger.outcomes[B] += [("job.completed", "e-b", "m3")]
    ledger.last_event[C] = "job.stage.poll"
    for name, value in changes.items():
        setattr(ledger, name, value)
    return ledger


def stats(*paid: tuple[str, str, float]) -> dict[str, Any]:
    return {
        "calls": {"intron.upload": 3},
        "paid_submissions": [{"vendor": v, "audioSha256": s, "at": t} for v, s, t in paid],
    }


DRAINED = Drain(drained=True, waited_s=3.0)


def test_the_last_line_counts_resends_apart_from_different_outcomes_and_lists_lost_jobs() -> None:
    text, clean = report(run(), stats(), 10.0, DRAINED, [])
    last = text.splitlines()[-1]
    assert last == (
        "jobs=3 completed=2 dead_lettered=0 lost=1 duplicated=0 resent=1 double_billed=0"
    )
    assert f"chaos: lost {C}: last event job.stage.poll, dead letters []" in text
    assert not clean


def test_two_different_outcomes_are_duplicated() -> None:
    ledger = run(submitted={A, B})
    ledger.outcomes[B].append(("job.failed", "e-b-failed", "m4"))
    text, clean = report(ledger, stats(), 10.0, DRAINED, [])
    assert text.splitlines()[-1].endswith("lost=0 duplicated=1 resent=1 double_billed=0")
    assert not clean


def test_invox_billed_twice_fails_the_run() -> None:
    paid = stats(("invox", "sha-a", T0), ("invox", "sha-a", T0 + 10), ("invox", "sha-b", T0))
    text, clean = report(run(submitted={A, B}), paid, 10.0, DRAINED, [])
    assert "double billed: invox 1, intron 0" in text
    assert text.splitlines()[-1].endswith("double_billed=1")
    assert not clean


def test_intron_billed_twice_passes_only_with_a_kill_inside_the_window() -> None:
    paid = stats(("intron", "sha-a", T0), ("intron", "sha-a", T0 + 10), ("intron", "sha-b", T0))
    killed = run(submitted={A, B}, kill_times=[T0 + 0.5])
    text, clean = report(killed, paid, 10.0, DRAINED, [])
    assert "double billed: invox 0, intron 1 (1 with a worker kill inside the window" in text
    assert clean
    late_kill = run(submitted={A, B}, kill_times=[T0 + 5])  # after the answer would have come
    _, clean = report(late_kill, paid, 10.0, DRAINED, [])
    assert not clean


def test_a_dead_letter_of_a_completed_job_fails_the_run() -> None:
    letter = DeadLetter(B, "poll.deliveryLimitExceeded", "deliveryLimitExceeded", T0)
    ledger = run(submitted={A, B}, dead_letters=[letter])
    text, clean = report(ledger, stats(), 10.0, DRAINED, [])
    assert "for jobs that completed: 1 ['poll.deliveryLimitExceeded']" in text
    assert not clean


def test_queues_not_drained_and_cleanup_failures_fail_the_run() -> None:
    ledger = run(submitted={A, B})
    _, clean = report(ledger, stats(), 10.0, DRAINED, [])
    assert clean
    stuck = Drain(drained=False, waited_s=60.0, left={"chaos-x.poll": 2})
    text, clean = report(ledger, stats(), 10.0, stuck, [])
    assert "chaos: NOT drained: after 60 s the queues held {'chaos-x.poll': 2}" in text
    assert not clean
    after = Drain(drained=True, waited_s=1.0, left_after_stop={"chaos-x.note": 1})
    text, clean = report(ledger, stats(), 10.0, after, [])
    assert "after the workers stopped: stale copies {'chaos-x.note': 1}" in text
    assert clean  # every job has its one outcome: a copy left behind is reported, not lost work
    text, clean = report(ledger, stats(), 10.0, DRAINED, ["still on the broker: chaos-x.poll"])
    assert "chaos: clean-up FAILED: still on the broker: chaos-x.poll" in text
    assert not clean
