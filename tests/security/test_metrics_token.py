"""/metrics outside DEBUG answers only with METRICS_TOKEN, and the deploy check insists on one."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.config.test_deploy_check import PRODUCTION_ENV, deploy_check

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-for-security-tests"


def test_without_a_token_set_metrics_are_refused_outside_debug(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_token_unset"
    assert b"imagegen_jobs" not in response.content


@pytest.mark.parametrize(
    "authorization", ["", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]
)
def test_a_scrape_without_the_right_bearer_token_is_refused(
    client: Client, settings: Any, authorization: str
) -> None:
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_right_token_scrapes(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert b"imagegen_jobs" in response.content


def test_debug_without_a_token_scrapes_for_local_development(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.DEBUG = True

    assert client.get("/metrics").status_code == 200


def test_the_deploy_check_fails_without_a_metrics_token() -> None:
    env = {**PRODUCTION_ENV, "METRICS_TOKEN": ""}

    result = deploy_check(env)

    assert result.returncode != 0
    assert "ops.W001" in result.stderr
