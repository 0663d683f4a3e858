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


def test_payload_urls_are_absolute_with_a_public_base_url(
    settings: Any, django_capture_on_commit_callbacks: CaptureCallbacks
) -> None:
    settings.PUBLIC_BASE_URL = "https://imagegen.example.com"

    data = completed_payload(django_capture_on_commit_callbacks)

    assert data["status_url"] == f"https://imagegen.example.com/api/v1/jobs/{data['id']}"
    assert data["images"][0]["url"].startswith("https://imagegen.example.com/media/")
    assert data["image_url"] == data["images"][0]["url"]


def test_payload_urls_stay_relative_without_one(
    settings: Any, django_capture_on_commit_callbacks: CaptureCallbacks
) -> None:
    settings.PUBLIC_BASE_URL = ""

    data = completed_payload(django_capture_on_commit_callbacks)

    assert data["status_url"] == f"/api/v1/jobs/{data['id']}"
    assert data["images"][0]["url"].startswith("/media/")
