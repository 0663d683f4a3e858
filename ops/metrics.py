"""Prometheus metrics of the jobs, read from the database at scrape time.

Web and GPU workers are separate processes (often separate machines), so job numbers are
not counted in process memory: the rows are the truth, and every scrape reads them. Request
metrics come from django-prometheus's middleware in the web process.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from django.conf import settings
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobs import selectors

# Seconds; a tiny model on CPU takes well under one, a large one on a busy GPU a minute or more.
JOB_DURATION_BOUNDS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RATE_LIMIT_HITS_KEY = "imagegen:metrics:rate_limit_hits"
WEBHOOK_RESENDS_KEY = "imagegen:metrics:webhook_resends"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=2.0, socket_timeout=2.0, decode_responses=True
    )


def record_rate_limit_hit(*, rule: str) -> None:
    """Counts one request refused by a rate limit; shared by every web process through Redis."""
    _redis().hincrby(RATE_LIMIT_HITS_KEY, rule, 1)


def record_webhook_resends(*, count: int) -> None:
    """Counts attempt messages the webhook sweep sent again; no row records a lost message."""
    _redis().incrby(WEBHOOK_RESENDS_KEY, count)


class JobMetricsCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("imagegen_jobs", "Jobs in each status now.", labels=["status"])
        for status, count in selectors.job_counts_by_status().items():
            jobs.add_metric([status], count)
        yield jobs

        failures = CounterMetricFamily(
            "imagegen_job_failures", "Failed jobs by failure code.", labels=["code"]
        )
        for code, count in selectors.job_failure_counts().items():
            failures.add_metric([code], count)
        yield failures

        histogram = selectors.job_duration_histogram(bounds=JOB_DURATION_BOUNDS)
        yield HistogramMetricFamily(
            "imagegen_job_duration_seconds",
            "Run time of completed jobs, from claim to stored result.",
            buckets=[(str(bound), count) for bound, count in histogram.buckets] + [("+Inf", histogram.count)],
            sum_value=histogram.sum_seconds,
        )

        hits = CounterMetricFamily(
            "imagegen_rate_limit_hits", "Requests refused by a rate limit.", labels=["rule"]
        )
        for rule, hit_count in _redis().hgetall(RATE_LIMIT_HITS_KEY).items():
            hits.add_metric([str(rule)], int(hit_count))
        yield hits

        yield CounterMetricFamily(
            "imagegen_dedupe_hits",
            "Submits answered from an identical completed job's stored result, without GPU time.",
            value=selectors.dedupe_hit_count(),
        )

        yield CounterMetricFamily(
            "imagegen_webhook_resends",
            "Webhook attempt messages the sweep sent again: the first was never sent or was lost.",
            value=int(_redis().get(WEBHOOK_RESENDS_KEY) or 0),
        )


job_registry = CollectorRegistry(auto_describe=False)
job_registry.register(JobMetricsCollector())
