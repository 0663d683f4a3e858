from django.apps import AppConfig


class RatelimitConfig(AppConfig):
    name = "ratelimit"
    verbose_name = "Abuse control"

    def ready(self) -> None:
        from django.core import checks

        from core.checks import register_settings_check
        from ratelimit.checks import ratelimit_settings_problems, trusted_proxy_warnings

        register_settings_check(self.label, ratelimit_settings_problems)
        checks.register(trusted_proxy_warnings)
