"""``manage.py check --deploy`` passes with production settings and rejects the dev key."""

from __future__ import annotations

import secrets

from tests.support.processes import deploy_check

PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "SECURE_COOKIES": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_SSL_REDIRECT": "1",
    "BEHIND_TLS_PROXY": "1",
    "ALLOWED_HOSTS": "example.com",
    "CSRF_TRUSTED_ORIGINS": "https://example.com",
    "METRICS_TOKEN": secrets.token_urlsafe(32),
}


def test_deploy_check_passes_with_production_settings() -> None:
    result = deploy_check(PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr


def test_deploy_check_fails_with_the_development_key_when_none_is_in_the_environment() -> None:
    env = {name: value for name, value in PRODUCTION_ENV.items() if name != "SECRET_KEY"}

    result = deploy_check(env)

    assert result.returncode != 0
    assert "security.W009" in result.stderr
