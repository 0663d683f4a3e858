"""Event streams on one web process (gunicorn + uvicorn's worker, one process, as production runs
each of its processes): how many it holds, what an idle stream costs in memory, and how long a
worker's progress write takes to reach the clients.

    .venv/bin/python bench/streams.py                       # 1,000 held streams, 100 timed
    .venv/bin/python bench/streams.py --held 2000 --timed 100 --events 50

Starts its own Redis, SQLite database and web process; touches nothing else. Phase 1 opens
``--held`` streams of one running job and reports the web process's RSS per stream, then one
progress write reaches them all. Phase 2 keeps ``--timed`` streams and makes ``--events``
progress writes through ``services.job_record_progress`` (the worker's own call: the database
update and the publish), 100 ms apart; each event carries its publish time, and each client
notes when it read it: p50/p95/max of that latency. Clients are plain asyncio sockets in this
process (HTTP/1.0, so the body is the event stream itself).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from eta import free_port, start_redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--held", type=int, default=1000, help="streams held at once (phase 1)")
    parser.add_argument("--timed", type=int, default=100, help="streams whose latency is measured (phase 2)")
    parser.add_argument("--events", type=int, default=50, help="progress writes in phase 2")
    return parser.parse_args()


def process_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def rss_mib(pid: int) -> float:
    return process_status(pid, "VmRSS") / 1024


def web_worker_pid(master: int) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            return int(stat.parent.name)
    raise RuntimeError("gunicorn has no worker process")


class Client:
    """One stream: reads events and notes, for each progress event, now minus its publish time."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.latencies: list[float] = []
        self.steps_seen: set[int] = set()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        writer.write(
            f"GET {self.path} HTTP/1.0\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"stream refused: {status!r}")
        await reader.readuntil(b"\r\n\r\n")
        self.ready.set()
        try:
            while True:
                block = await reader.readuntil(b"\n\n")
                received = time.time()
                lines = dict(
                    line.split(": ", 1)
                    for line in block.decode().splitlines()
                    if ": " in line and not line.startswith(":")
                )
                if lines.get("event") == "progress":
                    data = json.loads(lines["data"])
                    self.latencies.append(received - data["published_at"])
                    self.steps_seen.add(data["step"])
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def open_clients(
    count: int, host: str, port: int, path: str
) -> tuple[list[Client], list[asyncio.Task[None]]]:
    clients = [Client(host, port, path) for _ in range(count)]
    tasks: list[asyncio.Task[None]] = []
    # Batches, so the listen backlog never overflows while the server accepts.
    for start in range(0, count, 100):
        batch = clients[start : start + 100]
        tasks += [asyncio.create_task(client.run()) for client in batch]
        await asyncio.wait_for(asyncio.gather(*(client.ready.wait() for client in batch)), timeout=120)
    return clients, tasks


async def publish_and_wait(
    job_id: str, steps: list[int], total: int, clients: list[Client], gap: float
) -> float:
    from jobs import services

    started = time.perf_counter()
    for step in steps:
        await asyncio.to_thread(services.job_record_progress, job_ids=[job_id], step=step, total=total)
        await asyncio.sleep(gap)
    deadline = time.monotonic() + 60
    while (
        any(len(client.steps_seen & set(steps)) < len(steps) for client in clients)
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(args: argparse.Namespace, job_id: str, web_url: str, master_pid: int) -> None:
    host, port = web_url.removeprefix("http://").split(":")
    path = f"/api/v1/jobs/{job_id}/events"
    worker_pid = web_worker_pid(master_pid)
    for _ in range(5):  # warm: the first requests import views and open connections
        urllib.request.urlopen(f"{web_url}/healthz", timeout=10).read()
    _, warm_tasks = await open_clients(1, host, int(port), path)
    for task in warm_tasks:
        task.cancel()
    await asyncio.sleep(1)
    before, threads_before = rss_mib(worker_pid), process_status(worker_pid, "Threads")

    opened = time.perf_counter()
    held, held_tasks = await open_clients(args.held, host, int(port), path)
    open_seconds = time.perf_counter() - opened
    await asyncio.sleep(2)
    after, threads_after = rss_mib(worker_pid), process_status(worker_pid, "Threads")
    reach = await publish_and_wait(job_id, [1], 1000, held, gap=0)
    reached = sum(1 for client in held if 1 in client.steps_seen)
    held_latencies = [client.latencies[0] for client in held if client.latencies]
    print(f"phase 1: {args.held} streams of one job on one web process")
    print(
        f"  opened in {open_seconds:.1f} s; web RSS {before:.1f} -> {after:.1f} MiB: "
        f"{(after - before) * 1024 / args.held:.1f} KiB per idle stream; threads {threads_before} -> {threads_after}"
    )
    print(
        f"  one progress write reached {reached}/{args.held} streams in {reach:.2f} s; latency p50 "
        f"{statistics.median(held_latencies) * 1000:.0f} ms, p95 {percentile(held_latencies, 0.95) * 1000:.0f} ms, "
        f"max {max(held_latencies) * 1000:.0f} ms"
    )
    for task in held_tasks[args.timed :]:
        task.cancel()
    timed = held[: args.timed]
    # The closed streams' clean-up (one Redis call each) settles before the timed phase.
    await asyncio.sleep(10)
    for client in timed:
        client.latencies.clear()

    steps = list(range(2, 2 + args.events))
    await publish_and_wait(job_id, steps, 1000, timed, gap=0.1)
    latencies = [value for client in timed for value in client.latencies]
    missing = sum(len(set(steps) - client.steps_seen) for client in timed)
    print(
        f"phase 2: {args.timed} streams, {args.events} progress writes 100 ms apart ({len(latencies)} receipts, {missing} missing)"
    )
    print(
        f"  write -> receipt: p50 {statistics.median(latencies) * 1000:.1f} ms, p95 {percentile(latencies, 0.95) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    for task in held_tasks[: args.timed]:
        task.cancel()


def main() -> None:
    args = parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    redis = start_redis(run_dir)
    os.environ.update(
        {
            "DATABASE_URL": f"sqlite:///{run_dir / 'bench.sqlite3'}",
            "DEBUG": "0",
            "EVENTS_MAX_STREAMS_PER_CLIENT": str(args.held + 10),
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from jobs.models import GenerationJob, JobStatus

    call_command("migrate", verbosity=0)
    job = GenerationJob.objects.create(
        prompt="a lighthouse",
        width=512,
        height=512,
        steps=1000,
        guidance_scale=7.5,
        seed=1,
        status=JobStatus.RUNNING,
        started_at=timezone.now(),
        client_ip="127.0.0.1",
        client_network="127.0.0.1",
    )
    web_url = f"http://127.0.0.1:{free_port()}"
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.py", "config.asgi"],
        cwd=ROOT,
        env={**os.environ, "WEB_BIND": web_url.removeprefix("http://"), "WEB_CONCURRENCY": "1"},
        stdout=(run_dir / "web.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{web_url}/healthz", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        asyncio.run(measure(args, str(job.pk), web_url, web.pid))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        web.terminate()
        web.wait(timeout=30)
        redis.terminate()
        redis.wait()


if __name__ == "__main__":
    main()
