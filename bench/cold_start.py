"""Scale-to-zero's price: a cold GPU worker's first job against a warm worker's job, in one run.

    .venv/bin/python bench/cold_start.py            # tiny model, CPU
    .venv/bin/python bench/cold_start.py --rounds 5 --steps 4

Each round queues one job, starts a fresh ``scripts/worker.sh gpu`` process (as an autoscaler
scaling from zero would) and measures the time from the process start to the job completed;
then, with that worker now warm, queues another job and measures its submit-to-completed time.
It starts its own Redis and SQLite database and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from eta import start_bench_django, start_worker, stop_processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    redis = start_bench_django(run_dir)
    try:
        cold, warm = measure(args, run_dir)
    finally:
        stop_processes(redis)
    print(f"model: tiny, {args.size} px, {args.steps} steps, {args.rounds} rounds")
    print(f"cold worker, process start -> first job completed: median {statistics.median(cold):.2f} s {cold}")
    print(f"warm worker, submit -> job completed:             median {statistics.median(warm):.2f} s {warm}")
    print(f"ratio cold / warm: {statistics.median(cold) / statistics.median(warm):.1f}x")


def measure(args: argparse.Namespace, run_dir: Path) -> tuple[list[float], list[float]]:

    from jobs import services
    from jobs.models import GenerationJob, JobStatus

    def submit(index: int) -> GenerationJob:
        return services.job_submit(
            prompt=f"a lighthouse, take {index}",
            client_ip="198.51.100.7",
            width=args.size,
            height=args.size,
            steps=args.steps,
            seed=index,
        )

    def wait_completed(job: GenerationJob) -> None:
        while GenerationJob.objects.get(pk=job.pk).status != JobStatus.COMPLETED:
            time.sleep(0.02)

    cold: list[float] = []
    warm: list[float] = []
    for round_index in range(args.rounds):
        job = submit(2 * round_index)
        started = time.perf_counter()
        worker = start_worker(run_dir)
        try:
            wait_completed(job)
            cold.append(round(time.perf_counter() - started, 2))
            job = submit(2 * round_index + 1)
            started = time.perf_counter()
            wait_completed(job)
            warm.append(round(time.perf_counter() - started, 2))
        finally:
            stop_processes(worker)
    return cold, warm


if __name__ == "__main__":
    main()
