"""Webhook test fixtures: real HTTP receivers on 127.0.0.1, a real webhooks worker, a fake resolver."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.processes import WorkerProcess

# 32 fixed bytes: tests verify signatures with this, so the worker must sign with it too.
TEST_SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2stc2lnbmF0dXJlcw=="
OLD_SECRET = "whsec_b2xkLXNlY3JldC1mb3Itd2ViaG9vay1zaWduYXR1cmVzIQ=="


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server that answers the scripted statuses in turn (the last one repeats)."""

    statuses: list[int]
    location: str = ""
    answer_after: float = 0.0
    requests: list[ReceivedRequest] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    def handle(self, request: ReceivedRequest) -> int:
        self.requests.append(request)
        return self.statuses[min(len(self.requests), len(self.statuses)) - 1]


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(
        *statuses: int,
        location: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        answer_after: float = 0.0,
    ) -> Receiver:
        receiver = Receiver(
            statuses=list(statuses) or [200], location=location, host=host, answer_after=answer_after
        )

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.handle(
                    ReceivedRequest(path=self.path, headers=dict(self.headers.items()), body=body)
                )
                time.sleep(receiver.answer_after)  # a slow receiver: the request stays in flight
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        receiver.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Names mapped to the answers of successive lookups (the last repeats; [] = no such name).
    Other names resolve normally.

    The resolver is the boundary of the system under test: no external DNS exists here.
    """
    answers: dict[str, list[list[str]]] = {}
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kwargs)
        addresses = answers[host][0] if len(answers[host]) == 1 else answers[host].pop(0)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture(scope="session")
def webhooks_worker(gpu_worker: WorkerProcess) -> Iterator[WorkerProcess]:
    """A real ``celery worker -Q webhooks`` process allowed to call receivers on 127.0.0.1.

    Started after the gpu worker, whose fixture empties Redis first. It consumes only the
    webhooks queue, so any delivery it makes proves the task was routed there.
    """
    worker = WorkerProcess(
        kind="webhooks",
        name="webhooks",
        queues="webhooks",
        extra_env={
            "WEBHOOK_ALLOW_HTTP": "1",
            "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
            "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2",
            "WEBHOOK_RETRY_JITTER": "0",
            "WEBHOOK_SECRETS": TEST_SECRET,
        },
    )
    try:
        worker.wait_ready(loads_engine=False)
        yield worker
    finally:
        worker.stop()
