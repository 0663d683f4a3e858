"""Each app validates its own settings, as a system check that also stops the process at start:
Celery workers and gunicorn never run ``manage.py check``."""

from __future__ import annotations

from collections.abc import Callable

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

# Returns each problem with the settings, in words; none when they are fine.
SettingsCheck = Callable[[], list[str]]


def register_settings_check(app_label: str, check: SettingsCheck) -> None:
    """Call from the app's ``AppConfig.ready``: refuses to start on a problem, and registers the
    check so ``manage.py check`` reports it when settings change later (tests, overrides)."""
    problems = check()
    if problems:
        raise ImproperlyConfigured("; ".join(problems))

    def system_check(**kwargs: object) -> list[checks.CheckMessage]:
        return [checks.Error(problem, id=f"{app_label}.E001") for problem in check()]

    checks.register(system_check)
