"""Metrics tests start from empty Redis counters and read a scrape back as samples."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from ops.metrics import JOB_COUNTERS_KEY, RATE_LIMIT_HITS_KEY
from tests.support.redis_state import redis_client

METRICS_TOKEN = "scrape-token-for-tests"


@pytest.fixture(autouse=True)
def metric_counters_cleared() -> None:
    # Every test shares one Redis, and jobs finished in earlier tests were counted in it.
    redis_client().delete(JOB_COUNTERS_KEY, RATE_LIMIT_HITS_KEY)


def metric_samples(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text scrape as ``name{label="value",...}`` -> value."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def scrape_in_process() -> dict[str, float]:
    """A scrape of /metrics through the test client, with the token production requires."""
    with override_settings(METRICS_TOKEN=METRICS_TOKEN):
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200
    return metric_samples(response.content.decode())
