"""Prometheus metrics of the jobs: counters kept in Redis by whichever process finishes a job,
and the queue as the database holds it now.

Web processes and GPU workers are separate processes (often separate machines), so job
numbers are not counted in process memory: they go to Redis hashes that every process shares.
A scrape reads those hashes in one round trip and the active jobs in one indexed query, so
its cost does not grow with the history. Request metrics come from django-prometheus's
middleware in the web process.

The counters start from zero when Redis loses its data (a flush, a restart without
persistence); Prometheus's ``rate()`` and ``increase()`` read a drop as a counter reset.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import redis
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from core.logging import log_event
from core.redis import redis_client

logger = logging.getLogger(__name__)

# Seconds; a tiny model on CPU takes well under one, a large one on a busy GPU a minute or more.
JOB_DURATION_BOUNDS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RATE_LIMIT_HITS_KEY = "imagegen:metrics:rate_limit_hits"
# One hash for every job counter, so that a scrape reads them all at once. Its fields:
# run_seconds_bucket:<upper bound>, run_seconds_sum, finished:<status>, failures:<code>,
# dedupe_hits.
JOB_COUNTERS_KEY = "imagegen:metrics:jobs"
WEBHOOK_RESENDS_KEY = "imagegen:metrics:webhook_resends"


def record_rate_limit_hit(*, rule: str) -> None:
    """Counts one request refused by a rate limit; shared by every web process through Redis."""
    redis_client().hincrby(RATE_LIMIT_HITS_KEY, rule, 1)


def _run_seconds_bucket(run_seconds: float) -> str:
    """The upper bound of the one bucket a run time is counted in: the smallest bound it does
    not exceed, so a run of exactly a bound counts in that bound's bucket."""
    index = bisect.bisect_left(JOB_DURATION_BOUNDS, run_seconds)
    return str(JOB_DURATION_BOUNDS[index]) if index < len(JOB_DURATION_BOUNDS) else "+Inf"


def _increment_job_counters(*, increments: dict[str, int], run_seconds: float | None = None) -> None:
    """Adds to the job counters in one round trip; logs and goes on when Redis is unavailable.

    Called once the job's transaction has committed: the job has finished whatever happens
    here, and a metric must never turn that into an error.
    """
    pipeline = redis_client().pipeline()
    for field, amount in increments.items():
        pipeline.hincrby(JOB_COUNTERS_KEY, field, amount)
    if run_seconds is not None:
        pipeline.hincrbyfloat(JOB_COUNTERS_KEY, "run_seconds_sum", run_seconds)
    try:
        pipeline.execute()
    except redis.RedisError as error:
        log_event(logger.warning, "job_metrics_not_recorded", fields=",".join(increments), error=str(error))


def record_job_finished(*, outcome: str, failure_code: str = "", run_seconds: float | None = None) -> None:
    """A job that reached the final status ``outcome``, or ``deduplicated``: completed from an
    identical job's files, without a run. Only a completed run's time counts; None if unknown."""
    increments = {f"finished:{outcome}": 1}
    if outcome == "deduplicated":
        increments = {"finished:completed": 1, "dedupe_hits": 1}
    elif outcome == "failed":
        increments[f"failures:{failure_code}"] = 1
    if outcome != "completed":
        run_seconds = None
    elif run_seconds is not None:
        increments[f"run_seconds_bucket:{_run_seconds_bucket(run_seconds)}"] = 1
    _increment_job_counters(increments=increments, run_seconds=run_seconds)


def _cumulative_buckets(stored: dict[str, int]) -> list[tuple[str, float]]:
    """Prometheus's cumulative ``le`` buckets from the per-bucket counts in Redis.

    A count stored under a bound that is no longer in ``JOB_DURATION_BOUNDS`` joins the
    smallest current bound above it: still true of those jobs, and the buckets stay
    cumulative, so changing the bounds needs no reset.
    """
    per_bucket = [0] * (len(JOB_DURATION_BOUNDS) + 1)
    for upper_bound, count in stored.items():
        per_bucket[bisect.bisect_left(JOB_DURATION_BOUNDS, float(upper_bound))] += count
    labels = [str(bound) for bound in JOB_DURATION_BOUNDS] + ["+Inf"]
    return list(zip(labels, itertools.accumulate(per_bucket), strict=True))


def _labelled(counts: dict[str, int], kind: str) -> dict[str, int]:
    """``{label: count}`` of the fields named ``<kind>:<label>``."""
    prefix = f"{kind}:"
    return {field.removeprefix(prefix): count for field, count in counts.items() if field.startswith(prefix)}


def record_webhook_resends(*, count: int) -> None:
    """Counts attempt messages the webhook sweep sent again; no row records a lost message."""
    redis_client().incrby(WEBHOOK_RESENDS_KEY, count)


@dataclass(frozen=True)
class GaugeReading:
    """A gauge as an app read it for one scrape: ``{label values: value}``."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    values: Mapping[tuple[str, ...], float]


class JobMetricsCollector(Collector):
    """The apps hand over their reads (``register_job_statuses``, ``register_gauge``): ops
    imports no app."""

    active_job_counts: Callable[[], Mapping[str, int]] = dict
    terminal_statuses: Sequence[str] = ()
    gauge_readers: dict[str, Callable[[], Sequence[GaugeReading]]] = {}

    def collect(self) -> Iterator[Metric]:
        pipeline = redis_client().pipeline(transaction=False)
        pipeline.hgetall(JOB_COUNTERS_KEY)
        pipeline.hgetall(RATE_LIMIT_HITS_KEY)
        pipeline.get(WEBHOOK_RESENDS_KEY)
        job_fields, rate_limit_hits, webhook_resends = pipeline.execute()
        run_seconds_sum = float(job_fields.pop("run_seconds_sum", 0.0))
        counts = {field: int(value) for field, value in job_fields.items()}

        jobs = GaugeMetricFamily("imagegen_jobs", "Jobs queued or running now.", labels=["status"])
        for status, count in self.active_job_counts().items():
            jobs.add_metric([status], count)
        yield jobs

        finished = CounterMetricFamily(
            "imagegen_jobs_finished", "Jobs that reached each final status.", labels=["status"]
        )
        for status in self.terminal_statuses:
            finished.add_metric([status], _labelled(counts, "finished").get(status, 0))
        yield finished

        failures = CounterMetricFamily(
            "imagegen_job_failures", "Failed jobs by failure code.", labels=["code"]
        )
        for code, count in sorted(_labelled(counts, "failures").items()):
            failures.add_metric([code], count)
        yield failures

        yield HistogramMetricFamily(
            "imagegen_job_duration_seconds",
            "Run time of completed jobs, from claim to stored result.",
            buckets=_cumulative_buckets(_labelled(counts, "run_seconds_bucket")),
            sum_value=run_seconds_sum,
        )

        hits = CounterMetricFamily(
            "imagegen_rate_limit_hits", "Requests refused by a rate limit.", labels=["rule"]
        )
        for rule, hit_count in rate_limit_hits.items():
            hits.add_metric([str(rule)], int(hit_count))
        yield hits

        yield CounterMetricFamily(
            "imagegen_dedupe_hits",
            "Submits answered from an identical completed job's stored result, without GPU time.",
            value=counts.get("dedupe_hits", 0),
        )

        yield CounterMetricFamily(
            "imagegen_webhook_resends",
            "Webhook attempt messages the sweep sent again: the first was never sent or was lost.",
            value=int(webhook_resends or 0),
        )

        for read in self.gauge_readers.values():
            for reading in read():
                gauge = GaugeMetricFamily(reading.name, reading.documentation, labels=list(reading.labels))
                for label_values, value in reading.values.items():
                    gauge.add_metric(list(label_values), value)
                yield gauge


job_collector = JobMetricsCollector()
job_registry = CollectorRegistry(auto_describe=False)
job_registry.register(job_collector)


def register_job_statuses(
    *, active_job_counts: Callable[[], Mapping[str, int]], terminal: Sequence[str]
) -> None:
    job_collector.active_job_counts = active_job_counts
    job_collector.terminal_statuses = terminal


def register_gauges(app: str, read: Callable[[], Sequence[GaugeReading]]) -> None:
    """Adds an app's gauges to every scrape of ``job_registry``, read in one call per scrape."""
    job_collector.gauge_readers = {**job_collector.gauge_readers, app: read}
