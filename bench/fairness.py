"""Fairness bench: API keys of different weights and anonymous networks submit bursts
against a real worker; prints each caller's share of served compute against its expected share.

Starts a private Redis and one ``celery worker -Q gpu`` on a scratch SQLite database. Every
caller queues its whole burst first (the worker is started after), so all have a backlog;
then the compute served in the first third of the jobs is split by caller and set against
weight / sum of weights. One image per pipeline call, so the order alone decides.

    .venv/bin/python bench/fairness.py [--jobs-per-caller 9] [--steps 2] [--size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from eta import start_bench_django, start_worker, stop_processes

KEY_WEIGHTS = {"key-w1": 1.0, "key-w2": 2.0, "key-w4": 4.0}
ANONYMOUS = ("198.51.100.1", "2001:db8:1:2::1")
# The last anonymous caller asks for twice the steps: its share is in compute, not in jobs.
HEAVY_STEPS_FACTOR = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs-per-caller", type=int, default=9)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    callers = len(KEY_WEIGHTS) + len(ANONYMOUS)
    redis = start_bench_django(
        run_dir, JOB_QUEUE_MAX=str(args.jobs_per_caller * callers + 1), GENERATION_BATCH_IMAGES="1"
    )

    worker = None
    try:
        total = submit_bursts(args)
        worker = start_worker(run_dir)
        report(total)
    finally:
        stop_processes(worker, redis)


def submit_bursts(args: argparse.Namespace) -> int:
    from jobs import services
    from ratelimit.callers import anonymous_caller, api_key_caller
    from ratelimit.services import api_key_create

    callers = [
        api_key_caller(
            api_key_create(name=name, weight=weight, max_active_jobs=0, submit_rate="1000/m")[0],
            client_ip="192.0.2.1",
        )
        for name, weight in KEY_WEIGHTS.items()
    ] + [anonymous_caller(ip) for ip in ANONYMOUS]
    submitted = 0
    # Interleaved, so that no caller's burst is older as a whole than another's.
    for index in range(args.jobs_per_caller):
        for caller in callers:
            heavy = caller is callers[-1]
            services.job_submit(
                prompt=f"a lighthouse, take {index}",
                client_ip=caller.client_ip,
                caller=caller,
                width=args.size,
                height=args.size,
                steps=args.steps * (HEAVY_STEPS_FACTOR if heavy else 1),
            )
            submitted += 1
    return submitted


def report(total: int) -> None:
    from jobs.models import GenerationJob, JobStatus

    # While every caller still has a backlog: the heaviest-weighted one empties its own after
    # about its weight share of the jobs, so a third of them stays well inside that. The rest
    # is never looked at, so the bench stops once the window is served.
    window_size = total // 3
    finished = GenerationJob.objects.filter(status=JobStatus.COMPLETED)
    while finished.count() < window_size:
        if GenerationJob.objects.filter(status=JobStatus.FAILED).exists():
            raise SystemExit("a job failed; see the worker log")
        time.sleep(0.5)
    window = list(
        GenerationJob.objects.filter(started_at__isnull=False)
        .order_by("started_at")
        .values_list("client_network", "priority_weight", "cost_units")[:window_size]
    )
    units: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    weights = {}
    for account, weight, cost in window:
        units[account] += cost
        counts[account] += 1
        weights[account] = weight
    served_total = sum(units.values())
    weight_total = sum(weights.values())
    print(f"{len(window)} of {total} jobs, {served_total} compute units served while all callers waited")
    print(f"{'caller':>22} {'weight':>6} {'jobs':>5} {'units':>8} {'share':>7} {'expected':>8}")
    for account in sorted(units, key=lambda name: -weights[name]):
        share = float(units[account] / served_total)
        expected = weights[account] / weight_total
        print(
            f"{account:>22} {weights[account]:>6.1f} {counts[account]:>5} {units[account]:>8} "
            f"{share:>7.1%} {expected:>8.1%}"
        )


if __name__ == "__main__":
    main()
