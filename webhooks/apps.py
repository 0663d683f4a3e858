from django.apps import AppConfig
from django.conf import settings


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.checks import register_settings_check
        from ops.metrics import register_gauges
        from webhooks.selectors import backlog_gauges

        register_settings_check(self.label, settings_problems)
        register_gauges(self.label, backlog_gauges)


def settings_problems() -> list[str]:
    from core.stored_secrets import encryption_key_problems
    from webhooks.signing import secret_key

    problems = encryption_key_problems(settings.SECRET_ENCRYPTION_KEYS)
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
