from django.apps import AppConfig
from django.core import checks


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations: health, readiness, metrics"

    def ready(self) -> None:
        from ops.checks import metrics_token_check
        from ops.example_secrets import example_secrets_check

        checks.register(example_secrets_check, checks.Tags.security, deploy=True)
        checks.register(metrics_token_check, checks.Tags.security, deploy=True)
