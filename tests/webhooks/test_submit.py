"""Submitting with a webhook: the subscription is stored, and URLs into our own networks are a 400."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from jobs.models import GenerationJob

pytestmark = pytest.mark.django_db

VALID = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4}


def submit(api_client: APIClient, **fields: Any) -> Any:
    return api_client.post("/api/v1/jobs", {**VALID, **fields}, format="json")


@pytest.fixture(autouse=True)
def _names(fake_dns: dict[str, list[list[str]]]) -> None:
    fake_dns["hooks.example"] = [["93.184.215.14"]]
    fake_dns["internal.example"] = [["10.0.0.1"]]
    fake_dns["mixed.example"] = [["93.184.215.14", "10.0.0.1"]]
    fake_dns["no-such-host.example"] = [[]]


def test_submit_stores_the_webhook_url_and_every_event_by_default(api_client: APIClient) -> None:
    response = submit(api_client, webhook_url="https://hooks.example/in")

    assert response.status_code == 202
    job = GenerationJob.objects.get(pk=response.json()["id"])
    assert job.webhook_url == "https://hooks.example/in"
    assert job.webhook_events == ["queued", "started", "completed", "failed", "cancelled"]


def test_submit_stores_only_the_chosen_events(api_client: APIClient) -> None:
    response = submit(
        api_client,
        webhook_url="https://hooks.example/in",
        webhook_events=["completed", "started", "completed"],
    )

    assert GenerationJob.objects.get(pk=response.json()["id"]).webhook_events == ["started", "completed"]


def test_submit_rejects_an_unknown_event(api_client: APIClient) -> None:
    response = submit(api_client, webhook_url="https://hooks.example/in", webhook_events=["finished"])

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["webhook_events"][0]["code"] == "webhook_event_unknown"


def test_submit_rejects_an_overlong_webhook_url(api_client: APIClient) -> None:
    response = submit(api_client, webhook_url="https://hooks.example/" + "x" * 2048)

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["webhook_url"][0]["code"] == "webhook_url_too_long"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://0x7f000001/hook",
        "https://2130706433/hook",
        "https://0177.0.0.1/hook",
        "https://127.1/hook",
        "https://localhost/hook",
        "https://internal.example/hook",  # 10.0.0.1 by name
        "https://mixed.example/hook",  # one public and one private address
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:a00:1]/hook",
        "https://100.64.0.1/hook",
        "https://224.0.0.1/hook",
        "https://0.0.0.0/hook",
        "https://[fe80::1]/hook",
        "http://hooks.example/hook",  # http is for local development only
        "https://hooks.example@127.0.0.1/hook",
        "https://no-such-host.example/hook",
    ],
)
def test_submit_refuses_a_webhook_url_into_our_own_networks(api_client: APIClient, url: str) -> None:
    response = submit(api_client, webhook_url=url)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "webhook_url_forbidden"
    assert error["fields"]["webhook_url"][0]["code"] == "webhook_url_forbidden"
    assert not GenerationJob.objects.exists()


def test_submit_accepts_a_loopback_receiver_when_private_networks_are_allowed(
    api_client: APIClient, settings: Any
) -> None:
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True

    response = submit(api_client, webhook_url="http://127.0.0.1:9/hook")

    assert response.status_code == 202
