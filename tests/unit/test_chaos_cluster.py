"""scribe-chaos --cluster's plan (issue 19, item 3): which node URLs each worker gets, how the
jobs are split around the node kill and the graceful restart, and that a broker problem fails
the run."""

from __future__ import annotations

from typing import Any

from ops.chaos import Drain, Ledger, Options, report, worker_envs
from ops.chaos_cluster import rotated_urls, wave_bounds

URLS = ["amqp://n1/", "amqp://n2/", "amqp://n3/"]


def test_every_worker_gets_all_nodes_starting_at_its_own() -> None:
    assert rotated_urls(URLS, 4) == (
        "amqp://n1/,amqp://n2/,amqp://n3/",
        "amqp://n2/,amqp://n3/,amqp://n1/",
        "amqp://n3/,amqp://n1/,amqp://n2/",
        "amqp://n1/,amqp://n2/,amqp://n3/",
    )
    assert rotated_urls(URLS, 2, one_each=True) == ("amqp://n1/", "amqp://n2/")


def test_each_worker_slot_keeps_its_urls() -> None:
    options = Options(jobs=1, workers=3, kill_interval_s=0, broker_restarts=0, fault_rate=0,
                      timeout_s=1, amqp_url="amqp://n3/", redis_url="redis://r/", seed=1,
                      worker_urls=rotated_urls(URLS, 3))  # fmt: skip
    envs = worker_envs(options, {"SCRIBE_PREFIX": "p"})
    assert [env["SCRIBE_AMQP_URL"].split(",")[0] for env in envs] == URLS
    assert all(env["SCRIBE_PREFIX"] == "p" for env in envs)
    single = Options(**{**options.__dict__, "worker_urls": ()})
    assert [env["SCRIBE_AMQP_URL"] for env in worker_envs(single, {})] == ["amqp://n3/"]


def test_jobs_are_published_in_three_waves_covering_every_job() -> None:
    assert wave_bounds(1000) == (500, 750)
    assert wave_bounds(30) == (15, 22)
    first, second = wave_bounds(3)
    assert 1 <= first <= second <= 3


def test_a_broker_problem_fails_an_otherwise_clean_run() -> None:
    job = "00000000-0000-4000-8000-000000000001"
    ledger = Ledger(submitted={job}, audio={job: "sha"})
    ledger.outcomes[job].append(("job.completed", "e", "m"))
    stats: dict[str, Any] = {"calls": {}, "paid_submissions": []}
    drained = Drain(drained=True)
    text, clean = report(ledger, stats, 1.0, drained, [], ["chaos: cluster: node 1 killed"])
    assert clean
    assert "chaos: cluster: node 1 killed" in text
    text, clean = report(ledger, stats, 1.0, drained, [], [], ["node 1 did not come back"])
    assert not clean
    assert "chaos: BROKER PROBLEM: node 1 did not come back" in text
