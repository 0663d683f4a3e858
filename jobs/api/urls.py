from django.urls import path

from jobs.api import live, views

app_name = "api"

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="model-list"),
    path("jobs", live.answering_after_wait(views.JobListView.as_view()), name="job-list"),  # type: ignore[arg-type]
    path("jobs/<str:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<str:job_id>/cancel", views.JobCancelView.as_view(), name="job-cancel"),
    path("jobs/<str:job_id>/events", live.job_events, name="job-events"),  # type: ignore[arg-type]
    path("jobs/<str:job_id>/preview", live.JobPreviewView.as_view(), name="job-preview"),
]
