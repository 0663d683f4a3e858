"""The webhooks app's settings check (see core.checks)."""

from __future__ import annotations

from django.conf import settings

from webhooks.signing import secret_key


def webhook_settings_problems() -> list[str]:
    problems = []
    for secret in settings.WEBHOOK_SECRETS:
        try:
            secret_key(secret)
        except ValueError as error:
            problems.append(f"WEBHOOK_SECRET(S): {error}")
    if settings.WEBHOOK_SWEEP_INTERVAL_SECONDS < 1 or settings.WEBHOOK_SWEEP_AFTER_SECONDS < 0:
        problems.append(
            "WEBHOOK_SWEEP_INTERVAL_SECONDS must be at least 1, WEBHOOK_SWEEP_AFTER_SECONDS at least 0"
        )
    return problems
