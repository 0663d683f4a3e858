"""The poll path under load: requests per second of a finished job's status GET (200), the
same GET answered 304 (``If-None-Match``), and ``/healthz``, on one web server in one run.

    apt-get install wrk                                   # the load generator
    .venv/bin/python bench/web_status.py                  # the shipped gunicorn config
    .venv/bin/python bench/web_status.py --server "python -m uvicorn config.asgi:application --port {port}"

The server command is run from the repository root with ``{port}`` filled in (``PORT`` and
``WEB_BIND`` are set too), as one web process. A private Redis and SQLite database. Requests
come from ``--clients`` addresses in turn (``X-Forwarded-For`` from a trusted proxy, by
``web_status_clients.lua``), so the status poll limit counts them at its production rate, as
many pollers would be counted. The three targets take turns for ``--rounds`` rounds (so load
from other processes on the machine falls on all of them alike); the medians and their
ratios to ``/healthz`` are printed, with the server's CPU time and context switches per
request (from ``/proc``, over the server process and its children), which say where a
difference in rates comes from.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from eta import ROOT, free_port, start_redis

sys.path.insert(0, str(ROOT))

# The shipped web command, without its recycling: a process restarting mid-run resets wrk's
# connections, which measures the restart, not the poll path.
GUNICORN = "python -m gunicorn --config config/gunicorn.py --max-requests 0 config.asgi"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=GUNICORN, help="web server command; {port} is its port")
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads")
    parser.add_argument("--clients", type=int, default=1000, help="client addresses the requests come from")
    return parser.parse_args()


def prepare_database(run_dir: Path) -> str:
    """Migrates the private database and writes one completed job with one image; its id."""
    os.environ["DATABASE_URL"] = f"sqlite:///{run_dir / 'db.sqlite3'}"
    os.environ["MEDIA_ROOT"] = str(run_dir / "media")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.files.base import ContentFile
    from django.core.management import call_command
    from django.utils import timezone

    from jobs.models import GenerationJob, JobImage, JobStatus

    call_command("migrate", verbosity=0)
    now = timezone.now()
    job = GenerationJob.objects.create(
        prompt="a lighthouse at dusk",
        width=512,
        height=512,
        steps=25,
        guidance_scale=7.5,
        seed=1,
        model="tiny-sd",
        status=JobStatus.COMPLETED,
        progress_step=25,
        progress_total=25,
        client_ip="127.0.0.1",
        client_network="127.0.0.1",
        started_at=now,
        finished_at=now,
    )
    image = JobImage(job=job, index=0, seed=1)
    image.file.save("bench.png", ContentFile(b"not really a png"), save=True)
    return str(job.pk)


def start_server(command: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_BIND": f"127.0.0.1:{port}",
        # One process: with two, /healthz swung between about 550 and 1,100 req/s from run to
        # run, most likely as wrk's keep-alive connections happened to split between them.
        "WEB_CONCURRENCY": "1",
        # The production poll limit, counted for each client address wrk sends from.
        "CLIENT_IP_TRUSTED_PROXIES": "127.0.0.1/32",
        # Persistent database connections, as docker/.env.example ships.
        "CONN_MAX_AGE": "60",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    return subprocess.Popen(
        shlex.split(command.format(port=port)),
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise SystemExit("the web server exited; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the web server did not answer")


def status_etag(url: str) -> str:
    with urllib.request.urlopen(url) as response:
        body = json.load(response)
        assert body["status"] == "completed", body
        return str(response.headers["ETag"])


@dataclass(frozen=True)
class ServerCost:
    """The server's CPU seconds and context switches so far, over the process and its children."""

    cpu_seconds: float
    context_switches: int

    @classmethod
    def now(cls, server_pid: int) -> ServerCost:
        pids = [server_pid, *Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()]
        ticks, switches = 0, 0
        for pid in pids:
            # utime and stime, fields 14 and 15 of stat (counted after the parenthesised name).
            ticks += sum(
                int(field) for field in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
            )
            # Live threads only: one that starts and ends between two readings is missed.
            for status in glob.glob(f"/proc/{pid}/task/*/status"):
                with contextlib.suppress(FileNotFoundError):
                    lines = Path(status).read_text().splitlines()
                    switches += sum(int(line.split()[1]) for line in lines if "ctxt_switches" in line)
        return cls(ticks / os.sysconf("SC_CLK_TCK"), switches)


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    cpu_us_per_request: float
    switches_per_request: float


def measure(url: str, args: argparse.Namespace, headers: dict[str, str], server_pid: int) -> Run:
    before = ServerCost.now(server_pid)
    rate, requests = requests_per_second(url, args, headers)
    after = ServerCost.now(server_pid)
    return Run(
        rate,
        (after.cpu_seconds - before.cpu_seconds) / requests * 1e6,
        (after.context_switches - before.context_switches) / requests,
    )


def requests_per_second(url: str, args: argparse.Namespace, headers: dict[str, str]) -> tuple[float, int]:
    """wrk's requests per second and its count of requests."""
    # A long timeout: on a loaded machine a slow answer is still an answer, and counted.
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s", "--timeout", "30s"]
    command += ["--script", str(Path(__file__).with_name("web_status_clients.lua"))]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    env = {**os.environ, "BENCH_CLIENTS": str(args.clients)}
    output = subprocess.run([*command, url], check=True, capture_output=True, text=True, env=env).stdout
    # Every answer must be the one measured: a 429, 500 or 200-instead-of-304 is a broken run.
    if "Non-2xx or 3xx" in output or "Socket errors" in output:
        raise SystemExit(f"wrk saw errors:\n{output}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    assert rate and count, output
    return float(rate.group(1)), int(count.group(1))


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="web-status-") as directory:
        run_dir = Path(directory)
        redis = start_redis(run_dir)
        job_id = prepare_database(run_dir)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(args.server, port, run_dir / "server.log")
        try:
            wait_ready(f"{base}/healthz", server)
            status_url = f"{base}/api/v1/jobs/{job_id}"
            etag = status_etag(status_url)
            targets = {
                "healthz": (f"{base}/healthz", {}),
                "status 200": (status_url, {}),
                "status 304": (status_url, {"If-None-Match": etag}),
            }
            runs: dict[str, list[Run]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (url, headers) in targets.items():
                    runs[name].append(measure(url, args, headers, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=30)
            redis.terminate()
    print(f"server: {args.server}")
    print(
        f"wrk: {args.threads} threads, {args.connections} connections, {args.rounds} x {args.seconds} s each"
    )
    healthz = statistics.median(run.requests_per_second for run in runs["healthz"])
    for name, samples in runs.items():
        median = statistics.median(run.requests_per_second for run in samples)
        cpu = statistics.median(run.cpu_us_per_request for run in samples)
        switches = statistics.median(run.switches_per_request for run in samples)
        print(
            f"{name:<11} {median:8.0f} req/s  {median / healthz:6.0%} of /healthz  "
            f"server {cpu:5.0f} µs CPU, {switches:4.1f} context switches a request  "
            f"(runs: {[run.requests_per_second for run in samples]})"
        )


if __name__ == "__main__":
    main()
