"""Admin at scale: seeds many jobs into a scratch SQLite database and times the jobs
changelist (with its filters and searches) and the queue dashboard's queries.

    .venv/bin/python bench/admin_rows.py                # 1,000,000 rows (seeded once, reused)
    .venv/bin/python bench/admin_rows.py --rows 100000 --repeat 5

The scratch database is var/bench/admin-<rows>.sqlite3; delete it to seed afresh.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKERS = [f"gpu-{n}@node{n // 2}" for n in range(8)]
SUBJECTS = [
    "a lighthouse at dusk",
    "a red fox in snow",
    "an owl at night",
    "a city in the rain",
    "a bowl of fruit",
]
STYLES = ["oil painting", "photograph", "watercolour", "pencil sketch", "isometric render"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per page; the median is reported")
    return parser.parse_args()


def setup_django(rows: int) -> None:
    database = ROOT / "var" / "bench" / f"admin-{rows}.sqlite3"
    database.parent.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    # Plain static storage: the admin's templates then need no collectstatic manifest.
    os.environ["DEBUG"] = "true"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(rows: int) -> None:
    """A year of history, oldest first: mostly completed, some failed and cancelled, a few
    still queued. Raw ``executemany`` (the model's own column values, prepared by Django):
    building a million model instances would take longer than everything measured here."""
    from django.db import connection, transaction

    from jobs.models import FailureCode, GenerationJob, JobStatus

    existing = GenerationJob.objects.count()
    if existing >= rows:
        print(f"seed: reusing {existing} rows")
        return
    ops = connection.ops
    pk = GenerationJob._meta.pk
    assert pk is not None
    # Columns not set below (added by other features) get their defaults, as an ORM insert would.
    fields = GenerationJob._meta.concrete_fields
    defaults = {
        str(field.column): field.get_db_prep_save(field.get_default(), connection) for field in fields
    }
    sql = (
        f"INSERT INTO {GenerationJob._meta.db_table} ({', '.join(defaults)}) "
        f"VALUES ({', '.join(['%s'] * len(defaults))})"
    )
    rng = random.Random(7)
    now = datetime.now(UTC)
    year = 365 * 86400
    offsets = sorted((rng.uniform(0, year) for _ in range(rows - existing)), reverse=True)
    failure_codes = [FailureCode.TIMEOUT, FailureCode.OUT_OF_MEMORY, FailureCode.INFERENCE_ERROR]
    started = time.perf_counter()
    batch: list[tuple[Any, ...]] = []
    for n, offset in enumerate(offsets, start=existing):
        created = now - timedelta(seconds=offset)
        roll = rng.random()
        status, code = JobStatus.COMPLETED, ""
        if roll > 0.9:
            status, code = JobStatus.FAILED, rng.choice(failure_codes)
        if roll > 0.96:
            status, code = JobStatus.CANCELLED, FailureCode.CANCELLED
        if roll > 0.99995:
            status, code = JobStatus.QUEUED, ""
        begun = finished = None
        worker = ""
        ip = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}"
        if status != JobStatus.QUEUED:
            worker = rng.choice(WORKERS)
            begun = created + timedelta(seconds=rng.uniform(0.1, 30))
            finished = begun + timedelta(seconds=rng.lognormvariate(1.5, 0.5))
        values = {
            "id": pk.get_db_prep_value(uuid.UUID(int=rng.getrandbits(128), version=4), connection),
            "prompt": f"{rng.choice(SUBJECTS)}, {rng.choice(STYLES)}, variation {n}",
            "width": 512,
            "height": 512,
            "steps": 25,
            "guidance_scale": 7.5,
            "seed": rng.getrandbits(32),
            "model": "bench",
            "status": status,
            "progress_step": 25 if begun else 0,
            "progress_total": 25 if begun else 0,
            "failure_code": code,
            "failure_message": "bench" if code else "",
            "client_ip": ip,
            "client_network": ip,  # an IPv4 client's network is its address
            "worker_hostname": worker,
            "created_at": ops.adapt_datetimefield_value(created),
            "updated_at": ops.adapt_datetimefield_value(finished or created),
            "started_at": ops.adapt_datetimefield_value(begun),
            "finished_at": ops.adapt_datetimefield_value(finished),
        }
        batch.append(tuple(values.get(column, default) for column, default in defaults.items()))
        if len(batch) == 50_000 or n == rows - 1:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, batch)
            batch.clear()
            print(f"seed: {n + 1} rows, {time.perf_counter() - started:.0f} s", flush=True)


def timed(repeat: int, action: Callable[[], object]) -> tuple[float, float, int]:
    """Median milliseconds over ``repeat`` runs, of which in SQL, and the queries of one run."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    action()  # warm the page cache and Django's template cache
    durations, sql = [], []
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            action()
            durations.append((time.perf_counter() - started) * 1000)
        sql.append(sum(float(query["time"]) for query in captured.captured_queries) * 1000)
    return statistics.median(durations), statistics.median(sql), len(captured)


def main() -> None:
    args = parse_args()
    setup_django(args.rows)
    seed(args.rows)

    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from jobs import selectors
    from jobs.models import GenerationJob

    setup_test_environment()  # lets the test client through ALLOWED_HOSTS
    operator, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(operator)
    changelist = reverse("admin:jobs_generationjob_changelist")
    sample = GenerationJob.objects.order_by("created_at")[args.rows // 2]
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    pages = {
        "list, newest first": {},
        "filter status=failed": {"status__exact": "failed"},
        "filter failure_code=timeout": {"failure_code__exact": "timeout"},
        "filter worker": {"worker": WORKERS[3]},
        "filter created today": {
            "created_at__gte": str(midnight),
            "created_at__lt": str(midnight + timedelta(1)),
        },
        "search job id": {"q": str(sample.pk)},
        "search client IP": {"q": sample.client_ip},
        "search prompt words": {"q": "fox watercolour"},
        "job page": None,
    }

    def get(params: dict[str, str] | None) -> None:
        url = reverse("admin:jobs_generationjob_change", args=[sample.pk]) if params is None else changelist
        response = client.get(url, params or {})
        assert response.status_code == 200, response.status_code

    print(f"\nrows: {GenerationJob.objects.count()}, median of {args.repeat} runs\n")
    print(f"| {'page':<30} | {'total ms':>8} | {'SQL ms':>8} | queries |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 10}|---------|")
    rows: list[tuple[str, Callable[[], object]]] = [
        (name, functools.partial(get, params)) for name, params in pages.items()
    ]
    rows.append(("dashboard numbers (selector)", selectors.queue_dashboard))
    for name, action in rows:
        ms, sql_ms, queries = timed(args.repeat, action)
        print(f"| {name:<30} | {ms:8.1f} | {sql_ms:8.1f} | {queries:7d} |")


if __name__ == "__main__":
    main()
