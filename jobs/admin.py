"""Operators' view of jobs in the Django admin (read-only: history is not edited)."""

from django.contrib import admin

from jobs.models import GenerationJob, JobImage


class JobImageInline(admin.TabularInline):
    model = JobImage
    extra = 0
    can_delete = False
    readonly_fields = ("index", "seed", "file")


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "failure_code", "client_ip", "width", "height", "steps", "created_at")
    list_filter = ("status", "failure_code")
    search_fields = ("prompt", "client_ip")
    inlines = (JobImageInline,)

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
