"""The submit limit is one limit for every web process, and outlives a web process restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.ratelimit.helpers import VALID, fresh_window_client
from tests.support.paths import ARTIFACTS
from tests.support.processes import database_url, stop_process
from tests.support.waits import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class ServerProcess:
    """A real gunicorn serving the project on a free loopback port, sharing the test
    database and Redis, behind one trusted proxy hop so the test can name the client."""

    def __init__(self, name: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        ARTIFACTS.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            # Per hour rather than minute, so that server starts, however slow, stay in one window.
            "SUBMIT_RATE": "8/h",
            "SUBMIT_MAX_ACTIVE_JOBS": "100",
            "CLIENT_IP_TRUSTED_PROXY_COUNT": "1",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                "1",
            ],
            env=env,
            stdout=(ARTIFACTS / f"server-{name}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, timeout=60, interval=0.2)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"server exited early, see {ARTIFACTS}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/jobs/{uuid.uuid4()}", timeout=2)
        except urllib.error.HTTPError as error:
            return error.code == 404
        except OSError:
            return False
        return False

    def submit(self, *, client: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/jobs",
            data=json.dumps(VALID).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "X-Forwarded-For": client},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def start_server() -> Iterator[Callable[[str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        server = ServerProcess(name)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_submit_limit_holds_across_two_servers_and_a_restart(
    start_server: Callable[[str], ServerProcess],
) -> None:
    client = fresh_window_client("198.51.100.{}", period=3600, min_left=900)
    first, second = start_server("a"), start_server("b")

    statuses = [server.submit(client=client) for server in (first, second) * 4]
    ninth = second.submit(client=client)
    first.stop()
    restarted = start_server("a-restarted")
    tenth = restarted.submit(client=client)

    assert statuses == [202] * 8
    assert (ninth, tenth) == (429, 429)
