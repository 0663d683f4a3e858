"""Each app validates its own settings, as a system check that also stops the process at start:
Celery workers and gunicorn never run ``manage.py check``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class SettingsCheckedAppConfig(AppConfig):
    def settings_problems(self) -> list[str]:
        """Each problem with the app's settings, in words; none when they are fine."""
        raise NotImplementedError

    def ready(self) -> None:
        # Also a registered check, so ``manage.py check`` reports settings changed later (tests).
        problems = self.settings_problems()
        if problems:
            raise ImproperlyConfigured("; ".join(problems))

        def system_check(**kwargs: object) -> list[checks.CheckMessage]:
            return [checks.Error(problem, id=f"{self.label}.E001") for problem in self.settings_problems()]

        checks.register(system_check)
