"""The whole path with real parts: HTTP API -> Redis -> Celery gpu worker -> tiny pipeline -> storage."""

from __future__ import annotations

import io
import urllib.request
from typing import Any

import pytest
from PIL import Image

from tests.support.processes import WorkerProcess
from tests.support.waits import http_json, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_job_submitted_over_http_completes_with_a_png_of_the_requested_size(
    live_server: Any, gpu_worker: WorkerProcess
) -> None:
    status, headers, submitted = http_json(
        "POST",
        f"{live_server.url}/api/v1/jobs",
        {"prompt": "a red fox", "width": 96, "height": 64, "steps": 4},
    )
    assert (status, submitted["status"]) == (202, "queued")

    def completed() -> Any:
        body = http_json("GET", headers["Location"])[2]
        assert body["status"] in ("queued", "running", "completed"), body
        return body if body["status"] == "completed" else None

    body = wait_for(completed, timeout=60)

    assert body["progress"]["step"] == body["progress"]["total"] > 0
    with urllib.request.urlopen(body["image_url"], timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png"
        image = Image.open(io.BytesIO(response.read()))
    assert image.size == (96, 64)
    assert image.info["parameters"].startswith("a red fox")
