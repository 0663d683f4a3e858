"""The per-IP usage page in the admin: staff only, shows the top clients, blocks and unblocks."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from ratelimit.models import BlockedNetwork
from tests.ratelimit.helpers import submit

pytestmark = pytest.mark.django_db

USAGE_URL = "/admin/ratelimit/clientusage/"


@pytest.fixture
def staff_client() -> Client:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_clientusage", "add_blockednetwork", "delete_blockednetwork"]
        )
    )
    client = Client()
    client.force_login(user)
    return client


def test_usage_page_renders_top_clients_for_staff(staff_client: Client, api_client: APIClient) -> None:
    submit(api_client, ip="198.51.100.77")
    submit(api_client, ip="2001:db8:5:6::1")

    today = staff_client.get(USAGE_URL)
    week = staff_client.get(USAGE_URL, {"period": "week"})

    assert today.status_code == week.status_code == 200
    for response in (today, week):
        assert "198.51.100.77" in response.text
        assert "2001:db8:5:6::/64" in response.text


def test_usage_page_sends_non_staff_to_the_login(api_client: APIClient) -> None:
    client = Client()
    client.force_login(User.objects.create_user("visitor", password="pw"))

    response = client.get(USAGE_URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_block_and_unblock_from_the_usage_page_change_the_blocklist(
    staff_client: Client, api_client: APIClient
) -> None:
    submit(api_client, ip="198.51.100.78")

    staff_client.post(f"{USAGE_URL}block/", {"network": "198.51.100.78", "period": "today"})
    blocked_page = staff_client.get(USAGE_URL).text
    refused = submit(api_client, ip="198.51.100.78")
    staff_client.post(f"{USAGE_URL}unblock/", {"network": "198.51.100.78", "period": "today"})

    assert "blocked by 198.51.100.78" in blocked_page
    assert refused.status_code == 403
    assert not BlockedNetwork.objects.exists()
    assert submit(api_client, ip="198.51.100.78").status_code == 202


def test_staff_without_the_blocklist_permission_cannot_block(api_client: APIClient) -> None:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_clientusage"))
    client = Client()
    client.force_login(user)

    response = client.post(f"{USAGE_URL}block/", {"network": "198.51.100.79"})

    assert response.status_code == 403
    assert not BlockedNetwork.objects.exists()


def test_blocklist_admin_stores_one_spelling_per_network_and_rejects_garbage() -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    url = "/admin/ratelimit/blockednetwork/add/"

    client.post(url, {"network": "10.0.0.9/8", "reason": "abuse"})
    duplicate = client.post(url, {"network": "10.0.0.0/8", "reason": "again"})
    garbage = client.post(url, {"network": "example.com", "reason": ""})

    assert list(BlockedNetwork.objects.values_list("network", flat=True)) == ["10.0.0.0/8"]
    assert duplicate.status_code == garbage.status_code == 200  # the form again, with its error
    assert "Enter an IP address or a CIDR." in garbage.text
