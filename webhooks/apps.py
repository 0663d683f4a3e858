from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.checks import register_settings_check
        from ops.metrics import register_gauges
        from webhooks.checks import webhook_settings_problems
        from webhooks.selectors import backlog_gauges

        register_settings_check(self.label, webhook_settings_problems)
        register_gauges(self.label, backlog_gauges)
