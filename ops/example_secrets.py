"""A deploy check (``manage.py check --deploy``, run by the release step with ``--fail-level
WARNING``) that refuses the placeholder secrets of ``docker/.env.example``: a deployment that
copied the file and forgot a "change-me" must not start. The placeholders are read from that
file, so the check follows it when it changes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

EXAMPLE_ENV = Path(settings.BASE_DIR) / "docker" / ".env.example"
# "change-me", or "changeme" where a value must be base64 (the webhook secret).
PLACEHOLDER_MARK = re.compile(r"change-?me")


def example_placeholders(text: str) -> set[str]:
    """Every "change-me" value of the example file, and the password inside each such URL."""
    placeholders = set()
    for value in re.findall(r"^(?:# )?[A-Z][A-Z0-9_]*=(.*)$", text, flags=re.MULTILINE):
        if PLACEHOLDER_MARK.search(value):
            placeholders.add(value.strip())
            password = urlsplit(value.strip()).password
            if password:
                placeholders.add(password)
    return placeholders


def configured_secrets() -> Iterable[tuple[str, str]]:
    """(setting name, value) for each secret this process was given."""
    yield "SECRET_KEY", settings.SECRET_KEY
    yield "DATABASE_URL password", str(settings.DATABASES["default"].get("PASSWORD") or "")
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        yield f"{name} password", urlsplit(getattr(settings, name)).password or ""
    # boto3 reads the store's credentials from the environment, not from settings.
    yield "AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    for secret in settings.WEBHOOK_SECRETS:
        yield "WEBHOOK_SECRETS", secret
    yield "METRICS_TOKEN", settings.METRICS_TOKEN


def example_secrets_check(**kwargs: object) -> list[checks.CheckMessage]:
    if not EXAMPLE_ENV.is_file():
        return [
            checks.Warning(
                f"{EXAMPLE_ENV} is missing, so its placeholder secrets cannot be refused",
                id="ops.W003",
            )
        ]
    placeholders = example_placeholders(EXAMPLE_ENV.read_text())
    return [
        checks.Warning(
            f"{name} is still the placeholder from docker/.env.example",
            hint="Set a random value of its own, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
            id="ops.W002",
        )
        for name, value in configured_secrets()
        if value and value in placeholders
    ]
