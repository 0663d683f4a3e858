"""Images per second: plain diffusers vs this project's worker path, in one run.

    .venv/bin/python bench/worker_throughput.py                 # tiny model, CPU
    .venv/bin/python bench/worker_throughput.py --full-size     # SD 1.5 architecture, 512 px (GPU)
    .venv/bin/python bench/worker_throughput.py --full-size sdxl  # SDXL base architecture, 1024 px (GPU)

It starts its own Redis, SQLite database and Celery gpu worker, then measures
(a) a plain diffusers loop calling the pipeline one prompt at a time,
(b1) the worker path one job at a time (submit, wait, repeat): batch 1, taking turns with (a),
(b2) the worker path with a burst of queued jobs (dynamic batching),
and prints images/s, their ratios, p50/p95 job latency, the queue overhead
(submit -> running) and the worker's memory before and after the jobs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eta import start_redis, start_worker, stop_processes
from full_size_models import build_sd15_model, build_sdxl_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "a lighthouse at dusk",
    "a red fox in the snow",
    "an astronaut riding a horse",
    "a bowl of ramen, studio lighting",
]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass(frozen=True)
class FullSizeModel:
    name: str
    size: int
    build: Callable[..., None]


FULL_SIZE = {
    "sd15": FullSizeModel("SD 1.5 architecture", 512, build_sd15_model),
    "sdxl": FullSizeModel("SDXL base architecture", 1024, build_sdxl_model),
}


def log_tail(path: Path, lines: int = 40) -> str:
    """The worker's last log lines: the bench deletes its folder, and a GPU run is not repeatable at will."""
    return "\n".join(path.read_text().splitlines()[-lines:])


def plain_diffusers(model: str, *, size: int, steps: int) -> Callable[[int], float]:
    """A plain diffusers pipeline, warmed up; the returned function makes one single-prompt
    call and returns its seconds."""
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    from generator.engine import choose_device, choose_dtype

    diffusers_logging.disable_progress_bar()
    device = choose_device()
    pipeline = DiffusionPipeline.from_pretrained(model, dtype=choose_dtype(device), local_files_only=True)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)

    def one(index: int) -> float:
        started = time.perf_counter()
        generator = torch.Generator(device="cpu").manual_seed(index)
        pipeline(
            PROMPTS[index % len(PROMPTS)],
            width=size,
            height=size,
            num_inference_steps=steps,
            generator=generator,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    one(0)
    return one


def worker_rss_mib(worker: subprocess.Popen[bytes]) -> float:
    """Resident memory of the worker's pool process (the one holding the pipeline)."""
    children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=16, help="jobs per measured phase")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-images", type=int, default=4, help="GENERATION_BATCH_IMAGES of the worker")
    parser.add_argument(
        "--memory-jobs", type=int, default=100, help="jobs run before the second memory reading"
    )
    parser.add_argument(
        "--full-size",
        nargs="?",
        const="sd15",
        choices=sorted(FULL_SIZE),
        help="a real architecture with random weights: sd15 (512 px) or sdxl (1024 px), 25 steps",
    )
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="with --full-size: the same classes and layout with narrow widths (a CPU check)",
    )
    parser.add_argument("--model", help="an existing diffusers folder to use instead")
    args = parser.parse_args()
    if args.full_size:
        args.size = FULL_SIZE[args.full_size].size if args.size == 64 else args.size
        args.steps = 25 if args.steps == 10 else args.steps

    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    redis = start_redis(workdir)
    worker: subprocess.Popen[bytes] | None = None
    try:
        if args.model:
            model = args.model
        else:
            model = str(workdir / "model")
            if args.full_size:
                FULL_SIZE[args.full_size].build(Path(model), reduced=args.reduced)
            else:
                from generator.tiny_model import build_tiny_model

                build_tiny_model(Path(model))
        env = {
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "MEDIA_ROOT": str(workdir / "media"),
            "GENERATOR_MODEL": model,
            "GENERATION_BATCH_IMAGES": str(args.batch_images),
            "LOG_LEVEL": "WARNING",
            # One client submitting a burst: abuse limits would refuse most of it.
            "SUBMIT_RATE": "100000/m",
            "SUBMIT_MAX_ACTIVE_JOBS": "100000",
            "SUBMIT_DAILY_QUOTA": "0",
            "JOB_QUEUE_MAX": "100000",
            # A throughput bench, not a limits test: a full-size model on a CPU takes minutes.
            "GENERATION_SOFT_TIME_LIMIT": "3600",
        }
        os.environ.update(env)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from jobs import services
        from jobs.models import GenerationJob, JobStatus

        log_path = workdir / "worker.log"
        # INFO: the worker logs event=engine_ready, which is waited for below.
        worker = start_worker(workdir, extra_env={"LOG_LEVEL": "INFO"})
        while "event=engine_ready" not in log_path.read_text():
            if worker.poll() is not None:
                raise SystemExit(f"worker died:\n{log_tail(log_path)}")
            time.sleep(0.2)
        rss_start = worker_rss_mib(worker)

        plain_one = plain_diffusers(model, size=args.size, steps=args.steps)

        seeds = itertools.count()

        def submit(index: int) -> GenerationJob:
            # A fresh seed every time: a repeated request would be answered by dedupe.
            return services.job_submit(
                prompt=PROMPTS[index % len(PROMPTS)],
                client_ip="127.0.0.1",
                width=args.size,
                height=args.size,
                steps=args.steps,
                seed=next(seeds),
            )

        def wait_all(ids: list[uuid.UUID]) -> list[GenerationJob]:
            while GenerationJob.objects.filter(
                pk__in=ids, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)
            ).exists():
                # Seldom: every poll takes CPU from the worker's two torch threads on a 2-core
                # machine, and the measurements come from the jobs' timestamps, not from here.
                time.sleep(0.25)
            finished = list(GenerationJob.objects.filter(pk__in=ids))
            failures = [
                f"{job.status} {job.failure_code}" for job in finished if job.status != JobStatus.COMPLETED
            ]
            assert not failures, f"jobs did not complete: {failures}\n{log_tail(log_path)}"
            return finished

        wait_all([submit(0).pk])  # the worker's first job, not measured

        def seconds(jobs: list[GenerationJob], start: str, end: str) -> list[float]:
            return [(getattr(job, end) - getattr(job, start)).total_seconds() for job in jobs]

        # (a) and (b1) take turns, image by image, so that a change in the machine's load
        # during the run weighs on both alike. Rates for (b) come from the jobs' own
        # timestamps, so the bench's polling delay is not counted.
        plain_times = []
        sequential = []
        for index in range(args.jobs):
            plain_times.append(plain_one(index))
            sequential.append(wait_all([submit(index).pk])[0])
        plain_seconds = sum(plain_times)
        sequential_seconds = sum(seconds(sequential, "created_at", "finished_at"))

        burst = wait_all([submit(index).pk for index in range(args.jobs)])
        first_submit = min(job.created_at for job in burst)
        burst_seconds = max(
            latency + (job.created_at - first_submit).total_seconds()
            for latency, job in zip(seconds(burst, "created_at", "finished_at"), burst, strict=True)
        )

        remaining = max(0, args.memory_jobs - 2 * args.jobs - 1)
        for start in range(0, remaining, args.jobs):
            wait_all([submit(index).pk for index in range(start, min(remaining, start + args.jobs))])
        rss_end = worker_rss_mib(worker)
        total_jobs = GenerationJob.objects.count()

        overhead = seconds(sequential, "created_at", "started_at")
        running = seconds(sequential, "started_at", "finished_at")
        batches = len({job.started_at for job in burst})
        sequential_latency = seconds(sequential, "created_at", "finished_at")
        burst_latency = seconds(burst, "created_at", "finished_at")
        plain_rate = args.jobs / plain_seconds
        sequential_rate = args.jobs / sequential_seconds
        burst_rate = args.jobs / burst_seconds

        import torch

        device = (
            torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
        )
        model_name = FULL_SIZE[args.full_size].name if args.full_size else "tiny"
        print(
            f"device: {device}; torch {torch.__version__}; model: {model_name}{' (reduced)' if args.reduced else ''}"
        )
        print(
            f"jobs per phase: {args.jobs}; {args.size}x{args.size}, {args.steps} steps; batch images {args.batch_images}"
        )
        print(f"(a)  plain diffusers, one prompt at a time : {plain_rate:7.2f} images/s")
        print(
            f"(b1) worker path, one job at a time       : {sequential_rate:7.2f} images/s  ({sequential_rate / plain_rate:.2f}x plain)"
        )
        print(
            f"(b2) worker path, {args.jobs} jobs queued         : {burst_rate:7.2f} images/s  "
            f"({burst_rate / plain_rate:.2f}x plain; {batches} pipeline calls)"
        )
        print(
            f"latency p50/p95: one at a time {statistics.median(sequential_latency) * 1000:.0f}/"
            f"{percentile(sequential_latency, 0.95) * 1000:.0f} ms; queued burst "
            f"{statistics.median(burst_latency) * 1000:.0f}/{percentile(burst_latency, 0.95) * 1000:.0f} ms"
        )
        print(
            f"queue overhead (submit -> running) p50/p95: {statistics.median(overhead) * 1000:.1f}/"
            f"{percentile(overhead, 0.95) * 1000:.1f} ms"
        )
        # Medians too: on a shared machine one slow image moves a mean, not a median.
        plain_p50 = statistics.median(plain_times)
        print(
            f"batch 1, medians: plain diffusers {plain_p50 * 1000:.1f} ms an image; worker path "
            f"{statistics.median(sequential_latency) * 1000:.1f} ms submit -> completed "
            f"({plain_p50 / statistics.median(sequential_latency):.2f}x plain), "
            f"{statistics.median(running) * 1000:.1f} ms running -> completed"
        )
        print(f"worker RSS: {rss_start:.0f} MiB at start, {rss_end:.0f} MiB after {total_jobs} jobs")
    finally:
        stop_processes(worker, redis)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
