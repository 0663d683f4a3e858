"""/healthz answers while the process lives; /readyz names each part it cannot reach."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import Client

from tests.support.processes import free_port
from tests.support.waits import wait_for

pytestmark = pytest.mark.django_db


class ThrowawayRedis:
    """A redis-server of this test's own, so that stopping it harms no other test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                self._dir.name,
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(lambda: self._answers(), timeout=10)

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._dir.cleanup()


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()


def test_healthz_answers_ok(client: Client) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_ready_when_database_redis_and_storage_answer(
    client: Client, settings: Any, throwaway_redis: ThrowawayRedis
) -> None:
    settings.REDIS_URL = throwaway_redis.url

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "storage": "ok"},
    }


def test_readyz_returns_503_naming_redis_when_redis_is_down(
    client: Client, settings: Any, throwaway_redis: ThrowawayRedis
) -> None:
    settings.REDIS_URL = throwaway_redis.url
    assert client.get("/readyz").status_code == 200

    throwaway_redis.stop()
    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert body["checks"]["redis"] == "ConnectionError"
    assert body["checks"]["database"] == body["checks"]["storage"] == "ok"


def test_readyz_names_storage_when_media_root_is_not_writable(client: Client, settings: Any) -> None:
    with tempfile.NamedTemporaryFile() as not_a_folder:
        settings.MEDIA_ROOT = str(Path(not_a_folder.name) / "media")
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": settings.MEDIA_ROOT},
            },
        }

        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["storage"]
