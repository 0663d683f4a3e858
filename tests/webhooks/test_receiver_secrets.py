"""Webhook secrets that belong to their receiver: an API key's own, rotatable with an overlap,
or an anonymous job's own shown once; verified with the reference ``standardwebhooks`` library."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from jobs.models import GenerationJob
from ratelimit.models import ApiKey
from ratelimit.selectors import api_key_webhook_secrets
from ratelimit.services import IssuedApiKey, api_key_create, api_key_rotate_webhook_secret
from tests.webhooks.conftest import ReceivedRequest, Receiver
from webhooks.models import WebhookDelivery
from webhooks.services import webhook_delivery_attempt

pytestmark = pytest.mark.django_db

CaptureCallbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


@pytest.fixture(autouse=True)
def _loopback_receivers(settings: Any) -> None:
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True


def delivered(
    api_client: APIClient,
    capture: CaptureCallbacks,
    receiver: Receiver,
    *,
    key: IssuedApiKey | None = None,
) -> tuple[dict[str, Any], ReceivedRequest]:
    """Submits a job with a webhook for its ``queued`` event and makes the delivery's first attempt."""
    headers = {"Authorization": f"Bearer {key.key}"} if key else {}
    with capture(execute=True):
        response = api_client.post(
            "/api/v1/jobs",
            {
                "prompt": "a red fox",
                "width": 64,
                "height": 64,
                "steps": 4,
                "webhook_url": receiver.url,
                "webhook_events": ["queued"],
            },
            format="json",
            headers=headers,
        )
    assert response.status_code == 202, response.json()
    delivery = WebhookDelivery.objects.get(job_id=response.json()["id"])
    webhook_delivery_attempt(delivery_id=delivery.pk, attempt=1, worker_hostname="test")
    return response.json(), receiver.requests[-1]


def verify(secret: str, request: ReceivedRequest) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


def test_a_key_signs_with_its_own_secret_so_another_integrators_receiver_refuses_it(
    api_client: APIClient, django_capture_on_commit_callbacks: CaptureCallbacks, receiver_factory: Any
) -> None:
    integrator_a, integrator_b = api_key_create(name="a"), api_key_create(name="b")
    receiver_a = receiver_factory(204)

    job, request = delivered(api_client, django_capture_on_commit_callbacks, receiver_a, key=integrator_a)

    assert job["webhook_secret"] is None
    assert verify(integrator_a.webhook_secret, request)["data"]["id"] == job["id"]
    # B's receiver, handed A's genuine event, cannot verify it: B's secret never signed it.
    with pytest.raises(WebhookVerificationError):
        verify(integrator_b.webhook_secret, request)


def test_the_signed_payload_names_its_destination_so_a_replay_to_another_url_shows(
    api_client: APIClient, django_capture_on_commit_callbacks: CaptureCallbacks, receiver_factory: Any
) -> None:
    integrator = api_key_create(name="a")
    first, second = receiver_factory(204), receiver_factory(204)

    _job, request = delivered(api_client, django_capture_on_commit_callbacks, first, key=integrator)

    payload = verify(integrator.webhook_secret, request)
    assert payload["webhook_url"] == first.url
    # The same integrator's second receiver verifies the signature, and sees it was meant elsewhere.
    assert payload["webhook_url"] != second.url
    tampered = request.body.replace(first.url.encode(), second.url.encode())
    with pytest.raises(WebhookVerificationError):
        Webhook(integrator.webhook_secret).verify(tampered, request.headers)


def test_during_a_rotation_deliveries_carry_both_signatures_then_only_the_new(
    api_client: APIClient, django_capture_on_commit_callbacks: CaptureCallbacks, receiver_factory: Any
) -> None:
    integrator = api_key_create(name="a")
    receiver = receiver_factory(204)
    new_secret = api_key_rotate_webhook_secret(api_key=integrator.api_key, overlap_seconds=3600)

    _job, during = delivered(api_client, django_capture_on_commit_callbacks, receiver, key=integrator)

    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verify(integrator.webhook_secret, during)
    verify(new_secret, during)

    ApiKey.objects.filter(pk=integrator.api_key.pk).update(
        previous_webhook_secret_until=timezone.now() - timedelta(seconds=1)
    )
    _job, after = delivered(api_client, django_capture_on_commit_callbacks, receiver, key=integrator)

    assert len(after.headers["webhook-signature"].split(" ")) == 1
    verify(new_secret, after)
    with pytest.raises(WebhookVerificationError):
        verify(integrator.webhook_secret, after)


def test_an_anonymous_webhook_gets_its_own_secret_once_and_stored_encrypted(
    api_client: APIClient, django_capture_on_commit_callbacks: CaptureCallbacks, receiver_factory: Any
) -> None:
    receiver = receiver_factory(204)

    job, request = delivered(api_client, django_capture_on_commit_callbacks, receiver)

    secret = job["webhook_secret"]
    assert secret.startswith("whsec_")
    assert verify(secret, request)["data"]["id"] == job["id"]
    assert "webhook_secret" not in api_client.get(f"/api/v1/jobs/{job['id']}").json()
    stored = GenerationJob.objects.get(pk=job["id"]).webhook_secret_encrypted
    assert stored and secret not in stored and secret.removeprefix("whsec_") not in stored
    other_job, other_request = delivered(api_client, django_capture_on_commit_callbacks, receiver)
    assert other_job["webhook_secret"] != secret
    with pytest.raises(WebhookVerificationError):
        verify(secret, other_request)


def test_an_anonymous_submit_without_a_webhook_has_no_secret(api_client: APIClient) -> None:
    response = api_client.post("/api/v1/jobs", {"prompt": "a red fox"}, format="json")
    assert response.json()["webhook_secret"] is None
    assert GenerationJob.objects.get().webhook_secret_encrypted == ""


def test_a_keys_secret_is_stored_encrypted_and_the_command_shows_it_once_and_rotates_it() -> None:
    out = StringIO()
    call_command("api_key", "create", "acme", stdout=out)
    key, webhook_secret = out.getvalue().split()
    api_key = ApiKey.objects.get()
    assert key.startswith(f"ig_{api_key.prefix}_") and webhook_secret.startswith("whsec_")
    assert webhook_secret.removeprefix("whsec_") not in api_key.webhook_secret_encrypted

    out = StringIO()
    call_command("api_key", "rotate-webhook-secret", api_key.prefix, "--overlap-seconds", "60", stdout=out)
    rotated = out.getvalue().strip()
    assert rotated.startswith("whsec_") and rotated != webhook_secret
    api_key.refresh_from_db()
    assert api_key.previous_webhook_secret_until is not None
    assert api_key.webhook_secret_rotated_at is not None


def test_the_admin_shows_a_new_keys_webhook_secret_once_and_rotates_it(admin_client: Any) -> None:
    response = admin_client.post(reverse("admin:ratelimit_apikey_add"), {"name": "acme"}, follow=True)
    (shown,) = [str(message) for message in response.context["messages"] if "whsec_" in str(message)]
    first = shown.rsplit(" ", 1)[1]
    assert first.startswith("whsec_")
    api_key = ApiKey.objects.get()
    assert api_key_webhook_secrets(api_key=api_key) == [first]

    rotated = admin_client.post(
        reverse("admin:ratelimit_apikey_changelist"),
        {"action": "rotate_webhook_secrets", "_selected_action": [api_key.pk]},
        follow=True,
    )

    (message,) = [str(message) for message in rotated.context["messages"] if "whsec_" in str(message)]
    second = message.rsplit(" ", 1)[1]
    api_key.refresh_from_db()
    # Both sign during the overlap, so the receiver can switch when it likes.
    assert api_key_webhook_secrets(api_key=api_key) == [second, first]
