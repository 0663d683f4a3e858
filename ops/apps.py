from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations: health, readiness, metrics"

    def ready(self) -> None:
        # Registers the deploy check that refuses docker/.env.example's placeholder secrets.
        from ops import example_secrets  # noqa: F401
