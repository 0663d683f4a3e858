"""The shipped docker/nginx.conf, run by a real nginx in front of a real gunicorn web process
that trusts that proxy's address alone: whatever address headers a client sends, it is known
by the address it connects from. Loopback stands in for the compose networks: each client
connects from an address of its own in 127.0.0.0/8, and nginx reaches web from 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ratelimit.models import BlockedNetwork
from tests.factories import GenerationJobFactory
from tests.support.paths import ARTIFACTS, ROOT
from tests.support.processes import WebProcess, free_port, stop_process
from tests.support.waits import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SHIPPED_CONFIG = ROOT / "docker" / "nginx.conf"
NGINX_ADDRESS = "127.0.0.1"
SPOOFING_HEADERS = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Real-IP": "203.0.113.10",
    "Forwarded": "for=203.0.113.11;proto=https",
}
JOB = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 2}


def loopback_config(*, listen_port: int, web_port: int, store_port: int) -> str:
    """The shipped configuration with compose's service names and port replaced by loopback
    addresses; every other directive stays as shipped."""
    replacements = {
        "listen 80;": f"listen {NGINX_ADDRESS}:{listen_port};",
        "server web:8000;": f"server 127.0.0.1:{web_port};",
        "proxy_pass http://minio:9000;": f"proxy_pass http://127.0.0.1:{store_port};",
    }
    text = SHIPPED_CONFIG.read_text()
    for shipped, local in replacements.items():
        assert text.count(shipped) == 1, shipped
        text = text.replace(shipped, local)
    return text


class NginxProcess:
    def __init__(self, *, web: WebProcess, folder: Path) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        config = folder / "nginx.conf"
        config.write_text(
            loopback_config(
                listen_port=self.port, web_port=int(web.url.rsplit(":", 1)[1]), store_port=free_port()
            )
        )
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / "nginx.log"
        self.process = subprocess.Popen(
            [nginx, "-p", str(folder), "-c", str(config), "-g", f"daemon off; pid {folder / 'nginx.pid'};"],
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited early, see {self.log_path}")
            try:
                return request(NGINX_ADDRESS, self.port, "GET", "/healthz")[0] == 200
            except OSError:
                return False

        wait_for(answers, timeout=60, interval=0.2)


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """One request from the loopback address ``source``."""
    connection = http.client.HTTPConnection(host, port, timeout=30, source_address=(source, 0))
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(data) if is_json and data else data
    finally:
        connection.close()


@pytest.fixture(scope="module")
def web(django_db_setup: None) -> Iterator[WebProcess]:
    web = WebProcess(extra_env={"CLIENT_IP_TRUSTED_PROXIES": f"{NGINX_ADDRESS}/32"})
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


@pytest.fixture(scope="module")
def proxy(web: WebProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxProcess]:
    nginx = NginxProcess(web=web, folder=tmp_path_factory.mktemp("nginx"))
    try:
        nginx.wait_ready()
        yield nginx
    finally:
        stop_process(nginx.process)


def web_port(web: WebProcess) -> int:
    return int(web.url.rsplit(":", 1)[1])


def test_a_client_behind_the_proxy_is_known_by_its_own_address_whatever_it_claims(
    proxy: NginxProcess,
) -> None:
    # Blocked at its real address: were the spoofed headers believed, the job would be accepted.
    BlockedNetwork.objects.create(network="127.0.0.7")

    status, body = request(
        NGINX_ADDRESS,
        proxy.port,
        "POST",
        "/api/v1/jobs",
        source="127.0.0.7",
        headers=SPOOFING_HEADERS,
        body=JOB,
    )

    assert (status, body["error"]["code"]) == (403, "blocked")


def test_a_client_that_reaches_web_directly_is_known_by_its_peer_address(web: WebProcess) -> None:
    BlockedNetwork.objects.create(network="127.0.0.8")

    status, body = request(
        "127.0.0.1",
        web_port(web),
        "POST",
        "/api/v1/jobs",
        source="127.0.0.8",
        headers={"X-Forwarded-For": "198.51.100.7"},
        body=JOB,
    )

    assert (status, body["error"]["code"]) == (403, "blocked")


def test_the_proxy_passes_the_host_the_client_asked_for(proxy: NginxProcess) -> None:
    # Django checks the Host against ALLOWED_HOSTS: a forged one must reach it to be refused.
    status, _ = request(
        NGINX_ADDRESS, proxy.port, "GET", "/healthz", source="127.0.0.11", headers={"Host": "evil.example"}
    )

    assert status == 400


def test_the_proxy_passes_each_event_of_a_stream_on_at_once(proxy: NginxProcess) -> None:
    # A queued job's stream stays open; its first event must arrive while it does.
    job = GenerationJobFactory()
    connection = http.client.HTTPConnection(
        NGINX_ADDRESS, proxy.port, timeout=30, source_address=("127.0.0.12", 0)
    )
    try:
        connection.request("GET", f"/api/v1/jobs/{job.pk}/events", headers={"Accept": "text/event-stream"})
        response = connection.getresponse()
        received = b""
        while b"\n\n" not in received:
            received += response.read1(4096)
    finally:
        connection.close()

    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert received.startswith(b"id: 0\nevent: queued\n")
