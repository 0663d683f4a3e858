"""Real processes for the tests: a Celery worker and gunicorn, each as production starts it,
on the test database and Redis, with their output in ``test-artifacts/``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from config.celery import app as celery_app
from tests.support.paths import ARTIFACTS, ROOT
from tests.support.waits import wait_for

WORKER_SCRIPT = str(ROOT / "scripts" / "worker.sh")


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


class WorkerProcess:
    """``scripts/worker.sh`` on a host of the test's own, one pool process. A GPU worker serves
    ``models`` (default: the registry) on their queues under ``GENERATION_QUEUE`` (a test gives
    it a prefix of its own in ``extra_env``); ``queues`` replaces the queues it consumes."""

    def __init__(
        self,
        *,
        extra_env: dict[str, str] | None = None,
        kind: str = "gpu",
        name: str = "gpu",
        models: str | None = None,
        queues: str | None = None,
    ) -> None:
        self.hostname = f"{name}-{uuid.uuid4().hex[:8]}@test"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"worker-{self.hostname.split('@')[0]}.log"
        env = {**os.environ, "DATABASE_URL": database_url(), "GENERATOR_WARMUP": "0", **(extra_env or {})}
        self.process = subprocess.Popen(
            [
                WORKER_SCRIPT,
                kind,
                *([models] if models else []),
                *(["--queues", queues] if queues else []),
                "--concurrency",
                "1",
                "--hostname",
                self.hostname,
            ],
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WebProcess:
    """gunicorn with ``config/gunicorn.py`` serving ``config.asgi``, as production runs it, configured
    by environment variables alone."""

    def __init__(self, *, extra_env: dict[str, str] | None = None, port: int | None = None) -> None:
        """``port``: a restarted server's, so its clients reconnect to the same address."""
        self.url = f"http://127.0.0.1:{port or free_port()}"
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"web-{uuid.uuid4().hex[:8]}.log"
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "WEB_BIND": self.url.removeprefix("http://"),
            "WEB_CONCURRENCY": "1",
            **(extra_env or {}),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.py", "config.asgi"],
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
        stop_process(self.process)


def deploy_check(
    env: dict[str, str], *, unset: tuple[str, ...] = ("SECRET_KEY",)
) -> subprocess.CompletedProcess[str]:
    """``manage.py check --deploy`` as the release step runs it, in a fresh process with ``env``
    over this one's environment less ``unset``."""
    inherited = {name: value for name, value in os.environ.items() if name not in unset}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
