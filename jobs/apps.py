from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Generation jobs"

    def ready(self) -> None:
        from core.checks import register_settings_check
        from jobs import selectors
        from jobs.checks import jobs_settings_problems
        from jobs.metrics import queue_gauges
        from jobs.models import TERMINAL_STATUSES
        from ops.metrics import register_gauges, register_job_statuses

        register_settings_check(self.label, jobs_settings_problems)
        register_job_statuses(active_job_counts=selectors.active_job_counts, terminal=TERMINAL_STATUSES)
        register_gauges(self.label, queue_gauges)
