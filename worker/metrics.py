"""Prometheus metrics, on a registry the app owns (no hidden global state). Labels never carry
patient data: stage, provider, vendor, endpoint, errorType and outcome only."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from schemas.errors import ErrorType
from worker.constants import STAGES

_KNOWN_ERROR_TYPES = frozenset(error_type.value for error_type in ErrorType)
OTHER_ERROR_TYPE = "other"


def error_label(error_type: str) -> str:
    """An errorType as a metric label: one of the catalogue's, or "other".

    A 403 carries whatever errorType the vendor put in it; as a label, each new value would be a
    new time series for as long as the process lives.
    """
    return error_type if error_type in _KNOWN_ERROR_TYPES else OTHER_ERROR_TYPE


STAGE_DURATION_BUCKETS_S = Histogram.DEFAULT_BUCKETS[:-1]  # +Inf is implied
_BUCKET_LABELS = (*(repr(float(bound)) for bound in STAGE_DURATION_BUCKETS_S), "+Inf")


class StageMetrics:
    """One stage's per-message figures as plain numbers, exposed by StageCollector on scrape.

    Every consumed message updates five of them; through prometheus_client that was six lock
    round trips per message, more than the rest of the delivery bookkeeping. The event loop is
    the only writer, and scrapes run on it too.
    """

    __slots__ = (
        "_buckets",
        "advanced",
        "completed",
        "consumed",
        "duration_sum_s",
        "in_flight",
        "last_settled_s",
        "unsettled",
    )

    def __init__(self) -> None:
        self.consumed = 0
        self.in_flight = 0
        # Deliveries taken and not yet settled, and when the last one was (time.monotonic()):
        # readiness turns false when a stage holds messages and has settled none for a while.
        self.unsettled = 0
        self.last_settled_s = 0.0
        self.advanced = 0
        self.completed = 0
        self.duration_sum_s = 0.0
        self._buckets = [0] * (len(STAGE_DURATION_BUCKETS_S) + 1)

    def observe_duration(self, seconds: float) -> None:
        self.duration_sum_s += seconds
        self._buckets[bisect_left(STAGE_DURATION_BUCKETS_S, seconds)] += 1

    def took(self, now_s: float) -> None:
        """A delivery arrived; a stage that held nothing starts its stall clock now."""
        if self.unsettled == 0:
            self.last_settled_s = now_s
        self.unsettled += 1

    def settled(self, now_s: float) -> None:
        self.unsettled -= 1
        self.last_settled_s = now_s

    def stalled(self, now_s: float, stall_after_s: float) -> bool:
        return self.unsettled > 0 and now_s - self.last_settled_s > stall_after_s

    def cumulative_buckets(self) -> list[tuple[str, float]]:
        running, cumulative = 0, []
        for bound, count in zip(_BUCKET_LABELS, self._buckets, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return cumulative


class StageCollector(Collector):
    """The stage metrics, under the names and labels prometheus_client gave them before."""

    def __init__(self, stages: dict[str, StageMetrics]) -> None:
        self._stages = stages

    def collect(self) -> Iterator[Metric]:
        consumed = CounterMetricFamily(
            "scribe_messages_consumed", "Messages taken from a stage queue.", labels=["stage"]
        )
        done = CounterMetricFamily(
            "scribe_stage_completed",
            "Messages whose stage finished and moved the job on.",
            labels=["stage", "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "scribe_in_flight", "Messages being processed now.", labels=["stage"]
        )
        duration = HistogramMetricFamily(
            "scribe_stage_duration_seconds", "Time to handle one message.", labels=["stage"]
        )
        for stage, figures in sorted(self._stages.items()):
            consumed.add_metric([stage], figures.consumed)
            done.add_metric([stage, "advance"], figures.advanced)
            done.add_metric([stage, "complete"], figures.completed)
            in_flight.add_metric([stage], figures.in_flight)
            duration.add_metric([stage], figures.cumulative_buckets(), figures.duration_sum_s)
        yield from (consumed, done, in_flight, duration)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._stages: dict[str, StageMetrics] = {}
        r = self.registry
        r.register(StageCollector(self._stages))
        self.retried = Counter(
            "scribe_stage_retried",
            "Transient failures sent to a delay tier.",
            ["stage", "error_type"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "scribe_dead_lettered", "Messages dead-lettered.", ["stage", "error_type"], registry=r
        )
        # At 0 from the start: increase() sees nothing on a series' first sample, so a series
        # born at its first increment would never fire the dead-letter alert for the first dead
        # letter of a kind (ops/prometheus/alerts.yml). Bounded: stages x catalogue + "other".
        for stage in STAGES:
            for error_type in (*sorted(_KNOWN_ERROR_TYPES), OTHER_ERROR_TYPE):
                self.dead_lettered.labels(stage, error_type)
        self.duplicates = Counter(
            "scribe_duplicates_dropped",
            "Deliveries of a stage already done.",
            ["stage"],
            registry=r,
        )
        self.submission_redeliveries = Counter(
            "scribe_submission_redeliveries",
            "Transcribe deliveries that found a paid submission an earlier delivery started and "
            "never saw through (killed, restarted or timed out between the vendor call and the "
            "ledger), by what was done: resumed, reput (Invox), reupload, deadLetter, replayed "
            "(Intron).",
            ["provider", "action"],
            registry=r,
        )
        self.deferred = Counter(
            "scribe_stage_deferred",
            "Deliveries sent back unprocessed: job busy in this stage, or ledger unavailable.",
            ["stage", "reason"],
            registry=r,
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
        self.callbacks = Counter(
            "scribe_invox_callbacks",
            "Invox callbacks received, by outcome (worker/callback_receiver.py): advanced, "
            "pending, forged, tooLarge, timedOut, notJson, unknown, replayed, alreadyAdvanced, "
            "confirmFailed, unavailable.",
            ["outcome"],
            registry=r,
        )
        self.broker_reconnects = Counter(
            "scribe_broker_reconnects",
            "Times the broker connection was lost and restored.",
            registry=r,
        )
        self.consumers_active = Gauge(
            "scribe_consumers_active",
            "Stage consumers currently registered.",
            ["stage"],
            registry=r,
        )
        # worker/dead_letter_age.py: retention of the dead letters (alert ScribeOldDeadLetters).
        self.dead_letters = Gauge(
            "scribe_dead_letters", "Messages in <prefix>.dead-letters.", registry=r
        )
        self.oldest_dead_letter_age = Gauge(
            "scribe_oldest_dead_letter_age_seconds",
            "Age of the oldest dead letter (at the head of <prefix>.dead-letters); 0 when none.",
            registry=r,
        )

    def stage(self, stage: str) -> StageMetrics:
        found = self._stages.get(stage)
        if found is None:
            found = self._stages[stage] = StageMetrics()
        return found

    async def observe_vendor_call(
        self, vendor: str, endpoint: str, outcome: int | str, duration_s: float
    ) -> None:
        self.vendor_latency.labels(vendor, endpoint, str(outcome)).observe(duration_s)
