"""Prometheus metrics, on a registry the app owns (no hidden global state). Labels never carry
patient data: stage, provider, vendor, endpoint, errorType and outcome only."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class StageMetrics:
    """One stage's label children, looked up once: labels() costs more than the update."""

    consumed: Counter
    in_flight: Gauge
    duration: Histogram
    advanced: Counter
    completed: Counter


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._stages: dict[str, StageMetrics] = {}
        r = self.registry
        self.consumed = Counter(
            "scribe_messages_consumed", "Messages taken from a stage queue.", ["stage"], registry=r
        )
        self.completed = Counter(
            "scribe_stage_completed",
            "Messages whose stage finished and moved the job on.",
            ["stage", "outcome"],
            registry=r,
        )
        self.retried = Counter(
            "scribe_stage_retried",
            "Transient failures sent to a delay tier.",
            ["stage", "error_type"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "scribe_dead_lettered", "Messages dead-lettered.", ["stage", "error_type"], registry=r
        )
        self.duplicates = Counter(
            "scribe_duplicates_dropped",
            "Deliveries of a stage already done.",
            ["stage"],
            registry=r,
        )
        self.deferred = Counter(
            "scribe_stage_deferred",
            "Deliveries sent back unprocessed: job busy in this stage, or ledger unavailable.",
            ["stage", "reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "scribe_in_flight", "Messages being processed now.", ["stage"], registry=r
        )
        self.stage_duration = Histogram(
            "scribe_stage_duration_seconds", "Time to handle one message.", ["stage"], registry=r
        )
        self.vendor_latency = Histogram(
            "scribe_vendor_call_seconds",
            "Vendor HTTP call latency.",
            ["vendor", "endpoint", "outcome"],
            registry=r,
        )
        self.polls_per_job = Histogram(
            "scribe_poll_attempts_per_job",
            "Status calls a job needed before its transcript was ready.",
            buckets=(1, 2, 3, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.consumers_active = Gauge(
            "scribe_consumers_active",
            "Stage consumers currently registered.",
            ["stage"],
            registry=r,
        )

    def stage(self, stage: str) -> StageMetrics:
        found = self._stages.get(stage)
        if found is None:
            found = self._stages[stage] = StageMetrics(
                consumed=self.consumed.labels(stage),
                in_flight=self.in_flight.labels(stage),
                duration=self.stage_duration.labels(stage),
                advanced=self.completed.labels(stage, "advance"),
                completed=self.completed.labels(stage, "complete"),
            )
        return found

    async def observe_vendor_call(
        self, vendor: str, endpoint: str, outcome: int | str, duration_s: float
    ) -> None:
        self.vendor_latency.labels(vendor, endpoint, str(outcome)).observe(duration_s)
