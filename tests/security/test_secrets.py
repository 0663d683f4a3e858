"""The shipped deployment keeps its secrets: the store is not published and web and the
workers use a bucket user, not its administrator; a release with docker/.env.example's
placeholder secrets fails its deploy check."""

from __future__ import annotations

import os
import re
import secrets
from typing import Any

import pytest
import yaml

from ops.example_secrets import example_placeholders
from tests.support.paths import ROOT
from tests.support.processes import deploy_check

EXAMPLE_ENV = ROOT / "docker" / ".env.example"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text()))


def example_env() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", EXAMPLE_ENV.read_text(), flags=re.MULTILINE))


# As on a fresh production box: neither the test run's secret key nor its database.
UNSET_FOR_SECRETS = ("SECRET_KEY", "DATABASE_URL")


def production_env(**secrets_: str) -> dict[str, str]:
    """The example file's settings with what a test needs to run here: the local Redis and
    database, no S3 (nothing to reach), and ``secrets_`` over the example's secrets."""
    env = example_env()
    env.update(
        STORAGE_BACKEND="local",
        REDIS_URL=os.environ["REDIS_URL"].replace(
            "redis://", f"redis://:{secrets_.pop('redis_password')}@", 1
        ),
        DATABASE_URL=f"sqlite:///{ROOT / 'var' / 'deploy-check.sqlite3'}",
    )
    return {**env, **secrets_}


def test_compose_publishes_the_proxy_port_alone() -> None:
    services = compose()["services"]

    published = {name for name, service in services.items() if service.get("ports")}
    # The monitoring profile's UIs run only when asked for, and then on the host's loopback.
    opt_in = {name for name in published if services[name].get("profiles")}

    assert published - opt_in == {"proxy"}
    assert services["proxy"]["ports"] == ["80:80"]
    for name in opt_in:
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name


def test_web_trusts_exactly_the_proxy_s_fixed_address() -> None:
    document = compose()
    proxy_address = document["services"]["proxy"]["networks"]["edge"]["ipv4_address"]

    assert example_env()["CLIENT_IP_TRUSTED_PROXIES"] == f"{proxy_address}/32"
    assert "CLIENT_IP_TRUSTED_PROXY_COUNT" not in example_env()
    assert set(document["services"]["web"]["networks"]) == {"default", "edge"}


def test_the_store_s_administrator_is_used_by_the_bucket_step_alone() -> None:
    services = compose()["services"]
    step = services["create-bucket"]["command"][0]

    assert services["minio"]["environment"]["MINIO_ROOT_USER"].startswith("${MINIO_ROOT_USER")
    assert "MINIO_ROOT_PASSWORD" in step and "mc admin user add" in step
    # The app user's policy names the bucket's objects and object actions alone.
    assert re.findall(r'\\"(s3:\w+)\\"', step) == ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    assert 'arn:aws:s3:::$$S3_BUCKET/*\\"' in step
    assert example_env()["AWS_ACCESS_KEY_ID"] != example_env()["MINIO_ROOT_USER"]


def test_the_placeholders_are_the_example_s_change_me_values_and_passwords() -> None:
    placeholders = example_placeholders(EXAMPLE_ENV.read_text())

    assert {"change-me", "change-me-too", "change-me-redis", "change-me-three"} <= placeholders
    assert all(re.search("change-?me", value) for value in placeholders)


@pytest.mark.parametrize(
    ("setting", "warning"),
    [
        ("SECRET_KEY", "SECRET_KEY is still the placeholder"),
        ("DATABASE_URL", "DATABASE_URL password is still the placeholder"),
        ("REDIS_URL", "REDIS_URL password is still the placeholder"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY is still the placeholder"),
        ("WEBHOOK_SECRET", "WEBHOOK_SECRETS is still the placeholder"),
        ("METRICS_TOKEN", "METRICS_TOKEN is still the placeholder"),
    ],
)
def test_the_deploy_check_fails_on_each_example_secret(setting: str, warning: str) -> None:
    real = real_secrets()
    placeholder_env = {
        "SECRET_KEY": {"SECRET_KEY": "change-me"},
        "DATABASE_URL": {"DATABASE_URL": "postgres://imagegen:change-me@127.0.0.1:9/imagegen"},
        "REDIS_URL": {"redis_password": "change-me-redis"},
        "AWS_SECRET_ACCESS_KEY": {"AWS_SECRET_ACCESS_KEY": "change-me-too"},
        "WEBHOOK_SECRET": {"WEBHOOK_SECRET": "whsec_changemechangemechangemechangeme"},
        "METRICS_TOKEN": {"METRICS_TOKEN": "change-me-three"},
    }[setting]

    result = deploy_check(unset=UNSET_FOR_SECRETS, env=production_env(**{**real, **placeholder_env}))

    assert result.returncode != 0
    assert warning in result.stderr


def real_secrets() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "redis_password": secrets.token_urlsafe(16),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "METRICS_TOKEN": secrets.token_urlsafe(30),
    }


def test_the_deploy_check_fails_with_the_example_file_as_it_ships() -> None:
    result = deploy_check(unset=UNSET_FOR_SECRETS, env=production_env(redis_password="change-me-redis"))

    assert result.returncode != 0
    for name in ("SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "METRICS_TOKEN", "REDIS_URL password"):
        assert f"{name} is still the placeholder" in result.stderr


def test_the_deploy_check_passes_with_real_secrets() -> None:
    result = deploy_check(unset=UNSET_FOR_SECRETS, env=production_env(**real_secrets()))

    assert result.returncode == 0, result.stderr
