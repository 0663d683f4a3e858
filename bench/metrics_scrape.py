"""/metrics at scale: times a Prometheus scrape of the job metrics against the database that
admin_rows.py seeds (a year of history), whole and per metric family.

    .venv/bin/python bench/metrics_scrape.py                # 1,000,000 rows (seeded once, reused)
    .venv/bin/python bench/metrics_scrape.py --rows 100000 --repeat 10 --explain

Starts a private Redis (the scrape reads the job counters there, one of each field filled in);
touches no other database or Redis.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from admin_rows import seed, setup_django, timed
from eta import start_redis


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed scrapes; medians are reported")
    parser.add_argument("--explain", action="store_true", help="print SQLite's plan of every query")
    return parser.parse_args()


def fill_counters() -> None:
    """A run in every duration bucket, a failure of every code, a cancellation and a dedupe
    hit: the hash then has every field production's has, and a scrape reads them all."""
    from jobs.models import FailureCode
    from ops import metrics

    for bound in (*metrics.JOB_DURATION_BOUNDS, 1000.0):
        metrics.record_job_finished(outcome="completed", run_seconds=bound)
    for code in FailureCode.values:
        metrics.record_job_finished(outcome="failed", failure_code=code)
    metrics.record_job_finished(outcome="cancelled")
    metrics.record_job_finished(outcome="deduplicated")


def recording_ms(calls: int = 1000) -> float:
    """What the worker pays per finished job: one pipelined round trip to Redis."""
    from ops import metrics

    started = time.perf_counter()
    for _ in range(calls):
        metrics.record_job_finished(outcome="completed", run_seconds=7.0)
    return (time.perf_counter() - started) * 1000 / calls


def per_family(repeat: int) -> dict[str, tuple[float, float, int]]:
    """Median milliseconds each metric family takes to collect, of which in SQL, and its
    queries: the collector computes a family just before it yields it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from ops.metrics import JobMetricsCollector

    collector = JobMetricsCollector()
    list(collector.collect())  # warm the page cache
    totals: dict[str, list[float]] = defaultdict(list)
    sql: dict[str, list[float]] = defaultdict(list)
    queries: dict[str, int] = {}
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            seen = 0
            started = time.perf_counter()
            for family in collector.collect():
                totals[family.name].append((time.perf_counter() - started) * 1000)
                own = captured.captured_queries[seen:]
                sql[family.name].append(sum(float(query["time"]) for query in own) * 1000)
                queries[family.name] = len(own)
                seen = len(captured)
                started = time.perf_counter()
    return {
        name: (statistics.median(totals[name]), statistics.median(sql[name]), queries[name])
        for name in totals
    }


def explain_scrape() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from ops.metrics import JobMetricsCollector

    with CaptureQueriesContext(connection) as captured:
        list(JobMetricsCollector().collect())
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
            plan = "; ".join(str(row[-1]) for row in cursor.fetchall())
            print(f"\n{query['sql'][:160]}...\n  plan: {plan}")


def main() -> None:
    args = parse_args()
    redis = start_redis(Path(tempfile.mkdtemp(prefix="bench-metrics-")))
    try:
        setup_django(args.rows)
        seed(args.rows)

        from django.test import Client
        from django.test.utils import setup_test_environment

        from jobs.models import GenerationJob

        setup_test_environment()  # lets the test client through ALLOWED_HOSTS
        fill_counters()
        client = Client()

        def scrape() -> None:
            response = client.get("/metrics")
            assert response.status_code == 200, response.status_code

        print(f"\nrows: {GenerationJob.objects.count()}, median of {args.repeat} scrapes\n")
        print(f"| {'part':<36} | {'total ms':>8} | {'SQL ms':>8} | queries |")
        print(f"|{'-' * 38}|{'-' * 10}|{'-' * 10}|---------|")
        ms, sql_ms, queries = timed(args.repeat, scrape)
        print(f"| {'GET /metrics (whole response)':<36} | {ms:8.2f} | {sql_ms:8.2f} | {queries:7d} |")
        for name, (ms, sql_ms, queries) in per_family(args.repeat).items():
            print(f"| {name:<36} | {ms:8.2f} | {sql_ms:8.2f} | {queries:7d} |")
        print(f"\nrecording one completed job (worker side): {recording_ms():.3f} ms")
        if args.explain:
            explain_scrape()
    finally:
        redis.terminate()


if __name__ == "__main__":
    main()
