"""The shipped alert rules (ops/prometheus/alerts.yml) against what the worker exposes (issue 13,
item 9): the first dead letter of a kind fires the dead-letter alert, which it can only do if
the counter series exists at 0 before that dead letter. promtool checks and tests the rules; in
CI (CI set) a missing promtool fails instead of skipping."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas.errors import ErrorType, is_documented_by_vendor
from worker.constants import STAGES
from worker.metrics import OTHER_ERROR_TYPE, Metrics

RULES_DIR = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
RULES_TEST = RULES_DIR / "alerts.test.yml"
DEAD_LETTERED = "scribe_dead_lettered_total"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not on PATH (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def dead_lettered_samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    """(stage, error_type) -> value of scribe_dead_lettered_total in one scrape."""
    text = generate_latest(metrics.registry).decode()
    samples: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == DEAD_LETTERED:
                samples[(sample.labels["stage"], sample.labels["error_type"])] = sample.value
    return samples


def test_dead_letter_series_exist_at_zero_from_the_start() -> None:
    samples = dead_lettered_samples(Metrics())
    labels = {error_type.value for error_type in ErrorType} | {OTHER_ERROR_TYPE}
    expected = {(stage, error_type): 0.0 for stage in STAGES for error_type in labels}
    assert samples == expected


def test_rules_are_valid_and_their_tests_pass() -> None:
    checked = run_promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_promtool("test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _rule(name: str) -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    [rule] = [rule for group in groups for rule in group["rules"] if rule["alert"] == name]
    return dict(rule)


def test_the_paging_rule_names_exactly_the_vendor_documented_error_types() -> None:
    documented = {error.value for error in ErrorType if is_documented_by_vendor(error)}
    for name, operator in (("ScribeVendorPermanentDeadLetters", "=~"), ("ScribeDeadLetters", "!~")):
        found = re.search(rf'error_type{operator}"([^"]+)"', _rule(name)["expr"])
        assert found is not None, name
        assert set(found.group(1).split("|")) == documented, name


def _series_values(before: float | None, after: float) -> str:
    """Five scrapes of the fresh worker, then twenty after the dead letter ("_" = no sample)."""
    return f"{'_' if before is None else repr(before)}x5 {after!r}x20"


def test_the_first_dead_letter_a_worker_writes_fires_the_alert(tmp_path: Path) -> None:
    """The input series are two scrapes of a real Metrics: before any dead letter and after the
    first one, incremented as worker/delivery.py does it."""
    metrics = Metrics()
    before = dead_lettered_samples(metrics)
    metrics.dead_lettered.labels("note", ErrorType.INVALID_TEMPLATE.value).inc()
    metrics.dead_lettered.labels("transcribe", ErrorType.UPSTREAM_TIMEOUT.value).inc()
    after = dead_lettered_samples(metrics)
    series = [
        {
            "series": f'{DEAD_LETTERED}{{stage="{stage}",error_type="{error}"}}',
            "values": _series_values(before.get((stage, error)), value),
        }
        for (stage, error), value in sorted(after.items())
    ]
    expectations = [
        ("ScribeVendorPermanentDeadLetters", "page", "note", "invalidTemplate"),
        ("ScribeDeadLetters", "ticket", "transcribe", "upstreamTimeout"),
    ]
    rule_test = [
        {
            "eval_time": "7m",
            "alertname": alert,
            "exp_alerts": [
                {
                    "exp_labels": {"severity": severity, "stage": stage, "error_type": error},
                    "exp_annotations": {
                        key: value.replace("{{ $labels.stage }}", stage).replace(
                            "{{ $labels.error_type }}", error
                        )
                        for key, value in _rule(alert)["annotations"].items()
                    },
                }
            ],
        }
        for alert, severity, stage, error in expectations
    ]
    document = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": rule_test}],
    }
    test_file = tmp_path / "first-dead-letter.test.yml"
    test_file.write_text(yaml.safe_dump(document, sort_keys=False))
    tested = run_promtool("test", "rules", str(test_file))
    assert tested.returncode == 0, tested.stdout + tested.stderr
