from django.conf import settings

from core.checks import SettingsCheckedAppConfig


class JobsConfig(SettingsCheckedAppConfig):
    name = "jobs"
    verbose_name = "Generation jobs"

    def ready(self) -> None:
        super().ready()
        from jobs import selectors
        from jobs.models import TERMINAL_STATUSES
        from ops.metrics import register_job_statuses

        register_job_statuses(active_job_counts=selectors.active_job_counts, terminal=TERMINAL_STATUSES)

    def settings_problems(self) -> list[str]:
        if settings.WORKER_HEARTBEAT_SECONDS <= 0:
            return ["WORKER_HEARTBEAT_SECONDS must be positive"]
        # After a Redis restart live workers need up to one interval to beat again; give them two.
        if 0 < settings.REAPER_HEARTBEAT_GRACE_SECONDS < 2 * settings.WORKER_HEARTBEAT_SECONDS:
            return [
                "REAPER_HEARTBEAT_GRACE_SECONDS must be 0 (off) or at least twice WORKER_HEARTBEAT_SECONDS"
            ]
        return []
