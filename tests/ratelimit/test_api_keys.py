"""API keys: Bearer authentication, its 401s, the key's own policy, the admin and the command."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from jobs.models import GenerationJob
from ratelimit.models import ApiKey, ClientUsage
from ratelimit.services import api_key_create, api_key_revoke, api_key_rotate
from tests.ratelimit.helpers import VALID

pytestmark = pytest.mark.django_db


def submit_with_key(api_client: APIClient, key: str, **overrides: Any) -> Any:
    return api_client.post(
        "/api/v1/jobs",
        {**VALID, **overrides},
        format="json",
        REMOTE_ADDR="198.51.100.70",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def test_a_key_is_shown_once_and_stored_only_as_a_hash_behind_its_prefix() -> None:
    api_key, plain, _webhook_secret = api_key_create(name="acme")

    assert plain.startswith(f"ig_{api_key.prefix}_")
    assert len(plain) == len("ig_") + 8 + 1 + 43
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert plain not in {stored.secret_hash, stored.prefix, stored.name}
    assert len(stored.secret_hash) == 64


def test_a_job_submitted_with_a_key_counts_under_the_key_not_the_address(api_client: APIClient) -> None:
    api_key, plain, _webhook_secret = api_key_create(name="acme", weight=3.0)

    response = submit_with_key(api_client, plain)

    assert response.status_code == 202
    job = GenerationJob.objects.get(pk=response.json()["id"])
    assert (job.api_key_id, job.client_network, job.priority_weight) == (
        api_key.pk,
        f"key:{api_key.prefix}",
        3.0,
    )
    assert ClientUsage.objects.get(network=f"key:{api_key.prefix}").submitted == 1
    assert not ClientUsage.objects.filter(network="198.51.100.70").exists()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer ig_0000000_short",  # malformed
        "Bearer ig_00000000_" + "A" * 43,  # well-formed, unknown
        "Basic dXNlcjpwYXNz",  # another scheme
        "Bearer ",  # empty
        "ig_00000000_" + "A" * 43,  # no scheme
    ],
)
def test_a_wrong_key_is_401_invalid_api_key_and_never_anonymous(api_client: APIClient, header: str) -> None:
    response = api_client.post("/api/v1/jobs", VALID, format="json", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not GenerationJob.objects.exists()
    assert not ClientUsage.objects.exists()


def test_a_key_with_the_right_prefix_and_a_wrong_secret_is_401(api_client: APIClient) -> None:
    _api_key, plain, _webhook_secret = api_key_create(name="acme")
    forged = plain[:-4] + ("AAAA" if not plain.endswith("AAAA") else "BBBB")

    response = submit_with_key(api_client, forged)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_is_401_api_key_revoked_on_every_endpoint(api_client: APIClient) -> None:
    api_key, plain, _webhook_secret = api_key_create(name="acme")
    job_id = submit_with_key(api_client, plain).json()["id"]
    api_key_revoke(api_key=api_key)

    submitted = submit_with_key(api_client, plain)
    status = api_client.get(f"/api/v1/jobs/{job_id}", HTTP_AUTHORIZATION=f"Bearer {plain}")

    assert (submitted.status_code, status.status_code) == (401, 401)
    assert submitted.json()["error"]["code"] == status.json()["error"]["code"] == "api_key_revoked"
    assert GenerationJob.objects.count() == 1


def test_rotating_a_key_keeps_its_prefix_and_usage_and_retires_the_old_secret(api_client: APIClient) -> None:
    api_key, old, _webhook_secret = api_key_create(name="acme")
    submit_with_key(api_client, old)

    new = api_key_rotate(api_key=api_key)

    assert new != old and new.startswith(f"ig_{api_key.prefix}_")
    assert submit_with_key(api_client, old).status_code == 401
    assert submit_with_key(api_client, new).status_code == 202
    assert ClientUsage.objects.get(network=api_key.account).submitted == 2


def test_last_used_is_written_at_most_once_a_minute(api_client: APIClient) -> None:
    api_key, plain, _webhook_secret = api_key_create(name="acme")
    submit_with_key(api_client, plain)
    first = ApiKey.objects.get(pk=api_key.pk).last_used_at
    submit_with_key(api_client, plain)
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == first

    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    submit_with_key(api_client, plain)

    assert first is not None
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at >= first


def test_a_key_has_its_own_active_job_limit_independent_of_the_address(
    api_client: APIClient, settings: Any
) -> None:
    settings.SUBMIT_MAX_ACTIVE_JOBS = 1
    _api_key, plain, _webhook_secret = api_key_create(name="acme", max_active_jobs=3)

    statuses = [submit_with_key(api_client, plain).status_code for _ in range(4)]
    anonymous = api_client.post("/api/v1/jobs", VALID, format="json", REMOTE_ADDR="198.51.100.70")

    assert statuses == [202, 202, 202, 429]
    assert anonymous.status_code == 202


def test_a_key_has_its_own_submit_rate(api_client: APIClient) -> None:
    _api_key, plain, _webhook_secret = api_key_create(name="acme", submit_rate="2/h", max_active_jobs=10)

    statuses = [submit_with_key(api_client, plain).status_code for _ in range(3)]

    assert statuses == [202, 202, 429]


def test_the_page_stays_anonymous_whatever_header_it_gets(client: Client) -> None:
    response = client.get("/", HTTP_AUTHORIZATION="Bearer nonsense")

    assert response.status_code == 200


def test_the_admin_shows_a_new_key_once_and_rotates_and_revokes(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:ratelimit_apikey_add"), {"name": "acme", "weight": "2"}, follow=True
    )

    api_key = ApiKey.objects.get()
    shown = [str(message) for message in response.context["messages"]]
    assert any(f"ig_{api_key.prefix}_" in message for message in shown)
    assert api_key.weight == 2.0
    changelist = reverse("admin:ratelimit_apikey_changelist")
    rotated = admin_client.post(
        changelist, {"action": "rotate_keys", "_selected_action": [api_key.pk]}, follow=True
    )
    assert any(f"ig_{api_key.prefix}_" in str(message) for message in rotated.context["messages"])
    admin_client.post(changelist, {"action": "revoke_keys", "_selected_action": [api_key.pk]})
    assert ApiKey.objects.get().revoked_at is not None
    page = admin_client.get(reverse("admin:ratelimit_apikey_change", args=[api_key.pk]))
    assert "compute units" in page.text


def test_the_usage_page_lists_a_key_without_a_block_button(
    admin_client: Client, api_client: APIClient
) -> None:
    api_key, plain, _webhook_secret = api_key_create(name="acme")
    submit_with_key(api_client, plain)

    page = admin_client.get(reverse("admin:ratelimit_clientusage_changelist"))

    assert page.status_code == 200
    assert api_key.account in page.text


def test_the_command_creates_lists_rotates_and_revokes() -> None:
    out = StringIO()
    call_command("api_key", "create", "acme", "--max-active-jobs", "5", "--weight", "2", stdout=out)
    plain, _webhook_secret = out.getvalue().split()
    api_key = ApiKey.objects.get()
    assert plain.startswith(f"ig_{api_key.prefix}_")
    assert (api_key.max_active_jobs, api_key.weight) == (5, 2.0)

    out = StringIO()
    call_command("api_key", "rotate", api_key.prefix, stdout=out)
    assert out.getvalue().strip() not in {"", plain}
    call_command("api_key", "revoke", api_key.prefix, stdout=StringIO())
    out = StringIO()
    call_command("api_key", "list", stdout=out)
    assert f"{api_key.prefix}\trevoked\t" in out.getvalue()


@pytest.mark.parametrize("option", [["--weight", "0"], ["--submit-rate", "lots"]])
def test_the_command_refuses_a_bad_policy(option: list[str]) -> None:
    with pytest.raises(CommandError):
        call_command("api_key", "create", "acme", *option, stdout=StringIO())
    assert not ApiKey.objects.exists()
