"""The stage metrics kept as plain numbers expose exactly what prometheus_client's own Counter,
Gauge and Histogram would for the same updates."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from worker.metrics import Metrics

DURATIONS_S = [0.0001, 0.005, 0.0051, 0.3, 2.5, 20.0]


def _exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


def _reference() -> CollectorRegistry:
    registry = CollectorRegistry()
    consumed = Counter("scribe_messages_consumed", "", ["stage"], registry=registry)
    done = Counter("scribe_stage_completed", "", ["stage", "outcome"], registry=registry)
    in_flight = Gauge("scribe_in_flight", "", ["stage"], registry=registry)
    duration = Histogram("scribe_stage_duration_seconds", "", ["stage"], registry=registry)
    consumed.labels("poll").inc(6)
    done.labels("poll", "advance").inc(5)
    done.labels("poll", "complete").inc(0)
    in_flight.labels("poll").inc(1)
    for seconds in DURATIONS_S:
        duration.labels("poll").observe(seconds)
    consumed.labels("note").inc(1)
    done.labels("note", "advance").inc(0)
    done.labels("note", "complete").inc(1)
    in_flight.labels("note").set(0)
    duration.labels("note")
    return registry


def test_stage_metrics_expose_what_prometheus_client_would() -> None:
    metrics = Metrics()
    poll = metrics.stage("poll")
    for seconds in DURATIONS_S:
        poll.consumed += 1
        poll.observe_duration(seconds)
    poll.advanced += 5
    poll.in_flight += 1
    note = metrics.stage("note")
    note.consumed += 1
    note.completed += 1
    ours = [line for line in _exposition(metrics.registry) if not line.startswith("#")]
    expected = [line for line in _exposition(_reference()) if not line.startswith("#")]
    assert [line for line in ours if "scribe_stage_" in line or "scribe_messages" in line or
            "scribe_in_flight" in line] == expected  # fmt: skip
