"""Queue ETA bench: predicted finish at submit vs actual, through real Redis and a real worker.

Starts a private Redis and one ``celery worker -Q gpu`` on a scratch SQLite database, runs a
few warm-up jobs so that throughput has a history, then submits a burst from three clients
and prints, per job, the finish predicted in its submit answer and the actual finish.

    .venv/bin/python bench/eta.py [--jobs 12] [--warmup 4] [--steps 8] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("198.51.100.1", "198.51.100.2", "198.51.100.3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(run_dir: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=run_dir,
        stdout=subprocess.DEVNULL,
    )
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    for _ in range(50):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return redis
        time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def start_worker(run_dir: Path, *, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``scripts/worker.sh gpu`` with one pool process on the served models' queues, logging to
    ``run_dir/worker.log``."""
    log = (run_dir / "worker.log").open("w")
    return subprocess.Popen(
        [str(ROOT / "scripts" / "worker.sh"), "gpu", "--concurrency", "1"],
        cwd=ROOT,
        env={**os.environ, **(extra_env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_bench_django(run_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    """A private SQLite database, media folder and Redis in ``run_dir``, Django set up on them
    and migrated, the tiny model built; returns the Redis process. ``env`` adds settings."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"sqlite:///{run_dir / 'bench.sqlite3'}",
        MEDIA_ROOT=str(run_dir / "media"),
        # A burst is the point: abuse control would refuse most of it.
        SUBMIT_RATE="1000/m",
        SUBMIT_MAX_ACTIVE_JOBS="0",
        **env,
    )
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    redis = start_redis(run_dir)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("build_tiny_model", if_missing=True)
    return redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="bench-eta-"))
    redis = start_bench_django(run_dir, JOB_QUEUE_MAX=str(args.jobs + args.warmup + 1))

    worker = start_worker(run_dir)
    try:
        run(args)
    finally:
        stop_processes(worker, redis)


def stop_processes(*processes: subprocess.Popen[bytes] | None) -> None:
    """Terminates each started process in turn, killing one that will not exit."""
    for process in processes:
        if process is None:
            continue
        process.terminate()
        try:
            # A warm shutdown can take ~32 s (a Celery race, see README "Stopping a GPU worker").
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def run(args: argparse.Namespace) -> None:
    from jobs import selectors, services
    from jobs.models import GenerationJob, JobStatus

    def submit(index: int) -> GenerationJob:
        return services.job_submit(
            prompt=f"a lighthouse, take {index}",
            client_ip=CLIENTS[index % len(CLIENTS)],
            width=args.size,
            height=args.size,
            steps=args.steps,
        )

    def wait_done(ids: list[uuid.UUID]) -> None:
        while GenerationJob.objects.filter(pk__in=ids).exclude(status=JobStatus.COMPLETED).exists():
            if GenerationJob.objects.filter(pk__in=ids, status=JobStatus.FAILED).exists():
                raise SystemExit("a job failed; see the worker log")
            time.sleep(0.2)

    wait_done([submit(index).pk for index in range(args.warmup)])
    throughput = selectors.queue_throughput()
    print(
        f"history: {throughput.measured_jobs} jobs, {throughput.seconds_per_job:.2f} s/job of queue, "
        f"{throughput.run_seconds:.2f} s run"
    )

    burst_start = time.time()
    predicted = {}
    for index in range(args.jobs):
        job = submit(args.warmup + index)
        estimate = selectors.job_queue_estimate(job=job)
        predicted[job.pk] = estimate.estimated_finish_at.timestamp() if estimate else time.time()
    wait_done(list(predicted))

    print(f"{'job':>4} {'client':>14} {'predicted s':>12} {'actual s':>9} {'error s':>8}")
    errors = []
    finished = GenerationJob.objects.filter(pk__in=list(predicted)).order_by("finished_at")
    for number, job in enumerate(finished, start=1):
        assert job.finished_at is not None
        forecast = predicted[job.pk] - burst_start
        actual = job.finished_at.timestamp() - burst_start
        errors.append(forecast - actual)
        print(f"{number:>4} {job.client_ip:>14} {forecast:>12.2f} {actual:>9.2f} {forecast - actual:>+8.2f}")
    mean_abs = sum(abs(error) for error in errors) / len(errors)
    last = max(job.finished_at.timestamp() for job in finished if job.finished_at) - burst_start
    print(
        f"burst of {args.jobs}: mean |error| {mean_abs:.2f} s, {100 * mean_abs / last:.0f}% of the burst's {last:.2f} s"
    )


if __name__ == "__main__":
    main()
