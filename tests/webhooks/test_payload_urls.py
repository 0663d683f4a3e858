"""URLs inside webhook payloads: no request to take an origin from, so PUBLIC_BASE_URL gives it."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

from jobs.services import webhook_event_enqueue
from tests.factories import GenerationJobFactory, JobImageFactory
from webhooks.models import WebhookDelivery, WebhookEvent

pytestmark = pytest.mark.django_db

CaptureCallbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


def completed_payload(capture: CaptureCallbacks) -> dict[str, Any]:
    job = GenerationJobFactory(
        completed=True, webhook_url="https://hooks.example/in", webhook_events=["completed"]
    )
    JobImageFactory(job=job)
    with capture(execute=True):
        webhook_event_enqueue(job=job, event=WebhookEvent.COMPLETED)
    data: dict[str, Any] = json.loads(WebhookDelivery.objects.get(job=job).payload)["data"]
    return data


@pytest.mark.parametrize("public_base_url", ["https://imagegen.example.com", ""])
def test_payload_urls_start_with_the_public_base_url_and_stay_relative_without_one(
    public_base_url: str, settings: Any, django_capture_on_commit_callbacks: CaptureCallbacks
) -> None:
    settings.PUBLIC_BASE_URL = public_base_url

    data = completed_payload(django_capture_on_commit_callbacks)

    assert data["status_url"] == f"{public_base_url}/api/v1/jobs/{data['id']}"
    assert data["images"][0]["url"].startswith(f"{public_base_url}/media/")
    assert data["image_url"] == data["images"][0]["url"]
