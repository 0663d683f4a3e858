"""Signatures verify with the reference ``standardwebhooks`` library, and only when intact."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.webhooks.conftest import OLD_SECRET, TEST_SECRET
from webhooks.signing import signature_header

BODY = b'{"type":"job.completed","timestamp":"2026-01-01T00:00:00Z","data":{"id":"x"}}'


def signed_headers(*, timestamp: int, secrets: list[str] | None = None) -> dict[str, str]:
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            secrets=secrets or [TEST_SECRET], webhook_id="msg_1", timestamp=timestamp, body=BODY
        ),
    }


def test_signature_verifies_with_the_standardwebhooks_library() -> None:
    payload = Webhook(TEST_SECRET).verify(BODY, signed_headers(timestamp=int(time.time())))

    assert payload["type"] == "job.completed"


def test_signature_header_is_byte_for_byte_what_earlier_releases_sent() -> None:
    header = signature_header(
        secrets=[TEST_SECRET, OLD_SECRET], webhook_id="msg_1", timestamp=1767225600, body=BODY
    )

    assert header == (
        "v1,aktT2QMmTGSUGHvys67i8ggTm/Lfu2FpTiBHyz5SRio= v1,j8l1SmhWrvfaphdWgxhHopPNXmIeqVFKZRrzh3AaRcw="
    )


def test_tampered_body_fails_verification() -> None:
    headers = signed_headers(timestamp=int(time.time()))

    with pytest.raises(WebhookVerificationError):
        Webhook(TEST_SECRET).verify(BODY.replace(b'"x"', b'"y"'), headers)


def test_stale_timestamp_fails_verification() -> None:
    headers = signed_headers(timestamp=int(time.time()) - 600)

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(TEST_SECRET).verify(BODY, headers)


def test_signature_by_another_secret_fails_verification() -> None:
    headers = signed_headers(timestamp=int(time.time()), secrets=[OLD_SECRET])

    with pytest.raises(WebhookVerificationError):
        Webhook(TEST_SECRET).verify(BODY, headers)


def test_during_rotation_receivers_on_the_old_or_new_secret_both_verify() -> None:
    headers = signed_headers(timestamp=int(time.time()), secrets=[TEST_SECRET, OLD_SECRET])

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(TEST_SECRET).verify(BODY, headers)
    Webhook(OLD_SECRET).verify(BODY, headers)


@pytest.mark.parametrize("secret", ["not-a-whsec-secret", "whsec_***", "whsec_c2hvcnQ="])
def test_settings_refuse_a_malformed_webhook_secret(secret: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **{name: value for name, value in os.environ.items() if name != "WEBHOOK_SECRETS"},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "WEBHOOK_SECRET": secret,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured: WEBHOOK_SECRET" in result.stderr
