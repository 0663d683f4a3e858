from django.apps import AppConfig
from django.conf import settings


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Generation jobs"

    def ready(self) -> None:
        from core.checks import register_settings_check
        from jobs import selectors
        from jobs.metrics import queue_gauges
        from jobs.models import TERMINAL_STATUSES
        from ops.metrics import register_gauges, register_job_statuses
        from webhooks.services import receiver_secrets_register

        register_settings_check(self.label, settings_problems)
        register_job_statuses(active_job_counts=selectors.active_job_counts, terminal=TERMINAL_STATUSES)
        register_gauges(self.label, queue_gauges)
        receiver_secrets_register(lambda job_id: selectors.job_webhook_secrets(job_id=job_id))


def settings_problems() -> list[str]:
    from jobs.selectors import model_registry

    try:
        registry = model_registry()
    except ValueError as error:
        return [f"GENERATOR_MODELS: {error}"]
    for name, spec in registry.items():
        if broken := spec.default_request_violations():
            return [f"GENERATOR_MODELS: the defaults of {name!r} break its own rules: {broken}"]
    if settings.GENERATOR_DEFAULT_MODEL not in settings.GENERATOR_MODELS:
        return ["GENERATOR_DEFAULT_MODEL must name a model of GENERATOR_MODELS"]
    if settings.WORKER_HEARTBEAT_SECONDS <= 0:
        return ["WORKER_HEARTBEAT_SECONDS must be positive"]
    # After a Redis restart live workers need up to one interval to beat again; give them two.
    if 0 < settings.REAPER_HEARTBEAT_GRACE_SECONDS < 2 * settings.WORKER_HEARTBEAT_SECONDS:
        return ["REAPER_HEARTBEAT_GRACE_SECONDS must be 0 (off) or at least twice WORKER_HEARTBEAT_SECONDS"]
    return []
