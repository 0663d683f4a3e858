"""Shared fixtures: the tiny model, an API client, and a real Celery worker process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from config.celery import app as celery_app

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WORKER_SCRIPT = str(Path(__file__).resolve().parent.parent / "scripts" / "worker.sh")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    path = Path(settings.GENERATOR_MODEL)
    if not (path / "model_index.json").exists():
        from generator.tiny_model import build_tiny_model

        build_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Any:
    from generator.engine import Engine

    return Engine.load(str(tiny_model_dir))


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def http_json(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
    """A real HTTP request to a live server; returns status, headers and the decoded JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Polls until ``predicate`` returns something truthy; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


class WorkerProcess:
    """``scripts/worker.sh`` on a queue and host of the test's own, one pool process."""

    def __init__(
        self,
        *,
        extra_env: dict[str, str] | None = None,
        kind: str = "gpu",
        name: str = "gpu",
        queues: str = "gpu",
    ) -> None:
        self.hostname = f"{name}-{uuid.uuid4().hex[:8]}@test"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"worker-{self.hostname.split('@')[0]}.log"
        env = {**os.environ, "DATABASE_URL": _database_url(), "GENERATOR_WARMUP": "0", **(extra_env or {})}
        self.process = subprocess.Popen(
            [WORKER_SCRIPT, kind, "--queues", queues, "--concurrency", "1", "--hostname", self.hostname],
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0, *, loads_engine: bool = True) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited early, see {self.log_path}")
            replies = celery_app.control.ping(destination=[self.hostname], timeout=0.5)
            return bool(replies)

        def engine_loaded() -> bool:
            return "event=engine_ready" in self.log_path.read_text()

        wait_for(answers, timeout=timeout, interval=0.2)
        if not loads_engine:  # e.g. a webhooks worker: no pipeline to wait for
            return
        # The parent answers pings before its pool process has loaded the pipeline; a task's
        # time limit that ran out during those imports would be lost, so wait for the engine.
        wait_for(engine_loaded, timeout=timeout, interval=0.2)

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL to the worker and its pool process, as when its machine is lost. The parent
        goes first, so that it cannot fork a replacement for the pool process."""
        pool = child_pids(self.process.pid)
        self.process.kill()
        for pid in pool:
            os.kill(pid, signal.SIGKILL)
        self.process.wait()


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            state_and_after = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if int(state_and_after[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Terminates a child process of the tests, killing it if it does not stop in time."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def gpu_worker(
    django_db_setup: None, django_db_blocker: Any, tiny_model_dir: Path
) -> Iterator[WorkerProcess]:
    """A real ``celery worker -Q gpu`` process sharing the test database and Redis."""
    # Wake-ups left by earlier runs would only find an empty queue, but start clean anyway.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    worker = WorkerProcess()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


# --- Abuse control ----------------------------------------------------------------------
@pytest.fixture(autouse=True)
def abuse_limits_relaxed(settings: Any) -> Iterator[None]:
    """Tests that are not about limits submit freely; tests about them set the limit they
    test. Redis-held limit state and refusal counters start empty in every test."""
    settings.SUBMIT_RATE = "1000/m"
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1000
    settings.STATUS_POLL_RATE = "1000/m"
    clear_abuse_state()
    yield


def clear_abuse_state() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    for pattern in (f"{prefix}:*:rl:*", f"{prefix}:*:usage:*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)


# --- Production shape: the web process as production runs it (issue 8) -------------------

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WebProcess:
    """gunicorn with ``config/gunicorn.py``, configured by environment variables alone."""

    def __init__(self, *, extra_env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"web-{uuid.uuid4().hex[:8]}.log"
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "WEB_BIND": self.url.removeprefix("http://"),
            "WEB_CONCURRENCY": "1",
            **(extra_env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.py", "config.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"web process exited early, see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(answers, timeout=timeout, interval=0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
