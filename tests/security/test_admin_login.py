"""Admin login brute force: a user name is locked out from one client address after
ADMIN_LOGIN_FAILURE_LIMIT failures, even for the right password, until the cool-off; other
users and addresses log in. The address is the one abuse control believes, not REMOTE_ADDR."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-1"
LIMIT = 3


@pytest.fixture(autouse=True)
def operators(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    user_model = get_user_model()
    for name in ("operator", "other-operator"):
        user_model.objects.create_superuser(name, f"{name}@example.com", PASSWORD)


def log_in(username: str, password: str, *, address: str = "203.0.113.7", **headers: str) -> int:
    response = Client(REMOTE_ADDR=address).post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}, **headers
    )
    # The admin answers a failed login with its form again (200) and a good one with a redirect.
    return int(response.status_code)


def brute_force(username: str, **kwargs: Any) -> list[int]:
    return [log_in(username, f"guess-{n}", **kwargs) for n in range(LIMIT)]


def test_after_the_failure_limit_even_the_right_password_is_refused_until_the_cool_off(
    settings: Any,
) -> None:
    failures = brute_force("operator")
    locked = log_in("operator", PASSWORD)
    # The cool-off passes.
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME)
    after_cool_off = log_in("operator", PASSWORD)

    assert failures == [200] * (LIMIT - 1) + [429]
    assert locked == 429
    assert after_cool_off == 302


def test_a_lockout_leaves_other_users_and_other_addresses_alone() -> None:
    brute_force("operator")

    assert log_in("other-operator", PASSWORD) == 302
    assert log_in("operator", PASSWORD, address="198.51.100.9") == 302
    assert log_in("operator", PASSWORD) == 429


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout() -> None:
    brute_force("operator")

    assert log_in("operator", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.9") == 429


def test_behind_a_trusted_proxy_the_lockout_follows_the_forwarded_client(settings: Any) -> None:
    settings.CLIENT_IP_TRUSTED_PROXIES = ["10.0.0.0/8"]
    brute_force("operator", address="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.7")

    # The same proxy brings another client, who is not locked out.
    assert log_in("operator", PASSWORD, address="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.9") == 302
    assert log_in("operator", PASSWORD, address="10.0.0.3", HTTP_X_FORWARDED_FOR="203.0.113.7") == 429
